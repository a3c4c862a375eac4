"""Caveats that reach the outputs of `rate` and `select`, beside the judge card's line (cards.caveat).

`domain_note`: the shipped predictors learned from Alpaca rows only: on other data (Dolly, a user's own) their
scores are untested, and `rate` says so. The check is exact and cheap: the content ids of the input's first rows against those of the Alpaca random
9k the package ships (samples/alpaca_9k.json.gz, 17.7% of the 52k): a file of Alpaca rows has about one row
in six there, and a file of other data none.
"""

from __future__ import annotations

import itertools
import json
import statistics
from functools import lru_cache
from pathlib import Path
from typing import Any

from alpagasus.data import DataError, read_jsonl, stream_examples
from alpagasus.judgecheck.cards import find_card, judge_name
from alpagasus.judgecheck.metrics import RatingFigures

ROWS_CHECKED = 500
SCORE_RULES = ("top_k", "keep_fraction", "threshold")
LENGTH_RATIO = 2.0  # kept median response length under half, or over twice, the rated rows': said
ALPACA_SAMPLE = "sample:alpaca_9k"


@lru_cache(maxsize=1)
def _alpaca_ids() -> frozenset[str]:
    return frozenset(e.id for e in stream_examples(ALPACA_SAMPLE, skip_invalid=True, allow_empty=True))


def trained_on_alpaca(judge: str | None) -> bool:
    """A shipped predictor (or a pointwise judge over one) learned from Alpaca rows only."""
    backend, _, arg = judge_name(judge or "").partition(":")
    return backend in ("predictor", "pointwise") and arg.startswith("alpaca-")


def domain_note(judge: str | None, data: str | Path) -> str | None:
    """A warning when a judge trained on Alpaca only rated data none of whose first rows are Alpaca rows;
    None otherwise (another judge, Alpaca data, or a file that cannot be read here)."""
    if not trained_on_alpaca(judge):
        return None
    try:
        ids = [e.id for e in itertools.islice(stream_examples(data, skip_invalid=True, allow_empty=True), ROWS_CHECKED)]
        if not ids or any(i in _alpaca_ids() for i in ids):
            return None
    except (DataError, OSError, ValueError):
        return None
    card = find_card(judge, "rating")
    rho = card.figures.length_spearman if card is not None and isinstance(card.figures, RatingFigures) else None
    measured = f"; on Alpaca its score has Spearman {rho:+.2f} with response length" if rho is not None else ""
    return (
        f"{judge_name(judge or '')} was trained on Alpaca rows only, and none of the first {len(ids)} rows "
        f"of {data} is an Alpaca row: on other data its scores are untested{measured} "
        "(docs/judge_check.md)"
    )


def selection_length_note(res: dict[str, Any]) -> str | None:
    """`select` by score: a warning when the kept rows' median response length is under half or over twice
    the rated rows' (what the score rewards may be length); None otherwise. Reads the selection's sidecar
    and its ratings file (one streaming pass)."""
    from alpagasus.formats import example_of
    from alpagasus.ratings_file import rating_field
    from alpagasus.records import Example

    if res.get("rule") not in SCORE_RULES or not res.get("sidecar"):
        return None
    try:
        side = json.loads(Path(res["sidecar"]).read_text(encoding="utf-8"))
        kept_ids = set(side["kept_ids"])
        every, kept = [], []
        for r in read_jsonl(side["ratings"]):
            if rating_field(r, "status") == "ok":  # the row in its own format (Alpaca, messages, ShareGPT...)
                ex = example_of(r)
                every.append(len(ex.response) if isinstance(ex, Example) else 0)
                if str(rating_field(r, "id")) in kept_ids:
                    kept.append(every[-1])
    except (OSError, ValueError, KeyError, DataError):
        return None
    if not kept or not every:
        return None
    m_kept, m_all = statistics.median(kept), statistics.median(every)
    if m_all <= 0 or 1 / LENGTH_RATIO < m_kept / m_all < LENGTH_RATIO:
        return None
    side_word = "shorter" if m_kept < m_all else "longer"
    return (
        f"warning: the kept rows' median response is {m_kept:g} characters against {m_all:g} for all rated "
        f"rows: this score favours {side_word} answers, so a model trained on them may differ by length as "
        f"much as by quality (a length-matched random baseline: select --random {len(kept)} --match-length "
        f"{side.get('output', 'THIS_SELECTION')})"
    )
