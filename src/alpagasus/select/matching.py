"""The length-matched random baseline: K random rows whose response lengths follow a reference selection's.

A filtered set that is much shorter (or longer) than the data confounds "the judge picked better rows" with "the
judge picked shorter rows". Drawing the random baseline with the filtered set's length distribution removes that
confound: an experiment comparing filtered with matched-random measures selection beyond length.

How: each reference row, in a seeded random order, is paired with a valid row of the same response length drawn at
random among those left (the nearest length when none is left: the closest longer or shorter, at random between
them). Rows of the same length are interchangeable, so the draw is random given the lengths; the two-sample
Kolmogorov-Smirnov distance between the drawn and the reference lengths is returned so the match can be checked,
not assumed, with the count of rows whose length is more than 10% off their partner's (a pool thin at that length).
"""

from __future__ import annotations

import bisect
import random
import statistics
from dataclasses import dataclass
from pathlib import Path

from alpagasus.records import Example
from alpagasus.select.rules import Columns, SelectError

OFF_BY = 0.10  # a partner more than 10% longer or shorter counts as `off`


@dataclass(frozen=True)
class LengthMatch:
    """A length-matched draw: the positions picked (file order) and how well their lengths match."""

    positions: list[int]
    reference: str
    reference_rows: int
    ks_distance: float  # two-sample KS distance, drawn lengths vs the reference's (0 = identical)
    median_reference: float
    median_drawn: float
    off: int  # rows whose length is more than OFF_BY off their reference partner's


def reference_lengths(path: str | Path) -> list[int]:
    """Response lengths (characters of the judged response: Alpaca's output, a conversation's last assistant
    turn) of a selection file written by `alpagasus select` (any file format it writes, any row format), or of
    any dataset."""
    from alpagasus.data import read_table
    from alpagasus.formats import example_of

    lengths = []
    for i, row in enumerate(read_table(path), start=1):
        ex = example_of(row, file=str(path), number=i)
        if not isinstance(ex, Example):
            raise SelectError(f"{ex} (the reference must be a selection written by `alpagasus select`)")
        lengths.append(len(ex.response))
    if not lengths:
        raise SelectError(f"{path}: the reference selection is empty")
    return lengths


def ks_distance(a: list[int], b: list[int]) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical CDFs."""
    if not a or not b:
        return 1.0
    sa, sb = sorted(a), sorted(b)
    gap = 0.0
    for x in sorted(set(sa) | set(sb)):
        gap = max(gap, abs(bisect.bisect_right(sa, x) / len(sa) - bisect.bisect_right(sb, x) / len(sb)))
    return gap


class _Pool:
    """Valid positions grouped by response length, each group shuffled; `take(x)` pops one of length x, or of
    the nearest length left."""

    def __init__(self, cols: Columns, rng: random.Random):
        groups: dict[int, list[int]] = {}
        for i, v in enumerate(cols.valid):
            if v:
                groups.setdefault(cols.lengths[i], []).append(i)
        for g in groups.values():
            rng.shuffle(g)
        self.groups, self.keys, self.rng = groups, sorted(groups), rng

    def take(self, x: int) -> int:
        j = bisect.bisect_left(self.keys, x)
        lo, hi = j - 1, j
        if hi < len(self.keys) and self.keys[hi] == x:
            return self._pop(hi)
        below = x - self.keys[lo] if lo >= 0 else None
        above = self.keys[hi] - x if hi < len(self.keys) else None
        if above is None or (below is not None and (below < above or below == above and self.rng.random() < 0.5)):
            return self._pop(lo)
        return self._pop(hi)

    def _pop(self, j: int) -> int:
        key = self.keys[j]
        pos = self.groups[key].pop()
        if not self.groups[key]:
            del self.groups[key], self.keys[j]
        return pos

    def __len__(self) -> int:
        return len(self.keys)


def match_lengths(cols: Columns, reference: list[int], k: int, seed: int = 0, source: str = "") -> LengthMatch:
    """K valid positions drawn at random with the reference's length distribution (see the module doc). K may
    differ from the reference's size: the reference is then resampled (with replacement beyond its size)."""
    if k < 0:
        raise SelectError("this rule needs a size K >= 0")
    rng = random.Random(seed)
    targets = list(reference)
    rng.shuffle(targets)
    while len(targets) < k:
        targets.append(rng.choice(reference))
    pool = _Pool(cols, rng)
    picked, off = [], 0
    for x in targets[:k]:
        if not len(pool):
            break
        pos = pool.take(x)
        picked.append(pos)
        off += abs(cols.lengths[pos] - x) > OFF_BY * max(x, 1)
    drawn = [cols.lengths[i] for i in picked]
    return LengthMatch(
        sorted(picked),
        source,
        len(reference),
        round(ks_distance(drawn, reference), 4),
        float(statistics.median(reference)),
        float(statistics.median(drawn)) if drawn else 0.0,
        off,
    )
