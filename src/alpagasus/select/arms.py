"""The recipe's extra arms, each the size of the filtered set: `diverse` (DEITA-style: score-first, skipping rows
too similar to a kept one), `dedup` (near-duplicates removed, then the best-rated), `ifd` (rated by
Instruction-Following Difficulty with the embedded SmolLM2, then the best by that score: Superfiltering), `matched`
(random rows with the filtered set's response-length distribution: selection told apart from length)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from alpagasus.select.files import select_file

ARMS = ("diverse", "ifd", "dedup", "matched")
IFD_JUDGE = "ifd:embedded:smollm2"


def select_arm(
    name: str,
    ratings: str | Path,
    output: str | Path,
    size: int,
    opts: dict[str, Any],
    store: str | Path | None = None,
    ifd_ratings: Callable[[], Path] | None = None,
    reference: str | Path | None = None,
) -> dict:
    """One arm of `size` rows; `ifd_ratings` rates the data with IFD_JUDGE and returns that ratings file;
    `reference` is the filtered set whose lengths the `matched` arm follows."""
    if name == "diverse":
        return select_file(ratings, output, "top_k", size, diverse="deita", store=store, **opts)
    if name == "dedup":
        return select_file(ratings, output, "top_k", size, dedup=True, **opts)
    if name == "matched":
        if reference is None:
            raise ValueError("the matched arm needs the filtered set to match")
        return select_file(ratings, output, "random", size, match_length=reference, **opts)
    if name == "ifd":
        if ifd_ratings is None:
            raise ValueError("the ifd arm needs its own ratings (IFD judge)")
        return select_file(ifd_ratings(), output, "top_k", size, **opts)
    raise ValueError(f"unknown arm {name!r}; one of {', '.join(ARMS)}")
