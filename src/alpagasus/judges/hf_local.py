"""A local transformers causal LM as judge: `hf:PATH_OR_ID` (directory, hub id, .gguf) or the embedded default.

logprob mode: one forward pass; the expected score over the label tokens at the first answer position.
generate mode: greedy decoding of the paper's reply (score line + explanation).
"""
from __future__ import annotations

import threading
import time
from typing import Any

from alpagasus.judges.base import JudgeError, LocalJudge
from alpagasus.records import Reply, Request


class HFJudge(LocalJudge):
    def __init__(self, arg: str, mode: str | None = None, backend: str = "hf", batch_size: int | None = None,
                 device: str | None = None, dtype: str = "auto", **_: Any):
        if not arg:
            raise JudgeError("hf judge needs a model: hf:PATH_OR_ID (a directory, hub id or .gguf file)")
        self.model_ref = arg if backend == "hf" else f"embedded:{arg}"
        self.spec = f"{backend}:{arg}"
        self.mode = mode or "logprob"
        if self.mode not in ("logprob", "generate"):
            raise JudgeError(f"{self.spec}: mode must be logprob or generate, not {self.mode!r}")
        self.batch_size = batch_size or (16 if self.mode == "logprob" else 8)
        self.device, self.dtype = device, dtype
        self.model: Any = None
        self.tok: Any = None
        self._label_ids: dict[tuple[str, ...], list[list[int]]] = {}
        self._lock = threading.Lock()  # one forward pass at a time: the model is not re-entrant

    @property
    def id(self) -> str:
        return f"{self.spec}#{self.mode}"

    @property
    def sort_by_length(self) -> bool:
        return True

    def load(self) -> None:
        if self.model is None:
            from alpagasus.models import load_causal_lm

            self.model, self.tok = load_causal_lm(self.model_ref, dtype=self.dtype, device=self.device)
            self.tok.padding_side = "left"  # the next-token position is then the last column for every row

    @property
    def max_context(self) -> int | None:
        if self.model is None:
            return None
        return int(getattr(self.model.config, "max_position_embeddings", 0) or 0) or None

    def count_tokens(self, text: str) -> int:
        return len(self.tok(text, add_special_tokens=False)["input_ids"]) if self.tok else max(1, len(text) // 4)

    # ---- prompt building ----------------------------------------------------------------------------
    def prompt_text(self, r: Request) -> str:
        messages = ([{"role": "system", "content": r.system}] if r.system else []) + \
                   [{"role": "user", "content": r.user}]
        if getattr(self.tok, "chat_template", None):
            text = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:  # base models: plain text, system first
            text = (r.system + "\n\n" if r.system else "") + r.user
        prefix = r.assistant_prefix if self.mode == "logprob" else ""
        return text + prefix

    def _candidates(self, labels: tuple[str, ...]) -> list[list[int]]:
        """Token ids that spell each label at the answer position ("4", " 4", "▁4"...)."""
        if labels not in self._label_ids:
            vocab = self.tok.get_vocab()
            per_label: list[list[int]] = []
            for lab in labels:
                ids = {i for t, i in vocab.items()
                       if self.tok.convert_tokens_to_string([t]).strip() == lab}
                if not ids:
                    raise JudgeError(f"{self.spec}: label {lab!r} is not a single token; logprob mode needs "
                                     "single-token labels (use --mode generate)")
                per_label.append(sorted(ids))
            self._label_ids[labels] = per_label
        return self._label_ids[labels]

    # ---- scoring --------------------------------------------------------------------------------------
    def score_sync(self, requests: list[Request]) -> list[Reply]:
        self.load()
        with self._lock:
            t0 = time.perf_counter()
            replies = self._logprob(requests) if self.mode == "logprob" else self._generate(requests)
        per = (time.perf_counter() - t0) / max(1, len(requests))
        for rep in replies:
            rep.latency_s = per
        return replies

    def _encode(self, requests: list[Request]) -> Any:
        texts = [self.prompt_text(r) for r in requests]
        # the chat template already holds the special tokens
        add_special = not getattr(self.tok, "chat_template", None)
        return self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=add_special).to(self.model.device)

    def _logprob(self, requests: list[Request]) -> list[Reply]:
        import torch

        enc = self._encode(requests)
        with torch.inference_mode():
            try:  # only the last position's logits: a full [batch, length, vocab] tensor is GBs for 49k vocabs
                out = self.model(**enc, logits_to_keep=1)
            except TypeError:  # architectures without the argument
                out = self.model(**enc)
            logits = out.logits[:, -1, :].float()
        probs = torch.softmax(logits, dim=-1)
        n_in = enc["attention_mask"].sum(dim=1).tolist()
        out = []
        for row, r in enumerate(requests):
            cands = self._candidates(r.labels)
            label_p = [float(probs[row, ids].sum()) for ids in cands]
            mass = sum(label_p)
            dist = {lab: p / mass for lab, p in zip(r.labels, label_p)} if mass > 0 else None
            score = sum(float(lab) * p for lab, p in dist.items()) if dist else None
            extra = {"label_mass": mass}  # how much next-token probability the labels hold: low = unreliable
            if dist:
                extra["argmax"] = max(dist, key=dist.get)
            out.append(Reply(probs=dist, score=score, model=self.model_ref, tokens_in=int(n_in[row]),
                             tokens_out=1, extra=extra))
        return out

    def _generate(self, requests: list[Request]) -> list[Reply]:
        import torch

        enc = self._encode(requests)
        temp = max(r.temperature for r in requests)
        kwargs: dict[str, Any] = {"max_new_tokens": max(r.max_tokens for r in requests),
                                  "pad_token_id": self.tok.pad_token_id}
        kwargs.update({"do_sample": True, "temperature": temp, "top_p": 0.95} if temp > 0 else {"do_sample": False})
        with torch.inference_mode():
            gen = self.model.generate(**enc, **kwargs)
        new = gen[:, enc["input_ids"].shape[1]:]
        n_in = enc["attention_mask"].sum(dim=1).tolist()
        out = []
        for row in range(len(requests)):
            ids = new[row]
            n_out = int((ids != self.tok.pad_token_id).sum())
            text = self.tok.decode(ids, skip_special_tokens=True)
            out.append(Reply(text=text, model=self.model_ref, tokens_in=int(n_in[row]), tokens_out=n_out))
        return out
