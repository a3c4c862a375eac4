"""Conversations: OpenAI's `messages` ([{"role", "content"}, ...]) and ShareGPT's `conversations`
([{"from", "value"}, ...]), with system prompts and several turns. The judged response is the last turn, which
must be the assistant's; the turns before it are its context (docs/formats.md). Rows are written back exactly
as read. In CSV or Parquet the column may hold the list as JSON text."""

from __future__ import annotations

import json
from typing import Any, Mapping

from alpagasus.formats.checks import bad_text, type_name, unwritable_column
from alpagasus.records import Example, InvalidRow, Turn


class ChatFormat:
    """A list of turns in one column; `roles` maps the file's role names onto system/user/assistant."""

    name = "messages"
    column = "messages"
    role_key = "role"
    content_key = "content"
    # OpenAI's newer `developer` role is its system prompt; tool and function turns are not judged data
    roles: Mapping[str, str] = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
    role_help = "system/user/assistant"

    def read(
        self, record: Any, row: int, file: str, field_map: Mapping[str, str] | None = None, allow_empty: bool = False
    ) -> Example | InvalidRow:
        """One row as an Example, or an InvalidRow naming the field (`messages[3].role`) and what is wrong."""
        if not isinstance(record, dict):
            return InvalidRow(file, row, None, f"expected an object, got {type(record).__name__}")
        turns = self._turns(record, row, file)
        if isinstance(turns, InvalidRow):
            return turns
        problem = self._shape(turns)
        if problem is not None:
            return InvalidRow(file, row, self.column, problem)
        bad = unwritable_column(record, {self.column})
        if bad is not None:
            return InvalidRow(file, row, bad, "contains invalid UTF-8 (or a lone surrogate)")
        extra = {k: v for k, v in record.items() if k != self.column}
        ex = Example(messages=tuple(turns), format=self.name, row_data=dict(record), row=row, extra=extra)
        if ex.empty_field and not allow_empty:
            return InvalidRow(file, row, self.column, f"the {ex.empty_field} is empty")
        return ex

    def _turns(self, record: Mapping[str, Any], row: int, file: str) -> list[Turn] | InvalidRow:
        col = self.column
        if col not in record:
            return InvalidRow(file, row, col, f"missing (a {self.name} row holds a list of turns in `{col}`)")
        value = record[col]
        if isinstance(value, str):  # CSV, or a Parquet string column: the list as JSON text
            try:
                value = json.loads(value)
            except ValueError as e:
                return InvalidRow(file, row, col, f"is text but not a JSON list of turns ({e})")
        if not isinstance(value, (list, tuple)):
            return InvalidRow(file, row, col, f"must be a list of turns, got {type_name(value)}")
        turns: list[Turn] = []
        for i, t in enumerate(value):
            where = f"{col}[{i}]"
            if not isinstance(t, Mapping):
                return InvalidRow(file, row, where, f"must be an object {{{self.role_key}, {self.content_key}}}")
            name = t.get(self.role_key)
            role = self.roles.get(name) if isinstance(name, str) else None
            if role is None:
                return InvalidRow(file, row, f"{where}.{self.role_key}", f"{name!r} is not {self.role_help}")
            content = _text(t.get(self.content_key))
            if content is None:
                got = type_name(t.get(self.content_key)) if self.content_key in t else "nothing"
                return InvalidRow(file, row, f"{where}.{self.content_key}", f"must be text, got {got}")
            problem = bad_text(content)
            if problem:
                return InvalidRow(file, row, f"{where}.{self.content_key}", problem)
            turns.append(Turn(role, content))
        return turns

    def _shape(self, turns: list[Turn]) -> str | None:
        """Why these turns hold nothing to judge, or None."""
        if not turns:
            return "has no turns"
        if not any(t.role == "assistant" for t in turns):
            return "has no assistant turn: nothing to judge (the judged response is the last assistant turn)"
        if turns[-1].role != "assistant":
            return (
                f"ends in a {turns[-1].role} turn: nothing answers it (the judged response is the last turn, "
                "which must be the assistant's)"
            )
        if not any(t.role == "user" for t in turns):
            return "has no user turn: no prompt to judge the answer against"
        return None

    def write(self, example: Example) -> dict[str, Any]:
        """The row exactly as read."""
        return dict(example.row_data)


class ShareGPTFormat(ChatFormat):
    """ShareGPT's `conversations`: `from` human/gpt/system (and the other names exports use), `value`."""

    name = "sharegpt"
    column = "conversations"
    role_key = "from"
    content_key = "value"
    roles = {
        "system": "system",
        "human": "user",
        "user": "user",
        "gpt": "assistant",
        "assistant": "assistant",
        "chatgpt": "assistant",
        "bard": "assistant",
        "bing": "assistant",
        "model": "assistant",
    }
    role_help = "human/gpt/system"


def _text(content: Any) -> str | None:
    """A turn's text: a string, or OpenAI's list of text parts ([{"type": "text", "text": ...}]) joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, Mapping) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
    ):
        return "".join(p["text"] for p in content)
    return None
