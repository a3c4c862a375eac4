"""Checks every format's reader shares: text a file can hold, and values that can be written back as UTF-8."""

from __future__ import annotations

from typing import Any


def bad_text(value: str) -> str | None:
    """Why a text cannot be kept (a NUL, a lone surrogate), or None."""
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains invalid UTF-8 (or a lone surrogate)"
    return None


def encodable(value: Any) -> bool:
    """Whether a value (nested lists and objects too) can be written as UTF-8."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
    elif isinstance(value, dict):
        return all(encodable(k) and encodable(v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        return all(encodable(v) for v in value)
    return True


def unwritable_column(record: dict[str, Any], skip: set[str]) -> str | None:
    """The first other column that cannot be written back as UTF-8 (its name made printable), or None."""
    for k, v in record.items():
        if k not in skip and (not encodable(k) or not encodable(v)):
            return str(k).encode("utf-8", "backslashreplace").decode()
    return None


def type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__
