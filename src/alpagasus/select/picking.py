"""Diversity-aware picking from a ratings file: which rows are candidates, in what order, and their embeddings
(embedded lazily, best score first, in rounds that re-read the file for the texts: memory stays flat)."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from alpagasus.data import read_jsonl
from alpagasus.select.diverse import DeitaWalk, facility_location
from alpagasus.select.embed import Embedder, embedding_text
from alpagasus.select.rules import Columns, SelectError, rule_size

DIVERSE = ("deita", "facility")
# DEITA's threshold is 0.9 on its own encoder (mean-pooled LLaMA states, whose cosines crowd near 1). MiniLM's
# cosines spread lower: among 1,000 Alpaca rows the median nearest-neighbour similarity is 0.50 and the 99th
# percentile 0.80, so 0.9 would skip almost nothing. The default is the MiniLM threshold that measured close to
# DEITA's effect (docs/select.md); --similarity 0.9 gives DEITA's number.
DEFAULT_SIMILARITY = 0.45
POOL = 4  # facility location picks K from the 4K best-scored rows (Superfiltering.D: score, then diversify)
FIRST_ROUND = 1024  # the fewest candidates embedded per round of the DEITA walk


@dataclass
class Picked:
    positions: list[int]
    visited: int = 0  # candidates the walk looked at
    skipped: int = 0  # of those, too similar to a kept row
    filled: int = 0  # budget slots filled from skipped rows when the candidates ran out
    short: int = 0  # budget slots left empty (no candidates at all left)
    embedded: int = 0  # vectors computed by this run (the rest came from the store)


def candidates(cols: Columns, rule: str, value: Any) -> tuple[list[int], int | None]:
    """Rated positions best score first (ties: file order) and the budget the rule sets (None: no size)."""
    rated = sorted((i for i, x in enumerate(cols.scores) if not math.isnan(x)), key=lambda i: (-cols.scores[i], i))
    if rule == "threshold":
        return [i for i in rated if cols.scores[i] >= float(value)], None
    if rule in ("top_k", "keep_fraction"):
        size = rule_size(
            rule,
            len(rated),
            k=int(value) if rule == "top_k" else None,
            fraction=float(value) if rule == "keep_fraction" else None,
        )
        return rated, size
    raise SelectError(f"--diverse works with a score rule (--threshold, --top-k, --keep-fraction), not {rule}")


def pick_diverse(
    ratings: str | Path,
    cols: Columns,
    ids: list[str],
    rule: str,
    value: Any,
    method: str,
    embedder: Embedder,
    similarity: float = DEFAULT_SIMILARITY,
    pool: int = POOL,
) -> Picked:
    with one_blas_thread():
        return _pick(ratings, cols, ids, rule, value, method, embedder, similarity, pool)


def one_blas_thread() -> Any:
    """The walk and the greedy make many small products one after another; OpenBLAS's threads spin-wait
    between them, which on a busy 2-core machine measured 45x slower than one thread (bench/selection.py).
    threadpoolctl comes with scikit-learn (the [select] extra); without it, nothing changes."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _pick(
    ratings: str | Path,
    cols: Columns,
    ids: list[str],
    rule: str,
    value: Any,
    method: str,
    embedder: Embedder,
    similarity: float,
    pool: int,
) -> Picked:
    if method not in DIVERSE:
        raise SelectError(f"unknown --diverse method {method!r}; one of {', '.join(DIVERSE)}")
    order, budget = candidates(cols, rule, value)
    if method == "facility":
        if budget is None:
            raise SelectError("--diverse facility needs a size: use --top-k or --keep-fraction")
        chosen = order[: max(budget, pool * budget)]
        _embed(ratings, ids, set(chosen), embedder)
        got = facility_location(embedder.matrix([ids[i] for i in chosen]), budget)
        return Picked(sorted(chosen[j] for j in got), visited=len(chosen), embedded=embedder.computed)
    if not -1 <= similarity <= 1:
        raise SelectError(f"--similarity must be a cosine in [-1, 1], not {similarity}")
    walk = DeitaWalk(budget, similarity)
    start, size = 0, max(FIRST_ROUND, 2 * (budget or len(order)))
    while start < len(order) and not walk.full:
        chunk = order[start : start + size]
        _embed(ratings, ids, set(chunk), embedder)
        walk.feed(chunk, embedder.matrix([ids[i] for i in chunk]))
        start, size = start + len(chunk), size * 2
    visited = len(walk.kept) + len(walk.skipped)
    skipped = len(walk.skipped)
    filled = walk.fill()
    short = (budget - len(walk.kept)) if budget is not None else 0
    return Picked(
        sorted(walk.kept), visited=visited, skipped=skipped, filled=filled, short=short, embedded=embedder.computed
    )


def _embed(ratings: str | Path, ids: list[str], wanted: set[int], embedder: Embedder) -> None:
    """Store vectors for the rows at these positions (one pass over the file for their texts)."""
    embedder.ensure(_texts(ratings, ids, wanted))


def _texts(ratings: str | Path, ids: list[str], wanted: set[int]) -> Iterator[tuple[str, str]]:
    left = len(wanted)
    for i, row in enumerate(read_jsonl(ratings)):
        if left == 0:
            return
        if i in wanted:
            left -= 1
            if i >= len(ids) or not ids[i]:
                raise SelectError(f"{ratings}, row {i + 1}, field 'id': missing (is this an `alpagasus rate` output?)")
            yield ids[i], embedding_text(row)
