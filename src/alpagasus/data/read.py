"""Datasets in: JSON, JSONL, CSV/TSV, Parquet, Hugging Face datasets; validation into Examples, each row read
in the file's format (formats/: detected from the first rows that show one, or named; docs/formats.md).

The one home for reading records: `iter_records` (any format, examples), `iter_jsonl` (JSONL whatever the
suffix), `iter_objects` (plain objects: ratings, answers, questions), `read_jsonl` (our own outputs).
Readers stream rows so memory does not grow with the file, and JSON ones hold at most `max_row_bytes` of one
row whatever a line holds (data/jsontext.py); every bad row becomes an InvalidRow that names the file, the row
and the field (or the size, or the nesting), so valid rows are never lost because of invalid ones.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from alpagasus import formats
from alpagasus.data.jsontext import MAX_ROW_BYTES, ListReader, bounded_lines, parse_line, too_big
from alpagasus.formats.alpaca import ALIASES  # noqa: F401  (re-exported: alpagasus.data.ALIASES)
from alpagasus.records import CORE_FIELDS, Example, InvalidRow

DETECT_ROWS = 1000  # rows read to find the format when none is named; then Alpaca (whose errors name the fields)


class DataError(ValueError):
    """Bad input data; the message names the file, the row and the field."""


@dataclass
class ReadResult:
    examples: list[Example] = field(default_factory=list)
    invalid: list[InvalidRow] = field(default_factory=list)
    duplicates: int = 0
    rows: int = 0
    format: str | None = None  # the format the valid rows were read in


def parse_field_map(specs: Iterable[str] | None) -> dict[str, str]:
    """["instruction=question", ...] -> {"instruction": "question"}."""
    out: dict[str, str] = {}
    for spec in specs or ():
        ours, sep, theirs = spec.partition("=")
        if not sep or ours not in CORE_FIELDS or not theirs:
            raise DataError(f"--field {spec!r}: expected one of {'/'.join(CORE_FIELDS)}=COLUMN")
        out[ours] = theirs
    return out


def to_example(
    record: Any,
    row: int,
    source: str,
    field_map: Mapping[str, str] | None = None,
    allow_empty: bool = False,
    format: str | None = None,
) -> Example | InvalidRow:
    """Validate one raw record in `format` (detected from its keys when None; Alpaca with a field map); never
    raises for bad data. With `allow_empty`, an empty part is an Example (`empty_field` says which)."""
    name = format or ("alpaca" if field_map else formats.detect(record) or "alpaca")
    return formats.get(name).read(record, row, source, field_map, allow_empty)


def iter_records(path: str | Path, max_row_bytes: int | None = None) -> Iterator[tuple[int, Any]]:
    """(row, record) pairs; a record that cannot be parsed is yielded as an InvalidRow, and so is a JSON or
    JSONL row above `max_row_bytes` (None: no limit), without ever holding it whole."""
    p = Path(path)
    src = str(path)
    if src.startswith("sample:"):
        p = bundled_sample(src.removeprefix("sample:"))
    if p.is_dir():
        yield from _sized(_iter_hf_dir(p), src, max_row_bytes)
        return
    if not p.exists():
        if "/" in src and not src.startswith((".", "/")):
            yield from _sized(_iter_hf_hub(src), src, max_row_bytes)
            return
        raise DataError(f"{src}: no such file")
    suffixes = [s.lower() for s in p.suffixes]
    suffix = suffixes[-2] if suffixes[-1:] == [".gz"] and len(suffixes) > 1 else "".join(suffixes[-1:])
    if suffix in (".parquet", ".pq"):
        yield from _sized(_iter_parquet(p), src, max_row_bytes)
    elif suffix in (".csv", ".tsv"):
        yield from _sized(_iter_csv(p, delimiter="\t" if suffix == ".tsv" else ","), src, max_row_bytes)
    elif suffix in (".jsonl", ".ndjson") or (suffix == ".json" and _first_char(p) not in "["):
        yield from iter_jsonl(p, max_row_bytes)
    elif suffix == ".json":
        yield from _iter_json_list(p, max_row_bytes)
    else:
        raise DataError(
            f"{src}: unknown format (use .json, .jsonl, .csv, .tsv (each optionally .gz), .parquet or a "
            "datasets directory)"
        )


def _sized(rows: Iterator[tuple[int, Any]], src: str, limit: int | None) -> Iterator[tuple[int, Any]]:
    """Rows of a table reader, one above `limit` bytes (its text, as UTF-8) made an InvalidRow. These readers
    hold a row before it can be measured: only JSON and JSONL rows are bounded while being read."""
    for row, rec in rows:
        if limit is not None and isinstance(rec, dict):
            chars = sum(len(v) for v in rec.values() if isinstance(v, str))
            if chars * 4 > limit:  # UTF-8: 1 to 4 bytes a character, so below a quarter it fits
                size = sum(len(v.encode("utf-8", "surrogateescape")) for v in rec.values() if isinstance(v, str))
                if size > limit:
                    rec = too_big(src, row, size, limit)
        yield row, rec


def bundled_sample(name: str) -> Path:
    """A dataset shipped in the package (see samples/README.md): `sample:alpaca_300`."""
    from importlib import resources

    base = Path(str(resources.files("alpagasus").joinpath("samples")))
    name = {"alpaca": "alpaca_300"}.get(name, name)
    path = next((p for p in (base / f"{name}.json", base / f"{name}.json.gz") if p.exists()), None)
    if path is None:
        known = ", ".join(sorted(f.name.split(".")[0] for f in base.glob("*.json*")))
        raise DataError(f"sample:{name}: no such bundled sample (known: {known})")
    return path


def _open_bytes(path: str | Path) -> Any:
    """A binary reader of the file, decompressed when its name ends in .gz (a shipped or downloaded dump)."""
    return gzip.open(path, "rb") if str(path).lower().endswith(".gz") else open(path, "rb")


def _first_char(p: Path) -> str:
    with _open_bytes(p) as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head[:1].decode("latin-1") or "["


def iter_jsonl(path: str | Path, max_row_bytes: int | None = None) -> Iterator[tuple[int, Any]]:
    """(line number, value) of each non-blank line of a JSONL file, whatever its suffix; a line that is not
    JSON, nests too deep or is longer than `max_row_bytes` (never held whole) comes as an InvalidRow, so the
    lines after it are still read."""
    with _open_bytes(path) as f:
        for lineno, raw in bounded_lines(f, max_row_bytes):
            if isinstance(raw, int):
                yield lineno, too_big(str(path), lineno, raw, max_row_bytes or 0)
                continue
            if not raw.strip():
                continue
            text = raw.decode("utf-8", "surrogateescape")  # invalid bytes surface as a field error
            if lineno == 1:
                text = text.removeprefix("\ufeff")  # a byte-order mark is not part of the first row
            yield lineno, parse_line(text, str(path), lineno)


def _iter_json_list(p: Path, max_row_bytes: int | None) -> Iterator[tuple[int, Any]]:
    """The items of a JSON list, decoded one at a time (memory: one item and one chunk, not the file)."""
    with _open_bytes(p) as f:
        try:
            yield from ListReader(f, str(p), max_row_bytes)
        except ValueError as e:  # bad JSON: the message names the file, the line and the column
            raise DataError(str(e)) from None


def _iter_csv(p: Path, delimiter: str) -> Iterator[tuple[int, Any]]:
    csv.field_size_limit(sys.maxsize)
    with io.TextIOWrapper(_open_bytes(p), encoding="utf-8", errors="surrogateescape", newline="") as f:
        yield from enumerate(csv.DictReader(f, delimiter=delimiter), 1)


def _iter_parquet(p: Path) -> Iterator[tuple[int, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - depends on the install
        raise DataError(f"{p}: reading Parquet needs pyarrow (pip install 'alpagasus[data]')") from e
    row = 0
    for batch in pq.ParquetFile(p).iter_batches(batch_size=4096):
        for rec in batch.to_pylist():
            row += 1
            yield row, rec


def _iter_hf_dir(p: Path) -> Iterator[tuple[int, Any]]:
    try:
        import datasets
    except ImportError as e:  # pragma: no cover
        raise DataError(f"{p}: reading a datasets directory needs `datasets` (pip install 'alpagasus[data]')") from e
    try:
        ds = datasets.load_from_disk(str(p))
    except (FileNotFoundError, ValueError) as e:
        raise DataError(
            f"{p}: a directory, but not a dataset saved by `datasets` ({e}); give a .json, .jsonl, "
            ".csv or .parquet file"
        ) from None
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    yield from enumerate(ds, 1)


def _iter_hf_hub(name: str) -> Iterator[tuple[int, Any]]:
    try:
        import datasets
    except ImportError as e:  # pragma: no cover
        raise DataError(f"{name}: reading a hub dataset needs `datasets` (pip install 'alpagasus[data]')") from e
    repo, _, split = name.partition("@")
    try:
        ds = datasets.load_dataset(repo, split=split or "train")
    except Exception as e:  # no network, no such dataset, a gated one...: say what failed and what to do
        why = ([x for x in str(e).splitlines() if x.strip()] or [type(e).__name__])[0][:300]
        raise DataError(
            f"{name}: not a local file, and loading it as a Hugging Face hub dataset failed "
            f"({type(e).__name__}: {why}). Download it and give the local file (.json, .jsonl, .csv, "
            ".parquet or a `datasets` directory), or check the name and the network"
        ) from None
    yield from enumerate(ds, 1)


def iter_examples(
    path: str | Path,
    field_map: Mapping[str, str] | None = None,
    allow_empty: bool = False,
    max_row_bytes: int | None = MAX_ROW_BYTES,
    format: str | None = None,
) -> Iterator[Example | InvalidRow]:
    """Stream validated examples (or InvalidRow for bad rows, one above `max_row_bytes` among them) from a
    dataset file, all in one format: `format`, or the one the first rows show (`choose_format`)."""
    records = iter_records(path, max_row_bytes)
    name, records = choose_format(records, str(path), field_map, format)
    fmt = formats.get(name)
    for row, rec in records:
        yield rec if isinstance(rec, InvalidRow) else fmt.read(rec, row, str(path), field_map, allow_empty)


def choose_format(
    records: Iterator[tuple[int, Any]], src: str, field_map: Mapping[str, str] | None, format: str | None
) -> tuple[str, Iterator[tuple[int, Any]]]:
    """The format to read a file in, and its records (those looked at put back): a named one (checked), Alpaca
    when a field map is given (maps name Alpaca's fields), else the first row's among DETECT_ROWS that has one."""
    if format is not None:
        if format not in formats.names():
            raise DataError(f"--format {format!r}: unknown; one of {', '.join(formats.names())}")
        if field_map and format not in ("alpaca", "dolly"):
            raise DataError(f"--field maps Alpaca's fields; it does not go with --format {format} ({src})")
        return format, records
    if field_map:
        return "alpaca", records
    seen: list[tuple[int, Any]] = []
    found = None
    for row, rec in records:
        seen.append((row, rec))
        found = None if isinstance(rec, InvalidRow) else formats.detect(rec)
        if found is not None or len(seen) >= DETECT_ROWS:
            break
    return found or "alpaca", itertools.chain(seen, records)


def stream_examples(
    path: str | Path,
    field_map: Mapping[str, str] | None = None,
    skip_invalid: bool = False,
    stats: ReadResult | None = None,
    allow_empty: bool = False,
    max_row_bytes: int | None = MAX_ROW_BYTES,
    format: str | None = None,
) -> Iterator[Example]:
    """Validated, deduplicated examples, one at a time: memory holds only the ids seen (8 bytes of hash each
    as an int), never the rows. Counts go to `stats` (rows, duplicates, invalid rows with their reasons, the
    format read). Raises DataError on the first bad row unless `skip_invalid`."""
    st = stats if stats is not None else ReadResult()
    seen: set[int] = set()
    for item in iter_examples(path, field_map, allow_empty, max_row_bytes, format):
        st.rows += 1
        if isinstance(item, InvalidRow):
            if not skip_invalid:
                raise DataError(f"{item} (use --skip-invalid to rate the valid rows and list the rest)")
            st.invalid.append(item)
            continue
        st.format = item.format
        key = int(item.id, 16)
        if key in seen:
            st.duplicates += 1
        else:
            seen.add(key)
            yield item


def read_examples(
    path: str | Path,
    field_map: Mapping[str, str] | None = None,
    skip_invalid: bool = False,
    max_row_bytes: int | None = MAX_ROW_BYTES,
    format: str | None = None,
) -> ReadResult:
    """Read and validate a whole dataset into memory (small files, tests); duplicated content is kept once.
    Large files: use `stream_examples`."""
    result = ReadResult()
    result.examples = list(
        stream_examples(path, field_map, skip_invalid, result, max_row_bytes=max_row_bytes, format=format)
    )
    return result


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL file we wrote ourselves (outputs of earlier stages); a malformed line raises DataError."""
    for _, rec in iter_jsonl(path):
        if isinstance(rec, InvalidRow):
            raise DataError(str(rec))
        yield rec


def iter_objects(path: str | Path, jsonl: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row, object) pairs of plain records (ratings, answers, questions); the first malformed row or non-object
    raises DataError naming the file and the row. `jsonl`: JSONL whatever the suffix (else as `iter_records`)."""
    for row, rec in iter_jsonl(path) if jsonl else iter_records(path):
        if isinstance(rec, InvalidRow):
            raise DataError(str(rec))
        if not isinstance(rec, dict):
            raise DataError(f"{path}, row {row}: expected an object, got {type(rec).__name__}")
        yield row, rec


def read_table(path: str | Path) -> Iterator[dict[str, Any]]:
    """Any supported table as plain dicts, without example validation (answers, labels, ratings)."""
    for _row, rec in iter_records(path):
        if isinstance(rec, InvalidRow):
            raise DataError(str(rec))
        yield rec
