"""Any input, bounded memory (issue 22): a row above --max-row-bytes is an invalid row, never read whole; a JSON
list is decoded item by item, not read whole; a deeply nested row is an invalid row, not a RecursionError.

Real files under tmp_path (real Alpaca rows); memory is Python's own allocation count (tracemalloc), which counts
every buffer the reader allocates, so the bounds hold whatever the machine."""

from __future__ import annotations

import gzip
import io
import json
import tracemalloc

import pytest
from typer.testing import CliRunner

from alpagasus.cli import app
from alpagasus.data import MAX_ROW_BYTES, DataError, iter_records, read_examples, stream_examples
from alpagasus.data.jsontext import ListReader
from alpagasus.records import InvalidRow

MB = 1 << 20


def peak_while(fn) -> tuple[object, int]:
    """(fn's result, the peak bytes Python allocated while it ran)."""
    tracemalloc.start()
    try:
        got = fn()
        return got, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def write_jsonl(path, rows) -> None:
    with open(path, "w") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_a_line_above_the_limit_is_an_invalid_row_never_held(tmp_path, alpaca_rows, suffix):
    """A 24 MB field (the issue's was 200 MB): the reader holds at most the limit, reports the row's size, and
    the rows after it are read."""
    big = {"instruction": "Summarise this.", "input": "", "output": "lorem ipsum " * (2 * MB)}
    path = tmp_path / f"d{suffix}"
    text = "".join(json.dumps(r) + "\n" for r in [*alpaca_rows[:3], big, *alpaca_rows[3:6]])
    path.write_bytes(gzip.compress(text.encode()) if suffix.endswith(".gz") else text.encode())
    got, peak = peak_while(lambda: read_examples(path, skip_invalid=True))
    assert peak < 8 * MB, f"the reader held {peak / MB:.1f} MB for a 24 MB line"
    assert len(got.examples) == 6 and got.rows == 7
    (bad,) = got.invalid
    size = len(json.dumps(big).encode())
    assert (bad.row, bad.field) == (4, None)
    assert bad.reason == f"row of {size:,} bytes, above the limit of {MAX_ROW_BYTES:,} (--max-row-bytes)"
    with pytest.raises(DataError, match=r"row 4: row of .* bytes, above the limit .*--skip-invalid"):
        list(stream_examples(path))
    # the limit is an option: raised above the row, the row is an example again
    assert len(read_examples(path, skip_invalid=True, max_row_bytes=30 * MB).examples) == 7


def test_a_line_of_exactly_the_limit_is_read(tmp_path):
    row = {"instruction": "i", "input": "", "output": ""}
    row["output"] = "x" * (1000 - len(json.dumps(row)))
    path = tmp_path / "d.jsonl"
    write_jsonl(path, [row, row | {"instruction": "jj"}, "{}"])  # 1,000 bytes, then 1,001
    got = list(iter_records(path, max_row_bytes=1000))
    assert got[0] == (1, row)
    assert isinstance(got[1][1], InvalidRow) and "row of 1,000 bytes" not in got[1][1].reason
    assert "row of 1,001 bytes" in got[1][1].reason and got[2] == (3, {})


def test_rate_cli_option_max_row_bytes(tmp_path, alpaca_rows):
    path = tmp_path / "d.jsonl"
    write_jsonl(path, [alpaca_rows[0], {"instruction": "x", "input": "", "output": "y" * 5000}, alpaca_rows[1]])
    args = [
        "rate",
        str(path),
        "-o",
        str(tmp_path / "r.jsonl"),
        "--store",
        str(tmp_path / "s.sqlite"),
        "--judge",
        "predictor:alpaca-claude-accuracy",
        "--dry-run",
        "--max-row-bytes",
        "4096",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and res.exception is None or isinstance(res.exception, SystemExit), res.output
    assert "row 2: row of 5,0" in res.output and "above the limit of 4,096 (--max-row-bytes)" in res.output
    res = CliRunner().invoke(app, [*args, "--skip-invalid"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout[res.stdout.index("{") :])["invalid_rows"] == 1
    res = CliRunner().invoke(app, [*args[:-1], "8192"])  # the row fits
    assert res.exit_code == 0 and json.loads(res.stdout[res.stdout.index("{") :])["invalid_rows"] == 0


def test_a_json_list_is_streamed_not_read_whole(tmp_path, alpaca_rows):
    """~8 MB of real rows as a JSON list: the old reader held the file, its text and every row (~60 MB);
    the stream holds one chunk and one row."""
    rows = [dict(r, instruction=f"{i} {r['instruction']}") for i, r in enumerate(alpaca_rows * 3)][:24000]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(rows, indent=1))
    count, peak = peak_while(lambda: sum(1 for _ in iter_records(path)))
    assert count == len(rows)
    assert peak < 8 * MB, f"reading an {path.stat().st_size / MB:.0f} MB list held {peak / MB:.1f} MB"
    assert [r for _, r in iter_records(path)] == rows  # the same rows, in order
    assert [n for n, _ in iter_records(path)][-1] == len(rows)


@pytest.mark.slow
def test_a_json_list_item_above_the_limit_is_skipped_without_being_held(tmp_path, alpaca_rows):
    big = {"instruction": "i", "input": "", "output": 'a "quoted" \\ [brace} ' * (MB // 2)}
    path = tmp_path / "d.json"
    path.write_text(json.dumps([alpaca_rows[0], big, alpaca_rows[1]]))
    got, peak = peak_while(lambda: list(iter_records(path, max_row_bytes=MAX_ROW_BYTES)))
    assert peak < 8 * MB
    assert got[0] == (1, alpaca_rows[0]) and got[2] == (3, alpaca_rows[1])
    assert isinstance(got[1][1], InvalidRow) and "above the limit of 1,048,576 (--max-row-bytes)" in got[1][1].reason


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_the_list_stream_decodes_what_json_decodes(chunk):
    """Escapes, nesting, numbers and multi-byte characters cut at every chunk boundary."""
    data = [{"a": 'é"\\\n😀', "b": [1.5e-3, -2, True, None, {"c": []}]}, "x,]}", 12345678901234567890, [], {}]
    for text in (json.dumps(data), json.dumps(data, ensure_ascii=False, indent=2)):
        assert [v for _, v in ListReader(io.BytesIO(text.encode()), "t", None, chunk)] == data


@pytest.mark.parametrize(
    "text,where",
    [("[1, 2", "line 1"), ('[\n{"a": 1},\n{"a" 2}]', "line 3, column 6"), ("[1] x", "line 1, column 5: extra data")],
)
def test_a_broken_json_list_names_the_line(tmp_path, text, where):
    path = tmp_path / "d.json"
    path.write_text(text)
    with pytest.raises(DataError, match=f"d.json: not valid JSON \\({where}"):
        list(iter_records(path))


@pytest.mark.parametrize("depth", [150, 100_000])
@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_deeply_nested_json_is_an_invalid_row(tmp_path, alpaca_rows, depth, suffix):
    nested = '{"instruction": "i", "input": "", "output": "o", "extra": ' + "[" * depth + "]" * depth + "}"
    path = tmp_path / f"d{suffix}"
    rows = [json.dumps(alpaca_rows[0]), nested, json.dumps(alpaca_rows[1])]
    path.write_text("\n".join(rows) + "\n" if suffix == ".jsonl" else "[" + ",\n".join(rows) + "]")
    got = read_examples(path, skip_invalid=True, max_row_bytes=None)
    assert len(got.examples) == 2
    assert [(b.row, b.reason) for b in got.invalid] == [(2, "nested deeper than 100 levels")]
    res = CliRunner().invoke(
        app,
        [
            "rate",
            str(path),
            "-o",
            str(tmp_path / "r.jsonl"),
            "--store",
            str(tmp_path / "s.sqlite"),
            "--judge",
            "predictor:alpaca-claude-accuracy",
            "--dry-run",
        ],
    )
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert "row 2: nested deeper than 100 levels" in res.output


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_table_row_above_the_limit_is_an_invalid_row(tmp_path, alpaca_rows, suffix):
    """CSV and Parquet readers hold a row before it can be measured, but the limit holds for them too."""
    rows = [{k: r[k] for k in ("instruction", "input", "output")} for r in alpaca_rows[:3]]
    rows[1]["output"] = "é" * 3000  # 3,000 characters, 6,000 bytes
    path = tmp_path / f"d{suffix}"
    if suffix == ".csv":
        import csv

        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["instruction", "input", "output"])
            w.writeheader()
            w.writerows(rows)
    else:
        pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
        pq.write_table(pa.Table.from_pylist(rows), path)
    got = read_examples(path, skip_invalid=True, max_row_bytes=5000)
    assert len(got.examples) == 2 and got.invalid[0].row == 2 and "row of 6," in got.invalid[0].reason
    assert len(read_examples(path, skip_invalid=True, max_row_bytes=7000).examples) == 3
