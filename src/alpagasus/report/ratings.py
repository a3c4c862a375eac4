"""The report's input: the rows of a ratings file (`alpagasus rate` output), checked enough that the counts
mean something, and what a row is to the report (rated or not, its text fields)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from alpagasus.data import DataError, iter_objects

EXAMPLE_FIELDS = ("instruction", "input", "output")   # an example's text, as rated


class ReportError(ValueError):
    """A ratings file the report cannot read; the message names the file, the line and the field."""


def load_ratings(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ratings JSONL file (whatever its suffix); the first bad line raises ReportError."""
    if not Path(path).is_file():
        raise ReportError(f"{path}: no such ratings file")
    rows = []
    try:
        for lineno, row in iter_objects(path, jsonl=True):
            _check_row(row, path, lineno)
            rows.append(row)
    except DataError as e:  # a malformed line or a non-object; the report counts JSONL rows as lines
        msg, row = str(e), f"{path}, row "
        raise ReportError(f"{path}, line {msg[len(row):]}" if msg.startswith(row) else msg) from None
    return rows


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
