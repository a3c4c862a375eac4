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
from alpagasus.rate.summary import RateSummary
from alpagasus.ratings_file import invalid_row, row_of, stored_rating
from alpagasus.records import Example, InvalidRow
from alpagasus.store import Store


def output_rows(
    examples: Iterable[Example], store: Store, judge_id: str, prompt_version: str, invalid: Iterable[InvalidRow] = ()
) -> Iterator[dict]:
    """The example's own fields, untouched, + the rating + `flags` (possible prompt injection in the data, see
    injection.py; [] when clean), whatever score the row got; then one row per invalid input row. The row's
    shape is ratings_file's (a rating field whose name the example already uses goes under `alpagasus_`)."""
    for batch in chunked(examples, 1000):
        got = store.get_many([e.id for e in batch], judge_id, prompt_version)
        for e in batch:
            rating = stored_rating(e, got.get(e.id), judge_id, prompt_version)
            rating.flags = flags(e)
            yield row_of(e.fields(), rating)
    for bad in invalid:
        yield invalid_row(bad, judge_id, prompt_version)


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
        self.source = path if path.is_file() else None
        self.target = Path(output)

    def state(self) -> list | None:
        if self.source is None or not self.target.is_file():
            return None
        a, b = self.source.stat(), self.target.stat()
        return [
            str(self.source.resolve()),
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
            up_to_date=True,
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
