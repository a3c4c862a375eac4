"""Labels for `alpagasus distill`: read a rating table into a LabelSet (keep decision, weights, uniform rows)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from alpagasus.data import DataError, read_table, to_example
from alpagasus.ratings_file import RATING_PREFIX, rating_field
from alpagasus.records import Example, InvalidRow

TRUE = {"true", "yes", "y", "t", "keep", "1"}
FALSE = {"false", "no", "n", "f", "drop", "0"}


class DistillError(DataError):
    """Bad labels or options; the message names the file, the row and the column."""


@dataclass
class LabelSet:
    """Labelled examples, as read from a `rate` output or any table with a label column."""

    source: str
    label: str
    threshold: float
    examples: list[Example]
    keep: Any  # 0/1: the strong judge keeps the row
    value: Any | None  # numeric labels (e.g. 0-5 scores), None for boolean labels
    weight: Any
    uniform: Any  # True where the row was drawn uniformly (held out / calibrated on)
    skipped: dict[str, int] = field(default_factory=dict)
    invalid: list[str] = field(default_factory=list)  # why rows were skipped as invalid (the first few)
    uniform_column: str | None = None
    weight_column: str | None = None


def _parse_label(v: Any) -> float | bool | None:
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if math.isnan(float(v)):
            return None
        return float(v)
    if isinstance(v, str):
        s = v.strip().lower()
        if s in TRUE - {"1"} or s in FALSE - {"0"}:
            return s in TRUE
        return float(s)  # ValueError -> reported with the row by the caller
    raise ValueError(type(v).__name__)


def load_labels(
    path: str | Path,
    label: str | None = None,
    threshold: float = 4.5,
    weight_column: str | None = None,
    uniform_column: str | None = None,
    field_map: Mapping[str, str] | None = None,
) -> LabelSet:
    """Read labels. Without `label`, the file must be `alpagasus rate` output: `score` is the label and
    rows whose `status` is not "ok" are skipped. Numeric labels become keep = value >= threshold."""
    import numpy as np

    src = str(path)
    examples, values, weights, uniform = [], [], [], []
    skipped: dict[str, int] = {}
    invalid: list[str] = []
    columns: set[str] = set()
    for row, rec in enumerate(read_table(path), 1):
        if row == 1:
            columns = set(rec)
            if label is None:  # `rate` output: its score, namespaced where the user's rows had their own
                label = RATING_PREFIX + "score" if RATING_PREFIX + "status" in rec else "score"
                if label not in rec:
                    raise DistillError(
                        f"{src}: no --label given and no 'score' column (an `alpagasus rate` "
                        f"output has one); columns: {', '.join(sorted(columns))}"
                    )
            for what, col in (("label", label), ("weight", weight_column), ("uniform", uniform_column)):
                if col is not None and col not in rec:
                    raise DistillError(f"{src}: no {what} column {col!r}; columns: {', '.join(sorted(columns))}")
        status = rating_field(rec, "status")
        if status is not None and status != "ok":
            skipped[f"status {status}"] = skipped.get(f"status {status}", 0) + 1
            continue
        ex = to_example(rec, row, src, field_map)
        if isinstance(ex, InvalidRow):  # e.g. an empty output (`rate` marks it `empty`)
            skipped["invalid row"] = skipped.get("invalid row", 0) + 1
            invalid.append(str(ex))
            continue
        assert label is not None  # chosen from the first row's columns above
        try:
            v = _parse_label(rec.get(label))
        except ValueError:
            raise DistillError(
                f"{src}, row {row}, column {label!r}: expected a number or true/false, got {rec.get(label)!r}"
            ) from None
        if v is None:
            skipped["no label"] = skipped.get("no label", 0) + 1
            continue
        examples.append(ex)
        values.append(v)
        weights.append(_row_weight(rec, weight_column, src, row))
        uniform.append(_row_uniform(rec, uniform_column, src, row))
    if label is None:
        raise DistillError(f"{src}: no rows")
    vals = np.asarray([float(v) for v in values], dtype=np.float64)
    boolean = all(isinstance(v, bool) for v in values) or set(np.unique(vals)) <= {0.0, 1.0}
    keep = (vals > 0.5) if boolean else (vals >= threshold)
    ls = LabelSet(
        src,
        label,
        threshold,
        examples,
        keep.astype(np.int64),
        None if boolean else vals,
        np.asarray(weights, dtype=np.float64),
        np.asarray(uniform, dtype=bool),
        skipped,
        invalid[:5],
        uniform_column,
        weight_column,
    )
    check_labels(ls)
    return ls


def _row_weight(rec: Mapping[str, Any], column: str | None, src: str, row: int) -> float:
    """The row's sample weight (1 without a weight column); not a number >= 0 is an error naming the cell."""
    if column is None:
        return 1.0
    try:
        w = float(rec.get(column))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        w = -1.0
    if not w >= 0 or math.isinf(w):
        raise DistillError(
            f"{src}, row {row}, column {column!r}: a weight must be a number >= 0, got {rec.get(column)!r}"
        )
    return w


def _row_uniform(rec: Mapping[str, Any], column: str | None, src: str, row: int) -> bool:
    """Whether the row was drawn uniformly (every row, without a uniform column)."""
    if column is None:
        return True
    try:
        return bool(_parse_label(rec.get(column)))
    except ValueError:
        raise DistillError(
            f"{src}, row {row}, column {column!r}: expected true/false, got {rec.get(column)!r}"
        ) from None


def check_labels(ls: LabelSet, min_per_class: int = 10) -> None:
    pos, neg = int(ls.keep.sum()), int(len(ls.keep) - ls.keep.sum())
    rule = f"{ls.label} >= {ls.threshold}" if ls.value is not None else f"{ls.label} true"
    if min(pos, neg) < min_per_class:
        raise DistillError(
            f"{ls.source}: column {ls.label!r} gives {pos} kept and {neg} dropped rows ({rule}); "
            f"training needs at least {min_per_class} of each"
        )
    if not ls.uniform.any():
        raise DistillError(f"{ls.source}: no row is marked as uniformly drawn; nothing to hold out or calibrate on")
