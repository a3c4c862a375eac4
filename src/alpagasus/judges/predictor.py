"""A trained predictor as judge: `predictor:NAME` (shipped) or `predictor:FOLDER` (saved by `alpagasus distill`).

It reads the example's fields (Request.example), not the prompt text, and rates a few hundred rows per
second-ish batch on CPU: MiniLM embeddings + a small head, no generation. Reply.score is on the paper's
0-5 scale (see alpagasus.predictors.Predictor for the mapping); Reply.probs holds {"p_keep": P(keep)}.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from alpagasus.judges.base import CPU, JudgeError, LocalJudge
from alpagasus.records import Reply, Request

MODES = (None, "predict")


class PredictorJudge(LocalJudge):
    mode = "predict"
    batch_size = 256
    resources = CPU  # a small encoder and a head: a CPU worker

    def __init__(self, arg: str, mode: str | None = None, backend: str = "predictor", batch_size: int | None = None):
        if not arg:
            from alpagasus.predictors import shipped

            raise JudgeError(
                f"predictor judge needs a name or folder: predictor:NAME ({', '.join(shipped())}) "
                "or predictor:FOLDER saved by `alpagasus distill`"
            )
        if mode not in MODES:
            raise JudgeError(f"predictor:{arg}: a predictor only predicts (mode 'predict'), not {mode!r}")
        self.arg = arg
        self.batch_size = batch_size or self.batch_size
        self._predictor: Any = None
        self._encoder: Any = None
        self._lock = threading.Lock()  # the encoder is not re-entrant

    @property
    def predictor(self) -> Any:
        """The head and calibration (a few hundred KB of arrays); cheap, so `id` can be known before load()."""
        if self._predictor is None:
            from alpagasus.predictors import Predictor, PredictorError

            try:
                self._predictor = Predictor.load(self.arg)
            except PredictorError as e:
                raise JudgeError(str(e)) from None
        return self._predictor

    @property
    def id(self) -> str:
        return f"predictor:{self.predictor.name}@{self.predictor.digest}"

    def load(self) -> None:
        if self._encoder is None:
            from alpagasus.predictors import PredictorError, shared_encoder

            _ = self.predictor
            try:
                self._encoder = shared_encoder(int(self.predictor.card["features"].get("max_tokens", 256)))
            except PredictorError as e:
                raise JudgeError(str(e)) from None

    def count_tokens(self, text: str) -> int:
        if self._encoder is not None:
            return len(self._encoder.tokenizer(text, add_special_tokens=False)["input_ids"])
        return max(1, len(text) // 4)

    def score_sync(self, requests: list[Request]) -> list[Reply]:
        missing = [r.key for r in requests if r.example is None]
        if missing:
            raise JudgeError(f"predictor:{self.arg} rates examples, not prompts: request {missing[0]!r} has no example")
        if not requests:
            return []
        self.load()
        examples = [r.example for r in requests if r.example is not None]  # all of them: checked above
        start = time.perf_counter()
        with self._lock:
            scores, p_keep = self.predictor.predict(examples, self._encoder)
        per_row = (time.perf_counter() - start) / len(requests)
        name = self.predictor.name
        return [
            Reply(
                score=float(s),
                probs={"p_keep": float(p)},
                model=name,
                tokens_in=sum(len(v) for v in e.prompt_fields().values()) // 4,
                latency_s=per_row,
            )
            for s, p, e in zip(scores, p_keep, examples)
        ]
