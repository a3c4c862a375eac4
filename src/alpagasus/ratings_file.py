"""The ratings file's row: the one module that writes it and reads it.

A row is the example's own fields as read, then the rating's (`RATING_FIELDS`, typed here as `RowRating`).
Where a user's row already has a field of one of those names, all of that row's rating fields are written as
`alpagasus_<name>` instead, so no user value is lost. Writers: `rate`'s view of the store (rate/view.py) and the
cascade (rate/cascade.py), both through `row_of` / `invalid_row`. Readers (select, report, distill, replay,
judge-check, `show`, the cascade's counts): `rating_field`, `rating_view`, `user_fields`, `rating_of`.

It lives at the top of the package, not in rate/, because its readers are every stage after rating: select and
report must not depend on the rating subpackage (and its engine) to read a file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from alpagasus.records import Example, InvalidRow, Rating

# The fields the ratings file adds to each example's own, in the order they are written.
RATING_FIELDS = (
    "id",
    "row",
    "score",
    "status",
    "judge",
    "prompt_version",
    "model",
    "explanation",
    "raw",
    "probs",
    "label_mass",
    "flags",
    "field",
)
RATING_PREFIX = "alpagasus_"
# Written by IFD judges only (judges/ifd.py: the raw IFD, both losses, the >= 1 mark), so a rating field only in
# rows such a judge rated (judge "ifd:..."): a user's own `ifd` column in any other ratings file stays theirs.
IFD_FIELD = "ifd"
NOT_RATED = "not rated (run interrupted?)"

__all__ = [
    "RATING_FIELDS",
    "RATING_PREFIX",
    "IFD_FIELD",
    "NOT_RATED",
    "RowRating",
    "stored_rating",
    "row_of",
    "with_rating",
    "invalid_row",
    "rating_field",
    "rating_view",
    "user_fields",
    "rating_of",
]


@dataclass
class RowRating:
    """The rating's fields of one ratings-file row (an example's row; invalid rows are `invalid_row`)."""

    id: str | None
    row: int | None
    score: float | None
    status: str
    judge: str
    prompt_version: str
    model: str = ""
    explanation: str | None = None
    raw: str | None = None
    probs: dict[str, float] | None = None
    label_mass: float | None = None
    flags: list[str] = field(default_factory=list)
    ifd: Any = None  # IFD judges' figures (written only for a judge "ifd:...")

    def fields(self) -> dict[str, Any]:
        """The rating's part of the row, in the file's order (`ifd` only where an IFD judge rated it)."""
        out = {k: v for k, v in vars(self).items() if k != IFD_FIELD}
        if self.judge.startswith("ifd:"):
            out[IFD_FIELD] = self.ifd
        return out


def stored_rating(e: Example, r: Rating | None, judge_id: str, prompt_version: str) -> RowRating:
    """An example's rating as the store holds it (`r`), or why it has none: an empty example is `empty` (not
    sent, never selected), anything else unrated is an `error` (a run cut short)."""
    if r is not None:
        return RowRating(
            e.id,
            e.row,
            r.score,
            r.status,
            judge_id,
            prompt_version,
            r.model,
            r.explanation,
            r.raw,
            r.probs,
            (r.extra or {}).get("label_mass"),
            ifd=(r.extra or {}).get("ifd"),
        )
    if e.empty_field:
        why = f"the {e.empty_field} is empty: not sent to the judge, never selected (--rate-empty rates it)"
        return RowRating(e.id, e.row, None, "empty", judge_id, prompt_version, explanation=why)
    return RowRating(e.id, e.row, None, "error", judge_id, prompt_version, explanation=NOT_RATED)


def row_of(fields: dict[str, Any], rating: RowRating) -> dict[str, Any]:
    """A ratings-file row: the example's own fields, then the rating's (see with_rating)."""
    return with_rating(fields, rating.fields())


def with_rating(fields: dict[str, Any], rating: dict[str, Any]) -> dict[str, Any]:
    """The example's own fields, then the rating's; the rating's go under RATING_PREFIX when any of their names
    is taken by the example (a user's `score` or `model` column is kept as it was)."""
    if any(k in fields for k in rating):
        return {**fields, **{RATING_PREFIX + k: v for k, v in rating.items()}}
    return {**fields, **rating}


def invalid_row(bad: InvalidRow, judge_id: str, prompt_version: str) -> dict[str, Any]:
    """The row of an input row that could not be read as an example: where it is and why, status invalid_input."""
    return {
        "id": None,
        "row": bad.row,
        "field": bad.field,
        "score": None,
        "status": "invalid_input",
        "judge": judge_id,
        "prompt_version": prompt_version,
        "explanation": bad.reason,
        "raw": None,
        "flags": [],
    }


def rating_field(row: dict[str, Any], name: str, default: Any = None) -> Any:
    """A rating field of a ratings-file row, wherever `row_of` put it."""
    if RATING_PREFIX + "status" in row:
        return row.get(RATING_PREFIX + name, default)
    return row.get(name, default)


def rating_view(row: dict[str, Any]) -> dict[str, Any]:
    """A ratings-file row as readers that show ratings want it: the rating's fields under their plain names
    (a user's field of the same name is left out of this view, never out of the file)."""
    if RATING_PREFIX + "status" not in row:
        return row
    view = {k: v for k, v in row.items() if not k.startswith(RATING_PREFIX) and k not in RATING_FIELDS}
    view.update((k[len(RATING_PREFIX) :], v) for k, v in row.items() if k.startswith(RATING_PREFIX))
    return view


def user_fields(row: dict[str, Any]) -> dict[str, Any]:
    """The user's own fields of a ratings-file row (the training format), exactly as they were read."""
    if RATING_PREFIX + "status" in row:
        return {k: v for k, v in row.items() if not k.startswith(RATING_PREFIX)}
    names = RATING_FIELDS + (IFD_FIELD,) if str(row.get("judge") or "").startswith("ifd:") else RATING_FIELDS
    return {k: v for k, v in row.items() if k not in names}


def rating_of(row: dict[str, Any]) -> RowRating:
    """The typed rating of a ratings-file row (an invalid row's too: id None, status invalid_input)."""
    f = rating_view(row)
    return RowRating(
        f.get("id"),
        f.get("row"),
        f.get("score"),
        str(f.get("status") or ""),
        str(f.get("judge") or ""),
        str(f.get("prompt_version") or ""),
        str(f.get("model") or ""),
        f.get("explanation"),
        f.get("raw"),
        f.get("probs"),
        f.get("label_mass"),
        list(f.get("flags") or []),
        f.get(IFD_FIELD) if str(f.get("judge") or "").startswith("ifd:") else None,
    )
