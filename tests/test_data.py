"""Reading datasets: formats, field mapping, stable ids, bad rows named precisely, duplicates."""

import csv
import json

import pytest

from alpagasus.data import DataError, atomic_writer, read_examples, write_rows
from alpagasus.records import Example, content_id
from conftest import SHARED_DATA

ROWS = [
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5", "source": "a"},
    {"instruction": "Name a color.", "input": "", "output": "Blue.", "source": "b"},
]


def test_json_list_real_alpaca_with_empty_outputs_named():
    path = SHARED_DATA / "alpaca" / "alpaca_random_9k.json"
    with pytest.raises(DataError) as e:
        read_examples(path)
    msg = str(e.value)
    assert str(path) in msg and "row 1462" in msg and "'output'" in msg and "empty" in msg
    res = read_examples(path, skip_invalid=True)
    assert res.rows == 9229
    assert len(res.examples) + len(res.invalid) + res.duplicates == 9229
    assert all(bad.field == "output" for bad in res.invalid)


def test_dolly_context_maps_to_input_and_extras_carried():
    res = read_examples(SHARED_DATA / "alpaca" / "dolly_filtered_3k.json")
    raw = json.loads((SHARED_DATA / "alpaca" / "dolly_filtered_3k.json").read_text())
    with_context = next(r for r in raw if r.get("input") or r.get("context"))
    ex = next(e for e in res.examples if e.instruction == with_context["instruction"])
    assert ex.input == (with_context.get("input") or with_context.get("context"))
    assert ex.extra["category"] == with_context["category"]
    assert res.duplicates == len(raw) - len(res.examples)


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv", ".parquet"])
def test_formats_round_trip(tmp_path, suffix):
    path = tmp_path / f"d{suffix}"
    write_rows(path, ROWS)
    res = read_examples(path)
    assert [e.instruction for e in res.examples] == [r["instruction"] for r in ROWS]
    assert res.examples[0].extra == {"source": "a"}
    assert res.examples[1].input == ""


def test_hf_datasets_directory(tmp_path):
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "ds"))
    res = read_examples(tmp_path / "ds")
    assert [e.output for e in res.examples] == ["5", "Blue."]


def test_field_mapping(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question": "Why?", "answer": "Because.", "ctx": "c"}) + "\n")
    res = read_examples(path, {"instruction": "question", "output": "answer", "input": "ctx"})
    assert (res.examples[0].instruction, res.examples[0].input, res.examples[0].output) == ("Why?", "c", "Because.")


def test_ids_depend_on_content_only():
    a = Example.alpaca("i", "x", "o", extra={"k": 1}, row=3)
    b = Example.alpaca("i", "x", "o", row=99)
    assert a.id == b.id == content_id("i", "x", "o")
    assert Example.alpaca("i", "", "xo").id != Example.alpaca("i", "x", "o").id


def test_bad_rows_each_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    lines = [
        json.dumps({"instruction": "ok", "output": "fine"}),
        "{not json",
        json.dumps({"instruction": None, "output": "x"}),
        json.dumps({"instruction": "n", "output": 5}),
        json.dumps({"instruction": "", "output": "x"}),
        json.dumps({"output": "x"}),
        json.dumps({"instruction": "nul\u0000", "output": "x"}),
        json.dumps({"instruction": "lone \ud800 surrogate", "output": "x"}),
        json.dumps(["a list"]),
        json.dumps({"instruction": "ok", "output": "fine"}),  # duplicate of line 1
    ]
    data = ("\n".join(lines) + "\n").encode()
    data += b'{"instruction": "bad \xff byte", "output": "x"}\n'
    path.write_bytes(data)
    with pytest.raises(DataError, match=r"bad\.jsonl, row 2: malformed JSON"):
        read_examples(path)
    res = read_examples(path, skip_invalid=True)
    reasons = {b.row: (b.field, b.reason) for b in res.invalid}
    assert len(res.examples) == 1 and res.duplicates == 1
    assert reasons[3] == ("instruction", "must be a string, got null")
    assert reasons[4] == ("output", "must be a string, got int")
    assert reasons[5] == ("instruction", "is empty")
    assert reasons[6] == ("instruction", "missing")
    assert reasons[7][1] == "contains a NUL character"
    assert "surrogate" in reasons[8][1] and "UTF-8" in reasons[11][1]
    assert "expected an object" in reasons[9][1]
    assert res.rows == len(res.examples) + len(res.invalid) + res.duplicates


def test_not_json_at_all(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("[{oops")
    with pytest.raises(DataError, match="x.json: not valid JSON"):
        read_examples(path)


def test_csv_missing_column_named(tmp_path):
    path = tmp_path / "d.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["instruction", "response_text"])
        w.writerow(["hi", "there"])
    with pytest.raises(DataError, match=r"d.csv, row 1, field 'output': missing"):
        read_examples(path)


def test_atomic_writer_keeps_old_file_on_crash(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_writer(path) as f:
            f.write("half of the new")
            raise RuntimeError("crash")
    assert path.read_text() == "old"
    assert list(tmp_path.iterdir()) == [path]


def test_plain_records_name_file_and_row(tmp_path):
    """One reader for ratings, answers and questions: a malformed line or a non-object stops with file and row."""
    from alpagasus.data import iter_jsonl, iter_objects, read_jsonl

    path = tmp_path / "rows.txt"  # not a JSONL suffix: `jsonl=True` reads it as JSONL anyway
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n\n{oops\n[1]\n')
    assert [r for r, _ in iter_jsonl(path)] == [1, 3, 4]
    objects = iter_objects(path, jsonl=True)
    assert next(objects) == (1, {"a": 1})
    with pytest.raises(DataError, match=r"rows.txt, row 3: malformed JSON line"):
        next(objects)
    path.write_text('{"a": 1}\n[1]\n')
    with pytest.raises(DataError, match=r"rows.txt, row 2: expected an object, got list"):
        list(iter_objects(path, jsonl=True))
    with pytest.raises(DataError, match="unknown format"):
        list(iter_objects(path))
    out = tmp_path / "ours.jsonl"
    out.write_text('{"a": 1}\n{oops\n')
    with pytest.raises(DataError, match=r"ours.jsonl, row 2: malformed JSON line"):
        list(read_jsonl(out))


def test_user_questions_name_file_and_row(tmp_path):
    from alpagasus.testsets import load

    path = tmp_path / "qs.jsonl"
    path.write_text('{"question_id": 1, "text": "Hi?"}\n{oops\n')
    with pytest.raises(DataError, match=r"qs.jsonl, row 2: malformed JSON line"):
        load(str(path))
    path.write_text('{"question_id": 1, "text": "Hi?"}\n"just text"\n')
    with pytest.raises(DataError, match=r"qs.jsonl, row 2: expected an object"):
        load(str(path))
    path.write_bytes(b'{"question_id": 1, "text": "bad \xff byte"}\n')
    with pytest.raises(DataError, match=r"qs.jsonl, row 1, field 'text': contains invalid UTF-8"):
        load(str(path))
    path.write_text('{"question_id": 1, "text": "Hi?", "category": "greeting"}\n')
    [q] = load(str(path))
    assert (q.testset, q.question_id, q.question, q.extra) == ("qs", "1", "Hi?", {"category": "greeting"})


def test_empty_outputs_are_examples_when_allowed_and_invalid_otherwise(tmp_path):
    from alpagasus.data import stream_examples

    src = tmp_path / "d.json"
    src.write_text(
        json.dumps(
            [
                {"instruction": "a", "input": "", "output": ""},
                {"instruction": " ", "input": "", "output": "b"},
                {"instruction": "c", "input": "", "output": "d"},
            ]
        )
    )
    got = list(stream_examples(src, allow_empty=True))
    assert [e.empty_field for e in got] == ["output", "instruction", None]
    with pytest.raises(DataError, match="row 1, field 'output': is empty"):  # training and distill stay strict
        list(stream_examples(src))


@pytest.mark.slow
def test_a_hub_name_that_cannot_be_loaded_says_what_to_do():
    from alpagasus.data import stream_examples

    with pytest.raises(DataError) as e:  # offline here (HF_HUB_OFFLINE): the load fails at once
        list(stream_examples("no-such-org/no-such-dataset-xyz"))
    msg = str(e.value)
    assert "no-such-org/no-such-dataset-xyz" in msg and "hub" in msg and "local file" in msg


KILLED_WRITER = """
import sys, time
from alpagasus.data import atomic_writer
with atomic_writer(sys.argv[1]) as f:
    f.write("partial")
    f.flush()
    print("writing", flush=True)
    time.sleep(60)
"""


def test_a_writer_killed_mid_write_leaves_nothing_after_the_next_write(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    target = tmp_path / "ratings.jsonl"
    target.write_text("old\n")
    p = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "writing"
    os.kill(p.pid, signal.SIGKILL)
    p.wait(10)
    left = list(tmp_path.glob(".ratings.jsonl.*.tmp"))
    assert len(left) == 1 and target.read_text() == "old\n"  # the kill left its temp file; the old file is whole
    legacy_old = tmp_path / ".ratings.jsonl.abc123.tmp"  # an older version's name, untouched for hours
    legacy_old.write_text("x")
    os.utime(legacy_old, (0, 0))
    legacy_new = tmp_path / ".ratings.jsonl.def456.tmp"  # could be another writer right now: kept
    legacy_new.write_text("x")
    mine_alive = tmp_path / f".ratings.jsonl.p{os.getppid()}.zzz.tmp"  # a live process's: kept
    mine_alive.write_text("x")
    with atomic_writer(target) as f:
        f.write("new\n")
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.glob(".ratings.jsonl.*.tmp")) == sorted([legacy_new.name, mine_alive.name])


@pytest.mark.parametrize("name", ["d.json", "d.jsonl", "d.csv"])
def test_gzipped_files_read_like_plain_ones(tmp_path, name):
    import gzip

    rows = [{"instruction": f"say {i}", "input": "", "output": f"{i}"} for i in range(5)] + [
        {"instruction": "no answer", "input": "", "output": ""}
    ]
    plain = tmp_path / name
    if name.endswith(".csv"):
        with plain.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["instruction", "input", "output"])
            w.writeheader()
            w.writerows(rows)
    else:
        plain.write_text(json.dumps(rows) if name.endswith(".json") else "".join(json.dumps(r) + "\n" for r in rows))
    packed = tmp_path / (name + ".gz")
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    a, b = read_examples(plain, skip_invalid=True), read_examples(packed, skip_invalid=True)
    assert [e.output for e in b.examples] == [e.output for e in a.examples] == ["0", "1", "2", "3", "4"]
    # the bad row is still named by the file (the .gz one), its row and its field
    assert len(b.invalid) == 1 and str(packed) in str(b.invalid[0]) and "output" in str(b.invalid[0])


def test_the_bundled_9k_alpaca_sample_is_the_shared_one():
    shared = json.loads((SHARED_DATA / "alpaca" / "alpaca_random_9k.json").read_text())
    r = read_examples("sample:alpaca_9k", skip_invalid=True)
    assert len(r.examples) + len(r.invalid) >= 9000 and len(r.invalid) < 100
    assert r.examples[0].instruction == shared[0]["instruction"]
    with pytest.raises(DataError, match="known: .*alpaca_9k"):
        read_examples("sample:nope")
