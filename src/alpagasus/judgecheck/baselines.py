"""Trivial judges, measured on the same items beside the judge: what a figure means depends on them.

Pairwise: `longer wins` (the longer answer in characters; equal lengths tie), `shorter wins`, `always first`
(answer 1: the reference's first answer, AlpacaEval's baseline model or `compare`'s model A), `coin` (a fair
coin per item, seeded, never a tie). Rating: `longer` (the score is the response length), `shorter` (minus
it), `coin` (a seeded uniform random score). They give one verdict per item, so position bias is not theirs.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

from alpagasus.judgecheck.references import PairItem, RatingItem

COIN_SEED = 0


def _coin(key: str, seed: int) -> float:
    return random.Random(f"{seed}:{key}").random()  # per item, so a sample's coins do not depend on the others


def longer_wins(it: PairItem) -> str:
    a, b = len(it.answer_1), len(it.answer_2)
    return "tie" if a == b else "1" if a > b else "2"


def shorter_wins(it: PairItem) -> str:
    return {"1": "2", "2": "1", "tie": "tie"}[longer_wins(it)]


def always_first(it: PairItem) -> str:
    return "1"


def coin(it: PairItem, seed: int = COIN_SEED) -> str:
    return "1" if _coin(it.key, seed) < 0.5 else "2"


PAIRWISE: dict[str, Callable[[PairItem], str]] = {
    "longer wins": longer_wins,
    "shorter wins": shorter_wins,
    "always first": always_first,
    "coin": coin,
}
RATING: dict[str, Callable[[RatingItem], float]] = {
    "longer": lambda it: float(len(it.example.response)),
    "shorter": lambda it: -float(len(it.example.response)),
    "coin": lambda it: _coin(it.key, COIN_SEED),
}


def pairwise_verdicts(items: Sequence[PairItem]) -> dict[str, dict[str, str]]:
    """Baseline name -> item key -> verdict."""
    return {name: {it.key: rule(it) for it in items} for name, rule in PAIRWISE.items()}


def rating_scores(items: Sequence[RatingItem]) -> dict[str, dict[str, float]]:
    """Baseline name -> example id -> score."""
    return {name: {it.key: rule(it) for it in items} for name, rule in RATING.items()}
