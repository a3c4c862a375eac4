"""Selecting training data from ratings: the paper's threshold rule and the baselines a scientist needs.

Rows come from a ratings file (`alpagasus rate` output); the selection is written in the training format
(the input's own fields, no rating columns).
"""
from __future__ import annotations

import random
from typing import Any, Iterable

# Columns `rate` adds to the example's own fields; stripped from the training file.
RATING_KEYS = ("id", "score", "status", "judge", "prompt_version", "model", "explanation", "raw", "probs",
               "flags", "row", "field")
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
        if r.get("status") == "ok" and r.get("score") is not None:
            counts[score_bin(float(r["score"]))] += 1
    return counts


def _valid(rows: list[dict]) -> list[dict]:
    """Rows whose data is valid (any rating status but invalid_input)."""
    return [r for r in rows if r.get("status") != "invalid_input"]


def _rated(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get("status") == "ok" and r.get("score") is not None]


def select(rows: list[dict[str, Any]], rule: str, *, threshold: float | None = None, k: int | None = None,
           fraction: float | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Pick rows by one rule; the result keeps the input order (scores are not a training curriculum)."""
    if rule == "threshold":
        if threshold is None:
            raise SelectError("threshold rule needs a threshold")
        picked = [r for r in _rated(rows) if float(r["score"]) >= threshold]
    elif rule in ("top_k", "keep_fraction"):
        rated = _rated(rows)
        if rule == "keep_fraction":
            if fraction is None or not 0 < fraction <= 1:
                raise SelectError("keep fraction must be in (0, 1]")
            k = round(fraction * len(rated))
        _need_k(k)
        order = sorted(range(len(rated)), key=lambda i: (-float(rated[i]["score"]), i))  # stable on ties
        picked = [rated[i] for i in sorted(order[:k])]
    elif rule == "random":
        valid = _valid(rows)
        _need_k(k)
        idx = sorted(random.Random(seed).sample(range(len(valid)), min(k, len(valid))))
        picked = [valid[i] for i in idx]
    elif rule == "longest":
        valid = _valid(rows)
        _need_k(k)
        order = sorted(range(len(valid)), key=lambda i: (-len(str(valid[i].get("output", ""))), i))
        picked = [valid[i] for i in sorted(order[:k])]
    elif rule == "all":
        picked = _valid(rows)
    else:
        raise SelectError(f"unknown rule {rule!r}; one of {', '.join(RULES)}")
    return picked


def _need_k(k: int | None) -> None:
    if k is None or k < 0:
        raise SelectError("this rule needs a size K >= 0")


def training_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The training format: the example's own fields, rating columns removed."""
    return [{k: v for k, v in r.items() if k not in RATING_KEYS} for r in rows]
