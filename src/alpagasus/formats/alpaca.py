"""Alpaca and Dolly rows: an instruction, an optional input (Dolly: `context`) and an output (Dolly: `response`),
other columns kept. `--field ours=theirs` maps other column names onto the three."""

from __future__ import annotations

from typing import Any, Mapping

from alpagasus.formats.checks import bad_text, type_name, unwritable_column
from alpagasus.records import CORE_FIELDS, Example, InvalidRow

# Column names other datasets use for our three fields (applied only when our own name is absent).
ALIASES = {"input": ("context",), "output": ("response",), "instruction": ("prompt",)}


class AlpacaFormat:
    """Rows {instruction, input, output}; written back as they are today: the three fields under our names
    (whatever column they came from), then the other columns."""

    name = "alpaca"

    def read(
        self, record: Any, row: int, file: str, field_map: Mapping[str, str] | None = None, allow_empty: bool = False
    ) -> Example | InvalidRow:
        """Validate one raw record; never raises for bad data. With `allow_empty`, an empty instruction or output
        is an Example (`empty_field` says which): bad data to rate or filter, not a broken row."""
        if not isinstance(record, dict):
            return InvalidRow(file, row, None, f"expected an object, got {type(record).__name__}")
        values: dict[str, str] = {}
        used: set[str] = set()
        for name in CORE_FIELDS:
            column = _column(record, name, field_map or {})
            used.add(column)
            if column not in record:
                if name == "input":
                    values[name] = ""
                    continue
                return InvalidRow(file, row, column, "missing")
            value = record[column]
            if value is None and name == "input":
                value = ""
            if not isinstance(value, str):
                return InvalidRow(file, row, column, f"must be a string, got {type_name(value)}")
            problem = bad_text(value)
            if problem:
                return InvalidRow(file, row, column, problem)
            if name != "input" and not value.strip() and not allow_empty:
                return InvalidRow(file, row, column, "is empty")
            values[name] = value
        bad = unwritable_column(record, used)  # other columns are carried to the outputs: writable as UTF-8
        if bad is not None:
            return InvalidRow(file, row, bad, "contains invalid UTF-8 (or a lone surrogate)")
        extra = {k: v for k, v in record.items() if k not in used}
        instruction, input, output = (values[n] for n in CORE_FIELDS)
        return Example.alpaca(instruction, input, output, extra=extra, row=row, format=self.name, row_data=record)

    def write(self, example: Example) -> dict[str, Any]:
        return example.fields()


class DollyFormat(AlpacaFormat):
    """databricks-dolly-15k's rows {instruction, context, response, category}: Alpaca's reader (its aliases map
    context and response), written back like Alpaca rows."""

    name = "dolly"


def _column(record: Mapping[str, Any], name: str, field_map: Mapping[str, str]) -> str:
    """The column that holds our field `name`: the mapped one, else ours, else a known alias that is there."""
    column = field_map.get(name)
    if column is not None:
        return column
    if name in record:
        return name
    return next((a for a in ALIASES.get(name, ()) if a in record), name)
