"""The ratings file: a view of the store in input order, and the shortcut that lets a finished run's rerun
return at once when nothing it depends on has changed."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Iterable, Iterator

from alpagasus.data import bundled_sample
from alpagasus.engine.loop import chunked
from alpagasus.rate.injection import flags
from alpagasus.rate.loop import RateSummary
from alpagasus.records import IFD_FIELD, Example, InvalidRow, Rating, with_rating
from alpagasus.store import Store


def output_rows(
    examples: Iterable[Example], store: Store, judge_id: str, prompt_version: str, invalid: Iterable[InvalidRow] = ()
) -> Iterator[dict]:
    """The example's own fields, untouched, + the rating + `flags` (possible prompt injection in the data, see
    injection.py; [] when clean), whatever score the row got; then one row per invalid input row. A rating
    field whose name the example already uses is written as `alpagasus_<name>` (records.with_rating)."""
    for batch in chunked(examples, 1000):
        got = store.get_many([e.id for e in batch], judge_id, prompt_version)
        for e in batch:
            r = got.get(e.id)
            fields = e.fields()
            if r is not None:
                status, explanation = r.status, r.explanation
            elif e.empty_field:
                status = "empty"
                explanation = (
                    f"the {e.empty_field} is empty: not sent to the judge, never selected (--rate-empty rates it)"
                )
            else:
                status, explanation = "error", "not rated (run interrupted?)"
            yield with_rating(
                fields,
                dict(
                    id=e.id,
                    row=e.row,
                    score=r.score if r else None,
                    status=status,
                    judge=judge_id,
                    prompt_version=prompt_version,
                    model=r.model if r else "",
                    explanation=explanation,
                    raw=r.raw if r else None,
                    probs=r.probs if r else None,
                    label_mass=(r.extra or {}).get("label_mass") if r else None,
                    flags=flags(fields),
                    **_ifd_column(judge_id, r),
                ),
            )
    for bad in invalid:
        yield {
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


def _ifd_column(judge_id: str, r: Rating | None) -> dict:
    """IFD judges' raw figures (IFD, both losses, the `ifd_ge_1` mark; judges/ifd.py) as the `ifd` column."""
    if not judge_id.startswith("ifd:"):
        return {}
    return {IFD_FIELD: (r.extra or {}).get("ifd") if r is not None else None}


class RatingsView:
    """When a finished run's input file, options, output file and the store's replies for this judge and
    prompt are all as that run left them, a rerun has nothing to do and can say so without reading a million
    rows (each part is checked: file sizes and mtimes, reply count and newest write). Inputs that are not plain
    files are always read."""

    def __init__(self, input: str | Path, output: str | Path, store: Store, judge_id: str, version: str, options: list):
        self.store, self.judge_id, self.version, self.options = store, judge_id, version, options
        self.key = f"view:{Path(output).resolve()}"
        src = str(input)
        path = bundled_sample(src.removeprefix("sample:")) if src.startswith("sample:") else Path(src)
        self.input = path if path.is_file() else None
        self.output = Path(output)

    def state(self) -> list | None:
        if self.input is None or not self.output.is_file():
            return None
        a, b = self.input.stat(), self.output.stat()
        return [
            str(self.input.resolve()),
            a.st_size,
            a.st_mtime_ns,
            b.st_size,
            b.st_mtime_ns,
            self.options,
            self.store.replies_sig(self.judge_id, self.version),
        ]

    def unchanged(self) -> RateSummary | None:
        saved, now = self.store.get_meta(self.key), self.state()
        if not saved or now is None or json.loads(json.dumps(now)) != saved["state"]:
            return None
        s = saved["summary"]
        return RateSummary(
            judge=self.judge_id,
            prompt_version=self.version,
            rows=s["rows"],
            duplicates=s["duplicates"],
            invalid=[InvalidRow(**d) for d in s["invalid"]],
            already_rated=s["unique"] - s.get("empty", 0),
            empty=s.get("empty", 0),
            flagged=s["flagged"],
            note="nothing to do: the ratings file is up to date with the input and the store",
        )

    def remember(self, s: RateSummary) -> None:
        state = self.state()
        if state is None:
            return
        with contextlib.suppress(sqlite3.Error, OSError):  # only a shortcut for the next run: never an error
            self.store.set_meta(
                self.key,
                {
                    "state": state,
                    "summary": {
                        "rows": s.rows,
                        "unique": s.unique,
                        "duplicates": s.duplicates,
                        "flagged": s.flagged,
                        "empty": s.empty,
                        "invalid": [vars(x) for x in s.invalid],
                    },
                },
            )
