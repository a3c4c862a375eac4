"""Dataset formats: how a row of a file becomes an `Example` and is written back (docs/formats.md).

A format is one module of this package and one line in FORMATS: `read(record, row, file, field_map,
allow_empty) -> Example | InvalidRow` and `write(example) -> dict` (the row as it goes back to a file). Every
stage outside this package reads a sample through its views (`Example.prompt`, `.response`, `.prompt_fields()`),
never a format's field names.

    names()                 "alpaca", "dolly", "messages", "sharegpt"
    get(name)               the Format
    detect(row)             a row's format from its keys, or None
    example_of(row)         the Example in a row of a ratings or selection file (rating columns ignored)
    render_context(turns)   the text a judge sees in the instruction's place for a conversation
    training_messages(ex)   [{"role", "content"}, ...] for chat training
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol

from alpagasus.formats.alpaca import AlpacaFormat, DollyFormat
from alpagasus.formats.messages import ChatFormat, ShareGPTFormat
from alpagasus.ratings_file import user_fields
from alpagasus.records import Example, InvalidRow, render_context


class Format(Protocol):
    name: str

    def read(
        self, record: Any, row: int, file: str, field_map: Mapping[str, str] | None = None, allow_empty: bool = False
    ) -> Example | InvalidRow: ...

    def write(self, example: Example) -> dict[str, Any]: ...


FORMATS: dict[str, Format] = {f.name: f for f in (AlpacaFormat(), DollyFormat(), ChatFormat(), ShareGPTFormat())}


def names() -> list[str]:
    return list(FORMATS)


def get(name: str) -> Format:
    """The format called `name`; an unknown name is a ValueError listing the known ones."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown format {name!r}; one of {', '.join(FORMATS)}") from None


def _holds_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) or (isinstance(value, str) and value.lstrip().startswith("["))


def detect(row: Any) -> str | None:
    """A row's format from its keys: a list in `messages` (OpenAI) or `conversations` (ShareGPT); an
    instruction (or prompt) with an output or input (Alpaca) or with a response or context (Dolly)."""
    if not isinstance(row, Mapping):
        return None
    # plain key tests, no generators: select calls this once a row of a ratings file
    if "messages" in row and _holds_list(row["messages"]):
        return "messages"
    if "conversations" in row and _holds_list(row["conversations"]):
        return "sharegpt"
    if "instruction" in row or "prompt" in row:
        if "output" in row or "input" in row:
            return "alpaca"
        if "response" in row or "context" in row:
            return "dolly"
    return None


def example_of(
    row: Mapping[str, Any], format: str | None = None, file: str = "<row>", number: int = 0
) -> Example | InvalidRow:
    """The Example a row of a ratings or selection file holds (its rating columns ignored; its format detected
    unless named; an empty part allowed, `empty_field` says which), or an InvalidRow."""
    rec = user_fields(dict(row))
    return get(format or detect(rec) or "alpaca").read(rec, number, file, None, allow_empty=True)


def training_messages(example: Example) -> list[dict[str, str]]:
    """The conversation as chat templates take it; an Alpaca row is one user turn (instruction, blank line,
    input) and the output."""
    return [{"role": t.role, "content": t.content} for t in example.messages]


__all__ = [
    "FORMATS",
    "Format",
    "names",
    "get",
    "detect",
    "example_of",
    "render_context",
    "training_messages",
    "AlpacaFormat",
    "DollyFormat",
    "ChatFormat",
    "ShareGPTFormat",
]
