"""Datasets in and out: reading and validating any format into Examples (read.py; JSON in bounded pieces:
jsontext.py), writing atomically (write.py). Import from here; the modules are the layout, not the interface."""

from alpagasus.data.jsontext import MAX_DEPTH, MAX_ROW_BYTES
from alpagasus.data.read import (
    ALIASES,
    DataError,
    ReadResult,
    bundled_sample,
    iter_examples,
    iter_jsonl,
    iter_objects,
    iter_records,
    parse_field_map,
    read_examples,
    read_jsonl,
    read_table,
    stream_examples,
    to_example,
)
from alpagasus.data.write import atomic_writer, write_json, write_jsonl, write_rows

__all__ = [
    "MAX_DEPTH",
    "MAX_ROW_BYTES",
    "DataError",
    "ReadResult",
    "ALIASES",
    "bundled_sample",
    "iter_examples",
    "iter_jsonl",
    "iter_objects",
    "iter_records",
    "parse_field_map",
    "read_examples",
    "read_jsonl",
    "read_table",
    "stream_examples",
    "to_example",
    "atomic_writer",
    "write_json",
    "write_jsonl",
    "write_rows",
]
