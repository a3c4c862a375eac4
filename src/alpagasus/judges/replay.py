"""Recorded ratings as a judge: `replay:FILE` answers each example with the score a file holds for it.

It exists to measure cascades, selection rules and other judges against real recorded decisions offline (tests,
benchmarks) without paying a judge again. FILE is a ratings file written earlier by `alpagasus rate` or any
table `alpagasus.data` reads (JSON, JSONL, CSV, Parquet) with instruction/input/output and a score column.

- Rows are matched by content: the id of a row's triplet (read as `rate` reads an input, aliases included)
  equals `Example.id`. Like the predictor judge it reads `Request.example` and ignores the prompt text.
- The score column is `score` (a ratings file's `alpagasus_score` where `rate` namespaced it), or `column=`.
  Numbers are used as they are (a 0/1 column replays as 0 and 1); booleans (a true/false decision column, or
  "true"/"false" CSV cells) become `keep` / `drop` (5.0 / 3.0: either side of the paper's 4.5 threshold).
  Scores must be on the rubric's scale, or the engine stores them as `unparsed` (outside the scale).
- A row whose status (where the file has one) is not `ok`, or whose score is null, is not recorded.
- An example the file does not hold gets an error reply that cannot be retried, so it is stored with status
  `error`, never with a made-up score. `error` is not final: a later run asks again (and gets the same answer
  unless the file changed, which changes the judge id anyway).
- The id hashes the file's bytes, so two different files never share stored ratings.

load() reads the whole file once into a dict id -> score: these files hold at most ~1M rows (~50 MB of dict).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

from alpagasus.data import DataError, iter_records, to_example
from alpagasus.judges.base import CPU, JudgeError, LocalJudge
from alpagasus.ratings_file import rating_field
from alpagasus.records import InvalidRow, Reply, Request

MODES = (None, "predict")


def _file_digest(path: Path) -> str:
    """sha256 of the bytes, streamed: the judge id must change whenever the recorded decisions do."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:10]


class ReplayJudge(LocalJudge):
    mode = "predict"
    batch_size = 1024  # a dict lookup per request: big batches only save engine round trips
    resources = CPU  # no model at all

    def __init__(
        self,
        arg: str,
        mode: str | None = None,
        backend: str = "replay",
        column: str | None = None,
        keep: float = 5.0,
        drop: float = 3.0,
        batch_size: int | None = None,
    ):
        if not arg:
            raise JudgeError("replay judge needs a file: replay:FILE (a ratings file or a table with a score column)")
        if mode not in MODES:
            raise JudgeError(
                f"replay:{arg}: a replay judge only replays recorded scores (mode 'predict'), not {mode!r}"
            )
        self.path = Path(arg)
        if not self.path.is_file():
            raise JudgeError(f"replay:{arg}: no such file {arg}")
        self.column, self.keep, self.drop = column, float(keep), float(drop)
        self.batch_size = batch_size or self.batch_size
        # hashed now (not in load) because the store is queried with the id before any work is sent
        self._id = f"replay:{self.path.stem}@{_file_digest(self.path)}"
        self._scores: dict[str, float] | None = None

    @property
    def id(self) -> str:
        return self._id

    def load(self) -> None:
        if self._scores is None:
            self._scores = self._read()

    def _value(self, row: dict[str, Any]) -> Any:
        """The recorded value: the named column as it is, else the rating's `score` wherever `rate` put it."""
        if self.column is not None:
            return row.get(self.column)
        return rating_field(row, "score")

    def _has_column(self, row: dict[str, Any]) -> bool:
        if self.column is not None:
            return self.column in row
        return "score" in row or "alpagasus_score" in row

    def _score(self, value: Any, where: str) -> float | None:
        """A recorded value -> a score; None for a missing one. A value that is neither a number nor a boolean
        is an error: guessing would put a made-up score in the store."""
        if value is None:
            return None
        if isinstance(value, str):  # CSV cells are text
            text = value.strip().lower()
            if not text or text in ("nan", "null", "none"):
                return None
            if text in ("true", "false"):
                value = text == "true"
            else:
                try:
                    value = float(text)
                except ValueError:
                    raise JudgeError(f"{where}: score {value!r} is neither a number nor true/false") from None
        if isinstance(value, bool):  # before the number check: bool is an int
            return self.keep if value else self.drop
        if isinstance(value, (int, float)):
            return None if math.isnan(value) else float(value)
        raise JudgeError(f"{where}: score {value!r} is neither a number nor true/false")

    def _read(self) -> dict[str, float]:
        """id -> recorded score over the whole file, read once (the last recorded row of a content wins)."""
        name = self.column or "score"
        scores: dict[str, float] = {}
        seen_column, columns = False, None
        try:
            for row, rec in iter_records(self.path):
                if not isinstance(rec, dict):
                    continue  # a malformed line cannot be matched to an example; the others still replay
                columns = columns or list(rec)
                if not self._has_column(rec):
                    continue
                seen_column = True
                status = rating_field(rec, "status")
                if status is not None and status != "ok":
                    continue
                score = self._score(self._value(rec), f"{self.path}, row {row}")
                example = to_example(rec, row, str(self.path), allow_empty=True)
                if score is None or isinstance(example, InvalidRow):
                    continue
                scores[example.id] = score
        except (DataError, OSError) as e:
            raise JudgeError(f"replay:{self.path}: {e}") from None
        if not seen_column:
            raise JudgeError(
                f"replay:{self.path}: no {name!r} column in {self.path} (its columns: "
                f"{', '.join(map(str, columns or [])) or 'none'}); name one with column="
            )
        return scores

    def score_sync(self, requests: list[Request]) -> list[Reply]:
        missing = [r.key for r in requests if r.example is None]
        if missing:
            raise JudgeError(f"replay:{self.path} replays examples, not prompts: request {missing[0]!r} has no example")
        self.load()
        assert self._scores is not None
        replies = []
        for r in requests:
            assert r.example is not None
            score = self._scores.get(r.example.id)
            if score is None:
                # not retryable: asking again cannot put the row in the file
                replies.append(Reply(error=f"not in the replay file {self.path}", retryable=False, model="replay"))
            else:
                replies.append(Reply(score=score, model="replay"))
        return replies
