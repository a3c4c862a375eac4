"""Diversity-aware selection over unit-length embeddings (numpy only: blocks of matrix products).

- `DeitaWalk`: DEITA's score-first filter (Liu et al., 2024, "What makes good data for alignment"): rows are
  visited best score first, a row is kept only if its cosine similarity to its nearest already-kept row is
  below the threshold, until the budget is filled. Fed in blocks, so the caller can embed lazily in score
  order (a top-2% budget embeds a few percent of the file, not all of it).
- `facility_location`: Superfiltering.D's diversity step (Li et al., 2024): from a pool of the best-scored rows,
  greedily pick the row that most raises sum_i max_{s in S} sim(i, s) (stochastic greedy).
- `nearest_similarity`: each row's cosine similarity to its nearest other row (the report's redundancy).

Why numpy and not faiss or scikit-learn: the walk compares each block with the kept set only (K x 384 floats),
and measured at Alpaca size an exact blocked product is fast enough (bench/selection.py), so no index library is
needed (and exact search has no recall to tune).
"""

from __future__ import annotations

import math
from typing import Any

BLOCK = 1024  # rows per matrix product: bounds the temporary (BLOCK x kept) similarity matrix


class DeitaWalk:
    """Feed candidate blocks (positions in score order, their vectors); `kept` grows until `budget` is full.
    `budget` None keeps every candidate that passes the filter (used with a threshold rule)."""

    def __init__(self, budget: int | None, threshold: float, dim: int = 384) -> None:
        import numpy as np

        self.budget, self.threshold = budget, float(threshold)
        self.kept: list[int] = []
        self.skipped: list[int] = []  # visited and too similar, in score order (used to fill a short budget)
        self._vecs = np.zeros((0, dim), dtype=np.float32)
        self._np = np

    @property
    def full(self) -> bool:
        return self.budget is not None and len(self.kept) >= self.budget

    def feed(self, positions: list[int], vectors: Any) -> None:
        np = self._np
        vectors = np.asarray(vectors, dtype=np.float32)
        for s in range(0, len(positions), BLOCK):
            if self.full:
                return
            self._block(positions[s : s + BLOCK], vectors[s : s + BLOCK])

    def _block(self, positions: list[int], v: Any) -> None:
        np = self._np
        # nearest kept row before this block: one product; rows kept inside the block are checked in the loop
        near = (v @ self._vecs.T).max(axis=1) if len(self._vecs) else np.full(len(v), -1.0, dtype=np.float32)
        inner = v @ v.T
        took: list[int] = []
        for j, pos in enumerate(positions):
            if self.full:
                break
            best = max(float(near[j]), float(inner[j, took].max()) if took else -1.0)
            if best < self.threshold:
                took.append(j)
                self.kept.append(pos)
            else:
                self.skipped.append(pos)
        if took:
            self._vecs = np.vstack([self._vecs, v[took]])

    def fill(self) -> int:
        """When the candidates ran out before the budget was full, top it up with the skipped rows, best score
        first (a same-size comparison needs the same size); returns how many were added that way."""
        if self.budget is None or self.full:
            return 0
        extra = self.skipped[: self.budget - len(self.kept)]
        self.kept.extend(extra)
        return len(extra)


def facility_location(vectors: Any, k: int, epsilon: float = 0.01, seed: int = 0) -> list[int]:
    """Indices of `k` rows of `vectors` (unit rows) chosen for facility location (similarity clipped at 0) by
    stochastic greedy (Mirzasoleiman et al., 2015): each pick takes the best of (n / k) ln(1 / epsilon) rows
    drawn at random from those left, which is within (1 - 1/e - epsilon) of the optimum in expectation. Plain
    lazy greedy was measured first and stalls when every gain falls at once (as on dense embeddings): here the
    cost is fixed, k products of (n / k) ln(1 / epsilon) x n x dim, ~19 x n x 384 per pick at the 4K pool."""
    import numpy as np

    v = np.asarray(vectors, dtype=np.float32)
    n = len(v)
    k = min(k, n)
    if k <= 0:
        return []
    rng = np.random.default_rng(seed)
    draw = min(n, max(1, math.ceil(n / k * math.log(1 / epsilon))))
    left = np.ones(n, dtype=bool)
    cover = np.zeros(n, dtype=np.float32)  # each row's similarity to its nearest chosen row
    chosen: list[int] = []
    for _ in range(k):
        pool = np.flatnonzero(left)
        cand = pool if len(pool) <= draw else rng.choice(pool, size=draw, replace=False)
        sims = np.clip(v[cand] @ v.T, 0, None)
        best = int(np.argmax(np.maximum(sims - cover, 0).sum(axis=1)))
        chosen.append(int(cand[best]))
        left[cand[best]] = False
        cover = np.maximum(cover, sims[best])
    return chosen


def nearest_similarity(vectors: Any) -> Any:
    """Each row's cosine similarity to its nearest other row (NaN for a single row), in blocks."""
    import numpy as np

    v = np.asarray(vectors, dtype=np.float32)
    out = np.full(len(v), np.nan, dtype=np.float32)
    if len(v) < 2:
        return out
    for s in range(0, len(v), BLOCK):
        sims = v[s : s + BLOCK] @ v.T
        idx = np.arange(s, min(s + BLOCK, len(v)))
        sims[idx - s, idx] = -np.inf  # not itself
        out[s : s + BLOCK] = sims.max(axis=1)
    return out


def redundancy(vectors: Any) -> float | None:
    """Mean cosine similarity of each row to its nearest other row: the report's redundancy of a selection."""
    import numpy as np

    near = nearest_similarity(vectors)
    return float(np.mean(near)) if len(near) >= 2 else None
