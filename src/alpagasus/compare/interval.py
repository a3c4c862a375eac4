"""How sure a winning score is: a 95% bootstrap confidence interval over questions, and one plain sentence
saying whether the difference from a tie (1.0) is distinguishable from noise.

Percentile bootstrap: the judged questions' outcomes (win 1, tie 0, lose -1 from model A's side) are resampled
with replacement, the winning score recomputed each time, and the 2.5th and 97.5th percentiles taken. Seeded,
so the same outcomes always give the same interval. It covers the sampling of questions only: which questions a
test set happens to hold, not the judge's own noise (a second judge, or the same judge asked again, may differ).
Pure Python (no numpy in the core install): 2,000 resamples of 512 questions take a fraction of a second.
"""

from __future__ import annotations

import random
from typing import Sequence

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0
# Below this many judged questions the percentile bootstrap is not trusted: a unanimous handful of questions gives
# a zero-width interval (and 5 wins out of 5 is not significant by a sign test), so the sentence says so instead.
MIN_QUESTIONS = 10


def winning_score(points: Sequence[int]) -> float | None:
    """(#win - #lose) / #judged + 1 from points (win 1, tie 0, lose -1)."""
    return sum(points) / len(points) + 1 if points else None


def bootstrap_interval(
    points: Sequence[int], resamples: int = RESAMPLES, level: float = LEVEL, seed: int = SEED
) -> tuple[float, float] | None:
    """The percentile bootstrap interval of the winning score over questions; None with no judged question."""
    n = len(points)
    if n == 0:
        return None
    rng = random.Random(seed)
    pts = list(points)
    # resampling n questions = drawing n outcomes: only their sum matters
    stats = sorted(sum(rng.choices(pts, k=n)) / n + 1 for _ in range(resamples))
    tail = (1 - level) / 2
    lo = stats[int(tail * resamples)]
    hi = stats[min(resamples - 1, int((1 - tail) * resamples))]
    return round(lo, 4), round(hi, 4)


def noise_sentence(
    score: float | None, interval: Sequence[float] | None, model_a: str = "A", model_b: str = "B", n: int | None = None
) -> str:
    """One plain sentence: is the winning score distinguishable from a tie (1.0) at this sample size? `n`: the
    judged questions (fewer than MIN_QUESTIONS: too few to tell)."""
    if score is None or interval is None:
        return "no question was judged: no winning score."
    lo, hi = interval
    span = f"winning score {score:.3f}, 95% interval {lo:.3f}-{hi:.3f}"
    if n is not None and n < MIN_QUESTIONS:
        return (
            f"{span}: only {n} judged question(s), too few to tell a difference from noise (at least "
            f"{MIN_QUESTIONS} are needed for the interval to mean something)."
        )
    if lo > 1.0:
        return (
            f"{span}: the interval lies above 1.0, so {model_a} beats {model_b} beyond the noise of sampling questions."
        )
    if hi < 1.0:
        return (
            f"{span}: the interval lies below 1.0, so {model_b} beats {model_a} beyond the noise of sampling questions."
        )
    return (
        f"{span}: the interval contains 1.0, so the difference is not distinguishable from a tie at this sample size."
    )
