"""vLLM in process as judge: `vllm:MODEL` (GPU machines; `pip install 'alpagasus[vllm]'`).

Prompts are built exactly as for the transformers judge (chat template + the logprob prefix), so the two
agree on what the judge sees; prefix caching is on, so the long fixed rubric is computed once per batch.
logprob mode reads the top-k log-probabilities of the first answer token (k=20 by default).
"""

from __future__ import annotations

import math
import time
from typing import Any

from alpagasus.judges.base import JudgeError, Resources, label_scores
from alpagasus.judges.hf_local import HFJudge
from alpagasus.records import Reply, Request


def label_probabilities(
    top: dict[int, float], candidates: list[list[int]], labels: tuple[str, ...]
) -> dict[str, float]:
    """Probability of each label (summed over the token ids that spell it) from {token id: logprob} of the
    answer's first token; labels absent from the top-k get 0."""
    return {lab: sum(math.exp(top[i]) for i in ids if i in top) for lab, ids in zip(labels, candidates)}


class VLLMJudge(HFJudge):
    def __init__(
        self,
        arg: str,
        mode: str | None = None,
        backend: str = "vllm",
        batch_size: int | None = None,
        top_logprobs: int = 20,
        gpu_memory_utilization: float = 0.85,
        tensor_parallel_size: int = 1,
        max_model_len: int | None = None,
        **kw: Any,
    ):
        super().__init__(arg, mode=mode, backend="hf", batch_size=batch_size or 256, **kw)
        self.spec, self.model_ref = f"vllm:{arg}", arg
        self.top_logprobs = top_logprobs
        self.resources = Resources(gpus=float(tensor_parallel_size), cpus=0.0)  # the GPUs its engine spans
        self.engine_args = {
            "gpu_memory_utilization": gpu_memory_utilization,
            "enable_prefix_caching": True,
            "tensor_parallel_size": tensor_parallel_size,
            "max_model_len": max_model_len,
        }

    sort_by_length = False  # vLLM schedules by itself

    def load(self) -> None:
        if self.model is not None:
            return
        from alpagasus.backends import vllm

        self.model = vllm.engine(
            self.model_ref, JudgeError, "the vllm judge needs vLLM on a GPU machine", **self.engine_args
        )
        self.tok = self.model.get_tokenizer()

    @property
    def max_context(self) -> int | None:
        from alpagasus.backends import vllm

        return None if self.model is None else vllm.context_length(self.model)

    def score_sync(self, requests: list[Request]) -> list[Reply]:
        from alpagasus.backends import vllm

        self.load()
        prompts = [self.prompt_text(r) for r in requests]
        if self.mode == "logprob":
            params = vllm.sampling(max_tokens=1, temperature=0.0, logprobs=self.top_logprobs)
        else:
            temp = max(r.temperature for r in requests)
            params = vllm.sampling(max_tokens=max(r.max_tokens for r in requests), temperature=temp)
        t0 = time.perf_counter()
        outs = self.model.generate(prompts, params, use_tqdm=False)
        per = (time.perf_counter() - t0) / max(1, len(requests))
        replies = []
        for r, out in zip(requests, outs):
            comp = out.outputs[0]
            rep = Reply(
                model=self.model_ref, tokens_in=len(out.prompt_token_ids), tokens_out=len(comp.token_ids), latency_s=per
            )
            if self.mode == "generate":
                rep.text = comp.text
            else:
                top = {tid: lp.logprob for tid, lp in (comp.logprobs or [{}])[0].items()}
                label_scores(rep, label_probabilities(top, self._candidates(r.labels), r.labels))
            replies.append(rep)
        return replies
