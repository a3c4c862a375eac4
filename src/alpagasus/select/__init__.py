"""Selecting training data from ratings: the paper's threshold rule and the baselines a scientist needs.

`select_file` streams a ratings file into a training file (and its `.selection.json` sidecar); `choose` / `select`
apply a rule in memory. Diversity (`diverse`, `picking`, `embed`) and near-duplicates (`dedup`): docs/select.md.
"""

from alpagasus.select.files import select_file, sidecar_path
from alpagasus.select.rules import (
    BINS,
    RATING_KEYS,
    RULES,
    Columns,
    SelectError,
    bin_counts,
    choose,
    score_bin,
    select,
    training_row,
    training_rows,
)

__all__ = [
    "select_file",
    "sidecar_path",
    "select",
    "choose",
    "Columns",
    "SelectError",
    "BINS",
    "RULES",
    "RATING_KEYS",
    "bin_counts",
    "score_bin",
    "training_row",
    "training_rows",
]
