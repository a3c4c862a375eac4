"""A local transformers causal LM as judge: `hf:PATH_OR_ID` (directory, hub id, .gguf) or the embedded default.

logprob mode: one forward pass; the expected score over the label tokens at the first answer position.
The tokens every prompt of a batch starts with (chat markup, system prompt, and with a prefix-first template
the whole rubric) are run once: their KV cache is kept between batches, keyed by its token ids, and only the
rest of each prompt is run, batched, on top of it. Same scores as running whole prompts (tests/test_prefix.py).
generate mode: greedy decoding of the paper's reply (score line + explanation).
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any

from alpagasus.judges.base import JudgeError, LocalJudge, device_resources, label_scores
from alpagasus.models import chat_prompt, generate_tokens, needs_special_tokens, prompt_ids
from alpagasus.records import Reply, Request


class HFJudge(LocalJudge):
    def __init__(
        self,
        arg: str,
        mode: str | None = None,
        backend: str = "hf",
        batch_size: int | None = None,
        device: str | None = None,
        dtype: str = "auto",
        prefix_cache: bool = True,
        min_prefix: int = 16,
        pass_cost: int = 32,
    ):
        if not arg:
            raise JudgeError("hf judge needs a model: hf:PATH_OR_ID (a directory, hub id or .gguf file)")
        self.model_ref = arg if backend == "hf" else f"embedded:{arg}"
        self.spec = f"{backend}:{arg}"
        self.mode = mode or "logprob"
        if self.mode not in ("logprob", "generate"):
            raise JudgeError(f"{self.spec}: mode must be logprob or generate, not {self.mode!r}")
        # generate: 16 rows share each decoding step's pass over the weights (bench/judge_modes.py: -20% time a row vs 8)
        self.batch_size = batch_size or 16
        self.device, self.dtype = device, dtype
        self.resources = device_resources(device)  # a GPU for Ray only where the device names one
        self.model: Any = None
        self.tok: Any = None
        self._label_ids: dict[tuple[str, ...], list[list[int]]] = {}
        self._lock = threading.Lock()  # one forward pass at a time: the model is not re-entrant
        # logprob mode: reuse the KV cache of the prompts' shared first tokens when there are >= min_prefix of them
        self.prefix_cache, self.min_prefix = prefix_cache, max(1, min_prefix)
        self._prefix: tuple[list[int], list[tuple[Any, Any]]] | None = None  # (token ids, per-layer (K, V), batch 1)
        self._supported: bool | None = None  # whether the model's cache can hold a shared prefix (checked once)
        self._window: int | None = None  # the smallest sliding window of the model's layers, if any
        # CPU: a forward pass costs about as much as this many tokens (SmolLM2-135M: ~55 ms a pass, ~3 ms a token)
        self.pass_cost = pass_cost
        self.stats = {"batches": 0, "passes": 0, "prefix_passes": 0, "tokens": 0, "tokens_reused": 0}

    @property
    def id(self) -> str:
        return f"{self.spec}#{self.mode}"

    sort_by_length = True  # rows are padded to the longest of a batch
    logprobs = True  # the score labels' probabilities at the answer position

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
        return chat_prompt(self.tok, r.system, r.user, r.assistant_prefix if self.mode == "logprob" else "")

    def _candidates(self, labels: tuple[str, ...]) -> list[list[int]]:
        """Token ids that spell each label at the answer position ("4", " 4", "▁4"...)."""
        if labels not in self._label_ids:
            vocab = self.tok.get_vocab()
            per_label: list[list[int]] = []
            for lab in labels:
                ids = {i for t, i in vocab.items() if self.tok.convert_tokens_to_string([t]).strip() == lab}
                if not ids:
                    raise JudgeError(
                        f"{self.spec}: label {lab!r} is not a single token; logprob mode needs "
                        "single-token labels (use --mode generate)"
                    )
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

    def _logprob(self, requests: list[Request]) -> list[Reply]:
        import torch

        add_special = needs_special_tokens(self.tok)
        ids = self.tok([self.prompt_text(r) for r in requests], add_special_tokens=add_special)["input_ids"]
        # the engine sorts rows by characters, not tokens: a batch pads ~15-25% of its tokens. On CPU, where a
        # padded token costs as much as a real one, rows of similar token length go in separate passes
        overhead = self.pass_cost if self.model.device.type == "cpu" else None
        groups = _length_groups([len(x) for x in ids], overhead) if overhead else [list(range(len(ids)))]
        rows: list[Any] = [None] * len(ids)
        with torch.inference_mode():
            for group in groups:
                part = [ids[i] for i in group]
                logits = self._prefix_logits(part) if self.prefix_cache else None
                if logits is None:
                    logits = self._plain_logits(part)
                for i, row in zip(group, logits.float()):
                    rows[i] = row
        self.stats["batches"] += 1
        self.stats["passes"] += len(groups)
        self.stats["tokens"] += sum(map(len, ids))
        probs = torch.softmax(torch.stack(rows), dim=-1)
        out = []
        for row, r in enumerate(requests):
            cands = self._candidates(r.labels)
            label_p = {lab: float(probs[row, tids].sum()) for lab, tids in zip(r.labels, cands)}
            out.append(label_scores(Reply(model=self.model_ref, tokens_in=len(ids[row]), tokens_out=1), label_p))
        return out

    def _forward(self, **kw: Any) -> Any:
        try:  # only the last position's logits: a full [batch, length, vocab] tensor is GBs for 49k vocabs
            return self.model(**kw, logits_to_keep=1)
        except TypeError:  # architectures without the argument
            return self.model(**kw)

    def _plain_logits(self, ids: list[list[int]]) -> Any:
        """Whole prompts, left-padded: the next-token logits are in the last column for every row."""
        input_ids, mask = _left_pad(ids, self.tok.pad_token_id)
        dev = self.model.device
        return self._forward(input_ids=input_ids.to(dev), attention_mask=mask.to(dev), use_cache=False).logits[:, -1, :]

    def _prefix_logits(self, ids: list[list[int]]) -> Any:
        """Run the shared prefix once (or take it from the cache), then only the suffixes; None = use the plain path.

        Suffixes are left-padded, so the pads sit between the prefix and the real tokens: the attention mask hides
        them and explicit position ids number each row's real tokens from the prefix's end, exactly as in the
        unpadded prompt; the last column is then every row's last real token, as in the plain path."""
        import torch

        if not self._prefix_supported():
            return None
        shared = min(_common_len(ids), min(map(len, ids)) - 1)  # every row keeps >= 1 token to read logits at
        if shared < self.min_prefix:
            return None
        n = min(shared, _common_len([self._prefix[0], ids[0]])) if self._prefix else 0
        if n < self.min_prefix:
            n, self._prefix = 0, None  # another template: start again
        else:
            assert self._prefix is not None, "n >= min_prefix >= 1 only with a cached prefix"
            if n < len(self._prefix[0]):  # keep only what this batch shares: the cache converges to the fixed rubric
                self._prefix = (self._prefix[0][:n], [(k[:, :, :n], v[:, :, :n]) for k, v in self._prefix[1]])
        width = max(len(x) for x in ids) - n
        if self._window and n + width >= self._window - 1:  # the longest prompt: a sliding layer would drop tokens
            return None
        # no cached prefix yet, or rows that share more than it: extend it (not for one row, whose tokens are run
        # once either way: a long row alone would cost an extra pass and a cut of the cache afterwards)
        if not n or (shared - n >= self.min_prefix and len(ids) > 1):
            self._prefix, computed = self._extend_prefix(ids[0][:shared], n), shared - n
            n = shared
        else:
            computed = 0
        rows = len(ids)
        suffix, mask = _left_pad([x[n:] for x in ids], self.tok.pad_token_id)
        positions = n + (mask.cumsum(-1) - 1).clamp(min=0)
        full_mask = torch.cat([torch.ones((rows, n), dtype=torch.long), mask], dim=1)
        dev = self.model.device
        out = self._forward(
            input_ids=suffix.to(dev),
            attention_mask=full_mask.to(dev),
            position_ids=positions.to(dev),
            past_key_values=self._past(rows, keep=False),
            use_cache=True,
        )
        self.stats["prefix_passes"] += 1
        self.stats["tokens_reused"] += n * rows - computed
        return out.logits[:, -1, :]

    def _prefix_supported(self) -> bool:
        """Whether the model's cache is plain per-layer key/value tensors (sliding windows noted); checked once."""
        if self._supported is None:
            from transformers import DynamicCache
            from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

            try:
                layers = DynamicCache(config=self.model.config).layers
            except Exception:  # noqa: BLE001 - a config the cache cannot read: whole prompts for this model
                layers = []
            self._supported = bool(layers) and all(type(x) in (DynamicLayer, DynamicSlidingWindowLayer) for x in layers)
            # transformers types `layers` as a union of layer mixins, not all of which declare `sliding_window`
            windows = [x.sliding_window for x in layers if getattr(x, "is_sliding", False)]  # type: ignore[union-attr]
            self._window = min(windows) if windows else None
        return self._supported

    def _past(self, rows: int, keep: bool = True) -> Any:
        """A fresh cache holding the cached prefix for `rows` rows. keep=False: the forward pass's own keys and values
        are used but not stored (nothing reads them again), so they do not pile up over the layers, and the prefix is
        an expanded view, not `rows` copies."""
        from transformers import DynamicCache

        assert self._prefix is not None, "called only once a prefix is cached"
        if keep:
            return DynamicCache(self._prefix[1], config=self.model.config)
        cache = DynamicCache(config=self.model.config)
        cache.layers = [_read_only(layer, k, v, rows) for layer, (k, v) in zip(cache.layers, self._prefix[1])]
        return cache

    def _extend_prefix(self, tokens: list[int], n: int) -> tuple[list[int], list[tuple[Any, Any]]]:
        """KV of `tokens`, computing only those after the `n` already cached."""
        import torch

        dev = self.model.device
        kw: dict[str, Any] = {"input_ids": torch.tensor([tokens[n:]], device=dev), "use_cache": True}
        if n:
            kw.update(
                past_key_values=self._past(1),
                position_ids=torch.arange(n, len(tokens), device=dev)[None],
                attention_mask=torch.ones((1, len(tokens)), dtype=torch.long, device=dev),
            )
        cache = self._forward(**kw).past_key_values
        return tokens, [(layer.keys, layer.values) for layer in cache.layers]

    def _generate(self, requests: list[Request]) -> list[Reply]:
        ids = [prompt_ids(self.tok, self.prompt_text(r)) for r in requests]
        temp = max(r.temperature for r in requests)
        gen, width = generate_tokens(
            self.model, self.tok, ids, max(r.max_tokens for r in requests), temperature=temp, top_p=0.95
        )
        out = []
        for row, new in enumerate(gen[:, width:]):
            n_out = int((new != self.tok.pad_token_id).sum())
            text = self.tok.decode(new, skip_special_tokens=True)
            out.append(Reply(text=text, model=self.model_ref, tokens_in=len(ids[row]), tokens_out=n_out))
        return out


@functools.cache
def _read_only_class(base: type) -> type:
    """`base` (a full or sliding-window cache layer) whose update returns prefix + new states without keeping them."""
    import torch

    class ReadOnlyPrefix(base):  # type: ignore[misc, valid-type]
        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            return torch.cat([self.keys, key_states], dim=-2), torch.cat([self.values, value_states], dim=-2)

    return ReadOnlyPrefix


def _read_only(layer: Any, keys: Any, values: Any, rows: int) -> Any:
    """A layer of the same kind as `layer` holding the prefix for `rows` rows, read-only (see _read_only_class)."""
    base = type(layer)
    kind: type = base  # mypy takes a type[Any] for unhashable, and functools.cache's wrapper wants Hashable
    cls = _read_only_class(kind)
    ro = cls(sliding_window=layer.sliding_window) if getattr(layer, "is_sliding", False) else cls()
    base.update(ro, keys, values)  # the layer's own bookkeeping (lengths, window), batch 1
    ro.keys, ro.values = ro.keys.expand(rows, -1, -1, -1), ro.values.expand(rows, -1, -1, -1)
    return ro


def _left_pad(seqs: list[list[int]], pad_id: int | None) -> tuple[Any, Any]:
    """(input_ids, attention_mask) with the rows right-aligned, as the tokenizer pads with padding_side="left"."""
    import torch

    width = max(map(len, seqs))
    input_ids = torch.full((len(seqs), width), pad_id if pad_id is not None else 0, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, x in enumerate(seqs):
        input_ids[i, width - len(x) :] = torch.tensor(x, dtype=torch.long)
        mask[i, width - len(x) :] = 1
    return input_ids, mask


def _length_groups(lengths: list[int], pass_cost: int) -> list[list[int]]:
    """Row indices in runs of similar length, one forward pass each, minimizing padded tokens + `pass_cost` per
    pass (exact over the rows sorted by length: a dynamic programme over where to cut)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    sizes = [lengths[i] for i in order]
    best, cut = [0.0] + [float("inf")] * len(sizes), [0] * (len(sizes) + 1)
    for j in range(1, len(sizes) + 1):  # best[j]: the cheapest split of the j shortest rows
        for i in range(j):  # the last pass holds rows i..j-1, padded to the longest, sizes[j - 1]
            cost = best[i] + pass_cost + (j - i) * sizes[j - 1]
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], len(sizes)
    while j:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]


def _common_len(seqs: list[list[int]]) -> int:
    """Length of the longest token prefix all `seqs` share."""
    first, n = seqs[0], min(map(len, seqs))
    for other in seqs[1:]:
        k = 0
        while k < n and other[k] == first[k]:
            k += 1
        n = k
    return n
