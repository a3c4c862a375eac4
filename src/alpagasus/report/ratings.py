"""The report's input: the rows of a ratings file (`alpagasus rate` output), checked enough that the counts
mean something, and what a row is to the report (rated or not, its sample). A row is the input's row in its
own format (Alpaca, messages, ShareGPT...) plus the rating's fields: the sample is read through `formats`, and
the report reads only its views (prompt, response, turns), never a format's field names.

The report never holds the file: `iter_ratings` streams checked rows for one pass that keeps compact columns
(`report.scan`), and `read_lines` re-reads only the few rows the page shows, by line number."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from alpagasus.data import DataError, iter_objects
from alpagasus.formats import example_of
from alpagasus.ratings_file import rating_view
from alpagasus.records import Example


class ReportError(ValueError):
    """A ratings file the report cannot read; the message names the file, the line and the field."""


def iter_ratings(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) of a ratings JSONL file (whatever its suffix), one row at a time; the first bad
    line raises ReportError. Line numbers count every line, blank ones too, as `read_lines` does."""
    if not Path(path).is_file():
        raise ReportError(f"{path}: no such ratings file")
    try:
        for lineno, row in iter_objects(path, jsonl=True):
            row = rating_view(row)  # the rating's fields, wherever `rate` wrote them
            _check_row(row, path, lineno)
            yield lineno, row
    except DataError as e:  # a malformed line or a non-object; the report counts JSONL rows as lines
        msg, row_ = str(e), f"{path}, row "
        raise ReportError(f"{path}, line {msg[len(row_) :]}" if msg.startswith(row_) else msg) from None


def load_ratings(path: str | Path) -> list[dict[str, Any]]:
    """Every row of a ratings file in memory: for small files and tests (the report itself streams)."""
    return [row for _, row in iter_ratings(path)]


def file_signature(path: str | Path) -> tuple[int, int]:
    """Size and modification time: a second pass must read the file the first pass read."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def read_lines(path: str | Path, lines: Iterable[int], signature: tuple[int, int]) -> dict[int, dict[str, Any]]:
    """The rows on the given line numbers (as `iter_ratings` numbers them), parsing only those lines. The
    file must be the one the first pass read (same size and mtime), else the rows could be other rows."""
    wanted = set(lines)
    if not wanted:
        return {}
    changed = ReportError(f"{path}: the file changed while the report was reading it; run the report again")
    if file_signature(path) != signature:
        raise changed
    got: dict[int, dict[str, Any]] = {}
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if lineno not in wanted:
                continue
            text = raw.decode("utf-8", "surrogateescape")  # as iter_jsonl decodes, so the text is the same
            try:
                row = json.loads(text.removeprefix("\ufeff") if lineno == 1 else text)
            except json.JSONDecodeError:
                raise changed from None
            if not isinstance(row, dict):
                raise changed
            got[lineno] = rating_view(row)
            if len(got) == len(wanted):
                break
    if len(got) != len(wanted) or file_signature(path) != signature:
        raise changed
    return got


def _check_row(row: dict[str, Any], path: str | Path, lineno: int) -> None:
    where = f"{path}, line {lineno}, field"
    status = row.get("status")
    if not isinstance(status, str):
        raise ReportError(f"{where} 'status': missing or not a string (is this an `alpagasus rate` output?)")
    score = row.get("score")
    if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float)) or math.isnan(score)):
        raise ReportError(f"{where} 'score': must be a number or null, got {score!r}")
    flags = row.get("flags")
    if flags is not None and not (isinstance(flags, list) and all(isinstance(x, str) for x in flags)):
        raise ReportError(f"{where} 'flags': must be a list of strings, got {flags!r}")


def is_rated(row: dict[str, Any]) -> bool:
    return row.get("status") == "ok" and row.get("score") is not None


def row_sample(row: dict[str, Any]) -> Example | None:
    """The sample a ratings row holds, read in its own format (detected from the row; its rating fields
    ignored); None for a row that holds none (invalid input)."""
    ex = example_of(row)
    return ex if isinstance(ex, Example) else None


def sample_text(ex: Example | None) -> str:
    """The sample's text as written, for keyword search: each turn's content (an Alpaca row: the instruction,
    a blank line and the input when there is one, then the output), one per line."""
    return "" if ex is None else "\n".join(t.content for t in ex.messages)


def sample_parts(ex: Example) -> list[tuple[str, str]]:
    """(label, text) of what the page shows of a sample: one exchange without a system prompt (every Alpaca
    row) by the rubric's fields (instruction, input, output), any other conversation turn by turn, then its
    judged response."""
    if [t.role for t in ex.messages] == ["user", "assistant"]:
        return list(ex.prompt_fields().items())
    return [*((t.role, t.content) for t in ex.context), ("response", ex.response)]
