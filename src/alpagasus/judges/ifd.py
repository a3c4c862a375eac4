"""Instruction-Following Difficulty as a judge: `ifd:embedded:NAME`, `ifd:hf:PATH_OR_ID`, `ifd:vllm:MODEL`.

IFD (Cherry LLM, Li et al. 2023; Superfiltering, Li et al. 2024) asks how much the instruction helps a language
model predict the response: the mean cross-entropy of the response tokens after the prompt, divided by that of
the same tokens after nothing. IFD >= 1: the instruction does not help (Superfiltering drops those rows); among
the others, the highest IFD are the hardest to follow, and those are kept.

What is followed, and where it differs (docs/ifd.md says more):
- the prompt is Superfiltering's "none" format (code_ifd/data_analysis.py): "{instruction}\\n{input}\\n", or
  "{instruction}\\n" without an input (prompts/ifd_input.txt, ifd_no_input.txt), the response right after it;
- IFD is the ratio of the mean losses, as Cherry LLM's data_by_IFD.py computes it (`ratio="loss"`, the
  default); Superfiltering's code ranks by the ratio of perplexities, exp(loss_c - loss_a) (`ratio="ppl"`).
  Both are stored, and both are >= 1 for exactly the same rows;
- the prompt and the response are tokenized apart and their ids joined, so both passes score the same response
  tokens, and both passes start with the same start token (the BOS the tokenizer adds itself, else
  <|endoftext|>, else BOS, else EOS), so every response token is scored, the first one too;
- a row longer than the window (the model's context, or the `context` option) keeps the response's first
  tokens and at least half of the window for them: the prompt's tail (the end of a long input) goes first.
  What was cut is stored with the row. Nothing is rejected as too long.

The score on the rubric's scale (0-5 by default) is lo + (hi - lo) * IFD for IFD < 1, and lo for IFD >= 1, so
`select --top-k K` keeps the K highest IFD among the rows below 1, Superfiltering's rule. The raw figures go to
the ratings file's `ifd` column (rate/view.py), `ifd_ge_1` marking the rows the instruction does not help.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Sequence

from alpagasus.judges.base import GPU, JudgeError, LocalJudge, device_resources
from alpagasus.judges.hf_local import _left_pad, _length_groups
from alpagasus.prompts import builtin_text
from alpagasus.records import Example, Reply, Request

BACKENDS = ("embedded", "hf", "vllm")
RATIOS = ("loss", "ppl")
START_TOKEN = "<|endoftext|>"  # the document separator of GPT-2-style vocabularies (GPT-2, SmolLM, Qwen...)
# next-token logits a forward pass may hold at once (fp32: 256 MB); a 49k vocabulary fits ~1,300 positions
LOGITS_BUDGET = 1 << 26
_PLACEHOLDER = re.compile(r"\{(instruction|input)\}")


@functools.cache
def _formats() -> tuple[str, str]:
    return builtin_text("ifd_input"), builtin_text("ifd_no_input")


def ifd_prompt(instruction: str, input: str = "", output: str = "") -> str:
    """The text the response is conditioned on (Superfiltering's "none" prompt); the output, if given (the
    rubric's fields are passed whole), is not part of it."""
    with_input, no_input = _formats()
    values = {"instruction": instruction, "input": input}
    # one pass, so braces inside the data are never substituted again
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], with_input if input else no_input)


def example_prompt(example: Example) -> str:
    """The IFD prompt of a sample, from the rubric's fields (`Example.prompt_fields()`): Alpaca's instruction
    and input as before; for a conversation, the instruction is its rendered context (system prompt, earlier
    turns, last user turn: docs/formats.md), so the response's loss is measured given the whole conversation."""
    return ifd_prompt(**example.prompt_fields())


def format_version() -> str:
    """Hash of what decides the numbers besides the model: both prompt formats and the token rules (v1)."""
    return hashlib.sha256("\0".join((*_formats(), "start+split-tokens v1")).encode()).hexdigest()[:8]


def mean_nll(logprobs: Sequence[float]) -> float:
    """The mean cross-entropy (nats per token) of tokens whose log-probabilities are given."""
    if not logprobs:
        raise ValueError("no tokens to score")
    return -sum(logprobs) / len(logprobs)


def ifd_values(loss_conditioned: float, loss_response: float) -> dict[str, Any]:
    """IFD and its parts from the two mean losses; `ifd_ge_1` marks a row the instruction does not help."""
    if not (math.isfinite(loss_conditioned) and math.isfinite(loss_response)) or loss_response <= 0:
        raise ValueError(f"losses {loss_conditioned!r} / {loss_response!r} give no IFD")
    ifd = loss_conditioned / loss_response
    return {
        "ifd": ifd,
        "ppl_ratio": math.exp(loss_conditioned - loss_response),
        "loss_conditioned": loss_conditioned,
        "loss_response": loss_response,
        "ifd_ge_1": ifd >= 1,
    }


def ifd_score(value: float, lo: float = 0.0, hi: float = 5.0) -> float:
    """IFD (or the perplexity ratio) on the scale lo-hi: linear below 1, `lo` at 1 and above (not kept by
    Superfiltering), so the best scores are the highest IFD among rows the instruction helps."""
    if not math.isfinite(value) or value >= 1:
        return lo
    return lo + (hi - lo) * max(0.0, value)


def scale_of(labels: Sequence[str]) -> tuple[float, float]:
    """The rubric's scale from a request's score labels (0-5 when they are not numbers)."""
    try:
        nums = [float(x) for x in labels]
    except ValueError:
        nums = []
    return (min(nums), max(nums)) if nums else (0.0, 5.0)


@dataclass
class Pair:
    """Token ids of one row: both passes are start + (prompt) + response, the same response tokens in each."""

    start: list[int]
    prompt: list[int]
    response: list[int]
    cut_prompt: int = 0  # tokens cut from the prompt's end to fit the window
    cut_response: int = 0  # tokens cut from the response's end

    @property
    def conditioned(self) -> list[int]:
        return self.start + self.prompt + self.response

    @property
    def alone(self) -> list[int]:
        return self.start + self.response


def build_pair(tok: Any, start: list[int], example: Example, max_length: int) -> Pair:
    """Tokenize a row and fit it in `max_length` tokens: the response keeps its first tokens and at least half
    of the window (all of itself when shorter); the prompt keeps its first tokens in the rest."""
    prompt = tok(example_prompt(example), add_special_tokens=False)["input_ids"]
    response = tok(example.response, add_special_tokens=False)["input_ids"]
    room = max_length - len(start)
    keep_prompt = min(len(prompt), room - min(len(response), room // 2))
    keep_response = min(len(response), room - keep_prompt)
    return Pair(
        list(start),
        list(prompt[:keep_prompt]),
        list(response[:keep_response]),
        len(prompt) - keep_prompt,
        len(response) - keep_response,
    )


def start_ids(tok: Any) -> list[int]:
    """The token(s) both passes start with: the BOS the tokenizer adds itself, else <|endoftext|>, else BOS/EOS."""
    plain = tok("a", add_special_tokens=False)["input_ids"]
    full = tok("a")["input_ids"]
    if len(full) > len(plain) and full[len(full) - len(plain) :] == plain:
        return list(full[: len(full) - len(plain)])
    vocab = tok.get_vocab()
    if START_TOKEN in vocab:
        return [vocab[START_TOKEN]]
    for tid in (tok.bos_token_id, tok.eos_token_id):
        if tid is not None:
            return [tid]
    raise JudgeError("the tokenizer has no BOS, EOS or <|endoftext|> token to start the response alone with")


def span_logprobs(prompt_logprobs: Sequence[Any], seq: Sequence[int], n: int) -> list[float]:
    """Log-probabilities of the last `n` tokens of `seq` from vLLM's `prompt_logprobs` (one entry per prompt
    token, None for the first; each a {token id: Logprob or float} that holds the prompt's own token)."""
    got = []
    for pos in range(len(seq) - n, len(seq)):
        entry = prompt_logprobs[pos] if pos < len(prompt_logprobs) else None
        if not entry or seq[pos] not in entry:
            raise JudgeError(f"vLLM returned no log-probability for prompt token {pos} ({seq[pos]})")
        value = entry[seq[pos]]
        got.append(float(getattr(value, "logprob", value)))
    return got


class IFDJudge(LocalJudge):
    mode = "ifd"
    sort_by_length = True  # hf: rows are padded to the longest of a pass

    def __init__(
        self,
        arg: str,
        mode: str | None = None,
        backend: str = "ifd",
        batch_size: int | None = None,
        device: str | None = None,
        dtype: str = "auto",
        context: int | None = None,
        ratio: str = "loss",
        gpu_memory_utilization: float = 0.85,
    ):
        kind, _, name = arg.partition(":")
        if kind not in BACKENDS or not name:
            raise JudgeError(
                f"ifd judge needs a model: ifd:embedded:NAME, ifd:hf:PATH_OR_ID or ifd:vllm:MODEL, not ifd:{arg}"
            )
        if mode not in (None, "ifd"):
            raise JudgeError(f"ifd:{arg} computes IFD (mode 'ifd'), not {mode!r}")
        if ratio not in RATIOS:
            raise JudgeError(f"ifd:{arg}: ratio must be one of {', '.join(RATIOS)}, not {ratio!r}")
        if context is not None and context < 8:
            raise JudgeError(f"ifd:{arg}: context must be at least 8 tokens, not {context}")
        self.arg, self.kind, self.ratio, self.context = arg, kind, ratio, context
        self.model_ref = f"embedded:{name}" if kind == "embedded" else name
        self.batch_size = batch_size or (256 if kind == "vllm" else 16)
        self.device, self.dtype, self.gpu_memory_utilization = device, dtype, gpu_memory_utilization
        self.resources = GPU if kind == "vllm" else device_resources(device)  # what a Ray worker reserves
        self.model: Any = None
        self.tok: Any = None
        self._start: list[int] = []
        self._lock = threading.Lock()  # one forward pass at a time: the model is not re-entrant
        self.stats = {"passes": 0, "tokens": 0, "truncated": 0}

    @property
    def id(self) -> str:
        """`ifd:` first, so IFD ratings never share a store key with an LLM judge's; the ratio, the prompt
        formats' version and an explicit window are part of it, as they change the numbers."""
        window = f"/ctx{self.context}" if self.context else ""
        return f"ifd:{self.arg}#{self.ratio}@{format_version()}{window}"

    def load(self) -> None:
        if self.model is not None:
            return
        if self.kind == "vllm":
            self._load_vllm()
        else:
            from alpagasus.models import load_causal_lm

            self.model, self.tok = load_causal_lm(self.model_ref, dtype=self.dtype, device=self.device)
        self._start = start_ids(self.tok)

    def _load_vllm(self) -> None:
        from alpagasus.backends import vllm

        self.model = vllm.engine(
            self.model_ref,
            JudgeError,
            f"ifd:{self.arg} needs vLLM on a GPU machine (or use ifd:hf:MODEL)",
            # prompt log-probabilities come from the prefill: a prefix-cache hit would skip positions we need
            enable_prefix_caching=False,
            gpu_memory_utilization=self.gpu_memory_utilization,
            max_model_len=self.context + 1 if self.context else None,  # + the one token vLLM must generate
        )
        self.tok = self.model.get_tokenizer()

    @property
    def window(self) -> int:
        """Tokens one pass may hold: the `context` option, else the model's context."""
        if self.kind == "vllm":
            from alpagasus.backends import vllm

            limit = vllm.context_length(self.model) - 1
        else:
            limit = int(getattr(self.model.config, "max_position_embeddings", 0) or 0) or 1 << 20
        return min(limit, self.context) if self.context else limit

    def count_tokens(self, text: str) -> int:
        return len(self.tok(text, add_special_tokens=False)["input_ids"]) if self.tok else max(1, len(text) // 4)

    # ---- scoring --------------------------------------------------------------------------------------
    def score_sync(self, requests: list[Request]) -> list[Reply]:
        missing = [r.key for r in requests if r.example is None]
        if missing:
            raise JudgeError(f"ifd:{self.arg} scores examples, not prompts: request {missing[0]!r} has no example")
        if not requests:
            return []
        self.load()
        with self._lock:
            t0 = time.perf_counter()
            pairs = [build_pair(self.tok, self._start, e, self.window) for r in requests if (e := r.example)]
            seqs = [p.conditioned for p in pairs] + [p.alone for p in pairs]
            spans = [len(p.response) for p in pairs] * 2
            lps = self._vllm_logprobs(seqs, spans) if self.kind == "vllm" else self._hf_logprobs(seqs, spans)
        per = (time.perf_counter() - t0) / len(requests)
        self.stats["truncated"] += sum(bool(p.cut_prompt or p.cut_response) for p in pairs)
        n = len(pairs)
        return [self._reply(r, p, lps[i], lps[n + i], per) for i, (r, p) in enumerate(zip(requests, pairs))]

    def _reply(self, r: Request, p: Pair, lp_conditioned: list[float], lp_alone: list[float], per: float) -> Reply:
        tokens = len(p.conditioned) + len(p.alone)
        try:
            values = ifd_values(mean_nll(lp_conditioned), mean_nll(lp_alone))
        except ValueError as e:  # a degenerate row (a response the model predicts perfectly alone): not a score
            return Reply(error=f"no IFD: {e}", retryable=False, model=self.model_ref, tokens_in=tokens, latency_s=per)
        detail = {**values, "response_tokens": len(p.response), "prompt_tokens": len(p.prompt)}
        if p.cut_prompt or p.cut_response:
            detail["truncated"] = {"prompt": p.cut_prompt, "response": p.cut_response}
        value = values["ifd"] if self.ratio == "loss" else values["ppl_ratio"]
        note = (
            "the instruction does not help predict the response (IFD >= 1): lowest score"
            if values["ifd_ge_1"]
            else "the instruction helps (IFD < 1)"
        )
        return Reply(
            score=ifd_score(value, *scale_of(r.labels)),
            text=f"IFD {values['ifd']:.4f}: {note}",
            model=self.model_ref,
            tokens_in=tokens,
            latency_s=per,
            extra={"ifd": detail},
        )

    def _hf_logprobs(self, seqs: list[list[int]], spans: list[int]) -> list[list[float]]:
        """Per-token log-probabilities of the last spans[i] tokens of each sequence: rows of similar length
        share a left-padded pass (explicit position ids, so padding changes nothing), and only the logits of
        the last max(span) + 1 positions are computed."""
        import torch

        vocab = int(self.model.get_output_embeddings().weight.shape[0])
        cost = 32 if self.model.device.type == "cpu" else None  # CPU: a pass costs ~32 padded tokens
        groups = (
            _length_groups([len(s) for s in seqs], cost)
            if cost
            else [sorted(range(len(seqs)), key=lambda i: len(seqs[i]))]
        )
        out: list[list[float]] = [[] for _ in seqs]
        dev = self.model.device
        for group in groups:
            for part in _fit_budget(group, spans, vocab):
                ids, mask = _left_pad([seqs[i] for i in part], self.tok.pad_token_id)
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                keep = max(spans[i] for i in part) + 1
                with torch.inference_mode():
                    logits = self._forward(ids.to(dev), mask.to(dev), positions.to(dev), keep)[:, -keep:, :]
                    for row, i in enumerate(part):
                        n = spans[i]
                        if not n:  # an empty response (--rate-empty): nothing to score, _reply says so
                            continue
                        lg = logits[row, keep - n - 1 : keep - 1].float()
                        target = torch.tensor(seqs[i][-n:], device=lg.device)
                        lp = lg.gather(-1, target[:, None]).squeeze(-1) - torch.logsumexp(lg, dim=-1)
                        out[i] = lp.tolist()
                self.stats["passes"] += 1
                self.stats["tokens"] += int(mask.sum())
        return out

    def _forward(self, ids: Any, mask: Any, positions: Any, keep: int) -> Any:
        kw = dict(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)
        try:  # only the positions that predict response tokens: a [rows, length, vocab] tensor is GBs
            return self.model(**kw, logits_to_keep=keep).logits
        except TypeError:  # architectures without the argument
            return self.model(**kw).logits

    def _vllm_logprobs(self, seqs: list[list[int]], spans: list[int]) -> list[list[float]]:
        from alpagasus.backends import vllm

        # prompt_logprobs=1: each prompt position's top token plus the prompt's own token, which is all we read
        params = vllm.sampling(max_tokens=1, temperature=0.0, prompt_logprobs=1)
        outs = self.model.generate([{"prompt_token_ids": s} for s in seqs], params, use_tqdm=False)
        self.stats["passes"] += 1
        self.stats["tokens"] += sum(map(len, seqs))
        return [span_logprobs(o.prompt_logprobs, s, n) for o, s, n in zip(outs, seqs, spans)]


def _fit_budget(group: list[int], spans: list[int], vocab: int) -> list[list[int]]:
    """`group` in consecutive parts whose kept logits (rows x (max span + 1) x vocab) fit LOGITS_BUDGET."""
    parts: list[list[int]] = []
    cur: list[int] = []
    widest = 0
    for i in group:
        w = max(widest, spans[i] + 1)
        if cur and (len(cur) + 1) * w * vocab > LOGITS_BUDGET:
            parts.append(cur)
            cur, w = [], spans[i] + 1
        cur.append(i)
        widest = w
    if cur:
        parts.append(cur)
    return parts
