"""Selecting training data from ratings: the paper's threshold rule and the baselines a scientist needs.

Rows come from a ratings file (`alpagasus rate` output), in any format (formats/: read through the sample's
views); the selection is written in the input's own format (the row as the ratings file holds it, no rating
columns).
"""

from __future__ import annotations

import heapq
import math
import random
from array import array
from typing import Any, Iterable

from alpagasus.formats import example_of
from alpagasus.ratings_file import RATING_FIELDS, rating_field, user_fields
from alpagasus.records import Example, InvalidRow

# Columns `rate` adds to the example's own fields; stripped from the training file.
RATING_KEYS = RATING_FIELDS  # the columns `rate` adds (namespaced when the user's row has one of these names)
BINS = ("<3", "3", "3.5", "4", "4.5", "5")
RULES = ("threshold", "top_k", "keep_fraction", "random", "longest", "all")


class SelectError(ValueError):
    pass


def score_bin(score: float) -> str:
    """The bin of the largest half point at or below the score; "<3" under 3 (the paper's histogram bins)."""
    if score < 3:
        return "<3"
    half = min(5.0, int(score * 2) / 2)
    return f"{half:g}"


def bin_counts(rows: Iterable[dict[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(BINS, 0)
    for r in rows:
        score = rating_field(r, "score")
        if rating_field(r, "status") == "ok" and score is not None:
            counts[score_bin(float(score))] += 1
    return counts


class Columns:
    """What the rules need of each row, in flat arrays (a few bytes a row): a million-row ratings file is
    selected without holding its rows. `add` takes rows in file order; indices are file positions."""

    def __init__(self) -> None:
        self.scores = array("d")  # NaN: not rated (any status but ok, or no score)
        self.lengths = array("q")  # characters of the response, for `longest`
        self.valid = bytearray()  # 1 unless the row's data is invalid (or excluded by the caller)

    def add(self, row: dict[str, Any], excluded: bool = False, format: str | None = None) -> Example | InvalidRow:
        """Add one ratings row; returns the sample it holds (read in `format`, else the one its keys show), or
        the InvalidRow saying why it holds none."""
        status, score = rating_field(row, "status"), rating_field(row, "score")
        ex = example_of(row, format)
        # a row with nothing to learn from (an empty prompt or response) is never picked, whatever its rating
        usable = not excluded and trainable(ex)
        ok = usable and status == "ok" and score is not None
        self.scores.append(float(score) if ok else math.nan)
        self.lengths.append(len(ex.response) if isinstance(ex, Example) else 0)
        self.valid.append(1 if usable and status not in ("invalid_input", "empty") else 0)
        return ex

    def __len__(self) -> int:
        return len(self.valid)


def choose(
    cols: Columns,
    rule: str,
    *,
    threshold: float | None = None,
    k: int | None = None,
    fraction: float | None = None,
    seed: int = 0,
) -> list[int]:
    """Positions picked by one rule, in file order (scores are not a training curriculum)."""
    rated = (
        [i for i, x in enumerate(cols.scores) if not math.isnan(x)]
        if rule in ("threshold", "top_k", "keep_fraction")
        else []
    )
    if rule == "threshold":
        if threshold is None:
            raise SelectError("threshold rule needs a threshold")
        return [i for i in rated if cols.scores[i] >= threshold]
    if rule in ("top_k", "keep_fraction"):
        k = rule_size(rule, len(rated), k=k, fraction=fraction)
        return sorted(heapq.nsmallest(k, rated, key=lambda i: (-cols.scores[i], i)))  # stable on ties
    valid = [i for i, v in enumerate(cols.valid) if v]
    if rule == "random":
        k = _need_k(k)
        return [valid[j] for j in sorted(random.Random(seed).sample(range(len(valid)), min(k, len(valid))))]
    if rule == "longest":
        k = _need_k(k)
        return sorted(heapq.nsmallest(k, valid, key=lambda i: (-cols.lengths[i], i)))
    if rule == "all":
        return valid
    raise SelectError(f"unknown rule {rule!r}; one of {', '.join(RULES)}")


def select(
    rows: list[dict[str, Any]],
    rule: str,
    *,
    threshold: float | None = None,
    k: int | None = None,
    fraction: float | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Pick rows by one rule; the result keeps the input order. (Files: `select_file` streams.)"""
    cols = Columns()
    for r in rows:
        cols.add(r)
    return [rows[i] for i in choose(cols, rule, threshold=threshold, k=k, fraction=fraction, seed=seed)]


def rule_size(rule: str, rated: int, *, k: int | None = None, fraction: float | None = None) -> int:
    """The size a top_k or keep_fraction rule asks for (keep_fraction: its share of the `rated` rows)."""
    if rule == "keep_fraction":
        if fraction is None or not 0 < fraction <= 1:
            raise SelectError("keep fraction must be in (0, 1]")
        k = round(fraction * rated)
    return _need_k(k)


def _need_k(k: int | None) -> int:
    if k is None or k < 0:
        raise SelectError("this rule needs a size K >= 0")
    return k


def trainable(example: Example | InvalidRow) -> bool:
    """Whether a sample has text in its prompt and its response (Alpaca: the instruction and the output)."""
    return isinstance(example, Example) and not example.empty_field


def training_row(row: dict[str, Any]) -> dict[str, Any]:
    """The training format: the user's own fields exactly as they were read, rating columns removed."""
    return user_fields(row)


def training_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [training_row(r) for r in rows]
