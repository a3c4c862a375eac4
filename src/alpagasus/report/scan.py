"""One pass over a ratings file, keeping only what the report's numbers need, in flat columns.

A row dict of `alpagasus rate` output costs a few kilobytes in Python; the report needs a score, a length, a
keyword bit and a line number per rated row (about 25 bytes), counters, and a bounded number of whole rows (the
first problems and flagged rows the page lists). Rows shown as examples or as the largest disagreements are
read again by line number afterwards (`Scan.rows_at`), so a 200k-row file never sits in memory.
"""

from __future__ import annotations

from array import array
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

from alpagasus.records import Example
from alpagasus.report.ratings import file_signature, is_rated, iter_ratings, read_lines, row_sample, sample_text

SHOWN = 50  # rows the page lists per problem status, and flagged rows
PROBLEM_STATUSES = ("unparsed", "error", "invalid_input", "empty")


def keyword_hits(sample: dict[str, Any] | Example | None, keywords: Sequence[str]) -> list[bool]:
    """Which keywords occur in the sample's text (a ratings row's sample, read in its own format): its turns as
    written, joined by newlines (`ratings.sample_text`), so a keyword with a newline can span two turns."""
    ex = row_sample(sample) if isinstance(sample, dict) else sample
    text = sample_text(ex)
    return [k in text for k in keywords]


def has_keyword(row: dict[str, Any], keywords: Sequence[str]) -> bool:
    return any(keyword_hits(row, keywords))


class Scan:
    """The report's view of one ratings file, filled row by row with `add` (rows in file order).

    Per rated row (status ok with a score), aligned: `scores`, `lengths` (characters of the response), `kw` (1 when
    any keyword occurs), `lines` (where to read the row again). Per example id, only when `ids` is asked (for
    `--compare`): `ids` maps the id to a slot, in order of first appearance, and `id_score` / `id_line` hold
    the score and line of the id's last rated row; that is the old dict-of-rows semantics, where a later row
    with the same id replaced the earlier one but kept its place.
    """

    def __init__(self, keywords: Sequence[str] = (), ids: bool = False) -> None:
        self.keywords = list(keywords)
        self.total = 0
        self.status: Counter[Any] = Counter()  # by the rows' status (a string in a checked file)
        self.flagged = 0
        self.judge: dict[str, Any] = {}  # judge and prompt_version of the first row naming a judge
        self.scores = array("d")
        self.lengths = array("q")
        self.kw = bytearray()
        self.lines = array("q")
        self.masses = array("d")  # label_mass of logprob replies (any status), if given
        self.text_rows = 0  # rows with text: every status but invalid_input
        self.keyword_rows = 0  # ... of which mention a keyword
        self.per_keyword = [0] * len(self.keywords)
        self.problems: dict[str, list[dict[str, Any]]] = {s: [] for s in PROBLEM_STATUSES}
        self.flagged_rows: list[dict[str, Any]] = []
        self.ids: dict[Any, int] | None = {} if ids else None
        self.id_score = array("d")
        self.id_line = array("q")
        self._path: Path | None = None  # where rows_at reads rows again ...
        self._signature = (0, 0)
        self._rows: Sequence[dict[str, Any]] | None = None  # ... or the rows, when they were given in memory

    def add(self, row: dict[str, Any], line: int) -> None:
        self.total += 1
        status = row.get("status")
        self.status[status] += 1
        if not self.judge and row.get("judge"):
            self.judge = {k: row.get(k) for k in ("judge", "prompt_version")}
        if isinstance(row.get("label_mass"), (int, float)):
            self.masses.append(float(row["label_mass"]))
        if row.get("flags"):
            self.flagged += 1
            if len(self.flagged_rows) < SHOWN:
                self.flagged_rows.append(row)
        if status in self.problems and len(self.problems[status]) < SHOWN:
            self.problems[status].append(row)
        hit = False
        rated = is_rated(row)
        # the sample, read in its own format: only where a keyword or a length needs it (invalid input has none)
        ex = row_sample(row) if status != "invalid_input" and (self.keywords or rated) else None
        if status != "invalid_input":  # invalid input has no text: in neither keyword group
            self.text_rows += 1
            hits = keyword_hits(ex, self.keywords) if self.keywords else []
            for k, h in enumerate(hits):
                self.per_keyword[k] += h
            hit = any(hits)
            self.keyword_rows += hit
        if not rated:
            return
        score = float(row["score"])
        self.scores.append(score)
        self.lengths.append(len(ex.response) if ex is not None else 0)
        self.kw.append(hit)
        self.lines.append(line)
        if self.ids is not None and row.get("id"):
            self._add_id(row["id"], score, line)

    def _add_id(self, ident: Any, score: float, line: int) -> None:
        slot = self.ids.setdefault(ident, len(self.id_score))  # type: ignore[union-attr]
        if slot == len(self.id_score):
            self.id_score.append(score)
            self.id_line.append(line)
        else:
            self.id_score[slot], self.id_line[slot] = score, line

    def rows_at(self, lines: Iterable[int]) -> dict[int, dict[str, Any]]:
        """The rows on these lines (file line numbers, or list positions for rows given in memory)."""
        if self._rows is not None:
            return {i: self._rows[i] for i in set(lines)}
        if self._path is None:
            return {}
        return read_lines(self._path, lines, self._signature)

    def with_keyword(self) -> array:
        """Scores of the rated rows that mention a keyword, in file order."""
        return array("d", (x for x, h in zip(self.scores, self.kw) if h))

    def without_keyword(self) -> array:
        return array("d", (x for x, h in zip(self.scores, self.kw) if not h))


def scan_file(path: str | Path, keywords: Sequence[str] = (), ids: bool = False) -> Scan:
    """One streaming pass over a ratings file; rows are checked as they come (ReportError on the first bad
    line). The file's size and mtime are kept so that reading rows again can tell whether it changed."""
    scan = Scan(keywords, ids)
    rows = iter_ratings(path)
    first = next(rows, None)  # iter_ratings checks the file exists before the signature is taken
    scan._path, scan._signature = Path(path), file_signature(path)
    if first is not None:
        scan.add(first[1], first[0])
    for lineno, row in rows:
        scan.add(row, lineno)
    return scan


def scan_rows(rows: Sequence[dict[str, Any]], keywords: Sequence[str] = (), ids: bool = False) -> Scan:
    """The same view of rows already in memory; their positions stand for line numbers."""
    scan = Scan(keywords, ids)
    scan._rows = rows
    for i, row in enumerate(rows):
        scan.add(row, i)
    return scan
