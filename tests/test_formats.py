"""Dataset formats (formats/, records.Example): detection, the readers' errors, the views, and content ids that
did not move (a store written before formats existed keeps its ratings)."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pytest

from alpagasus import formats
from alpagasus.data import DataError, read_examples, to_example
from alpagasus.records import Example, InvalidRow, Turn, content_id

FIXTURES = Path(__file__).parent / "fixtures"
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Name a primary colour."},
    {"role": "assistant", "content": "Red."},
    {"role": "user", "content": "Another?"},
    {"role": "assistant", "content": "Blue."},
]
SHAREGPT = [
    {"from": t["role"].replace("user", "human").replace("assistant", "gpt"), "value": t["content"]} for t in CHAT
]


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


# ---- content ids: Alpaca's exactly as before ------------------------------------------------------------
def test_alpaca_ids_are_the_old_hash_of_the_three_fields():
    ex = Example.alpaca("Add 2 and 3.", "", "5")
    assert ex.id == content_id("Add 2 and 3.", "", "5")
    # the hash as the code before formats computed it, spelled out: length-prefixed UTF-8 parts, sha256, 16 hex
    import hashlib

    h = hashlib.sha256()
    for part in ("Add 2 and 3.", "", "5"):
        b = part.encode("utf-8")
        h.update(len(b).to_bytes(8, "little") + b)
    assert ex.id == h.hexdigest()[:16]
    assert Example.alpaca("i", "x", "o").id != Example.alpaca("i", "", "xo").id


def test_a_store_written_before_formats_keeps_its_ratings(tmp_path):
    """tests/fixtures/store_v2.sql was written by the code before formats (make_store_v2.py): every Alpaca and
    Dolly row read now has the id it had then, and rating them again asks the judge nothing."""
    from alpagasus.prompts.template import load_template
    from alpagasus.rate import rate
    from alpagasus.store import Store
    from fakes import FakeJudge

    db = sqlite3.connect(tmp_path / "s.sqlite")
    db.executescript((FIXTURES / "store_v2.sql").read_text(encoding="utf-8"))
    db.close()
    rows, ids = (json.loads((FIXTURES / f).read_text()) for f in ("store_v2_rows.json", "store_v2_ids.json"))
    st = Store(tmp_path / "s.sqlite")
    try:
        for name in ("alpaca", "dolly"):
            got = read_examples(_jsonl(tmp_path / f"{name}.jsonl", rows[name]))
            assert [e.format for e in got.examples] == [name] * len(rows[name])
            assert [e.id for e in got.examples] == ids[name]
            judge = FakeJudge(reply="Score: 1", id="fixture:v2#generate")
            s = rate(got.examples, judge, load_template("accuracy"), st)
            assert judge.asked == [] and s.already_rated == len(rows[name])
            stored = st.get_many(ids[name], "fixture:v2#generate", load_template("accuracy").version)
            assert sorted(stored) == sorted(ids[name]) and {r.score for r in stored.values()} == {4.0}
    finally:
        st.close()


# ---- detection ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "row,name",
    [
        ({"messages": CHAT}, "messages"),
        ({"messages": json.dumps(CHAT)}, "messages"),  # a CSV cell
        ({"conversations": SHAREGPT, "id": "x"}, "sharegpt"),
        ({"instruction": "a", "input": "", "output": "b"}, "alpaca"),
        ({"instruction": "a", "output": "b"}, "alpaca"),
        ({"instruction": "a", "context": "", "response": "b", "category": "qa"}, "dolly"),
        ({"text": "a"}, None),
        ([1, 2], None),
    ],
)
def test_detect(row, name):
    assert formats.detect(row) == name


def test_names_and_get():
    assert formats.names() == ["alpaca", "dolly", "messages", "sharegpt"]
    with pytest.raises(ValueError, match="one of alpaca"):
        formats.get("chatml")


# ---- the views ---------------------------------------------------------------------------------------------
def test_views_of_a_conversation_and_of_an_alpaca_row():
    ex = to_example({"messages": CHAT, "source": "s"}, 3, "f.jsonl")
    assert isinstance(ex, Example) and ex.format == "messages" and ex.row == 3
    assert ex.response == "Blue."
    assert ex.prompt == "System: Be brief.\n\nUser: Name a primary colour.\n\nAssistant: Red.\n\nUser: Another?"
    assert ex.prompt_fields() == {"instruction": ex.prompt, "input": "", "output": "Blue."}
    assert ex.id == content_id("messages/v1", json.dumps([[t["role"], t["content"]] for t in CHAT]))
    assert ex.fields() == {"messages": CHAT, "source": "s"} and ex.extra == {"source": "s"}
    assert formats.training_messages(ex) == CHAT
    one = to_example({"messages": CHAT[1:3]}, 1, "f")
    assert isinstance(one, Example) and one.prompt == "Name a primary colour."  # one user turn: its text as is
    al = Example.alpaca("Translate.", "Bonjour", "Hello", extra={"k": 1})
    assert al.prompt == "Translate.\n\nBonjour" and al.response == "Hello"
    assert al.prompt_fields() == {"instruction": "Translate.", "input": "Bonjour", "output": "Hello"}
    assert al.fields() == {"instruction": "Translate.", "input": "Bonjour", "output": "Hello", "k": 1}
    assert formats.training_messages(al) == [
        {"role": "user", "content": "Translate.\n\nBonjour"},
        {"role": "assistant", "content": "Hello"},
    ]
    assert al.messages == (Turn("user", "Translate.\n\nBonjour"), Turn("assistant", "Hello"))


def test_sharegpt_reads_as_the_same_conversation():
    ex = to_example({"conversations": SHAREGPT, "id": 9}, 1, "f")
    chat = to_example({"messages": CHAT}, 1, "f")
    assert isinstance(ex, Example) and isinstance(chat, Example)
    assert ex.format == "sharegpt" and ex.messages == chat.messages and ex.id == chat.id
    assert formats.get("sharegpt").write(ex) == {"conversations": SHAREGPT, "id": 9}  # as read


def test_openai_text_parts_are_joined():
    row = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "you"}]}]
    }
    row["messages"].append({"role": "assistant", "content": "Hello."})
    ex = to_example(row, 1, "f")
    assert isinstance(ex, Example) and ex.prompt == "Hi you" and ex.fields() == row


# ---- invalid rows: file, row and field named -------------------------------------------------------------
@pytest.mark.parametrize(
    "messages,field,reason",
    [
        ([{"role": "user", "content": "Hi"}, {"role": "bot", "content": "Hello"}], "messages[1].role", "'bot' is not"),
        ([{"role": "user", "content": "Hi"}], "messages", "no assistant turn"),
        (CHAT[:4], "messages", "ends in a user turn"),
        ([{"role": "system", "content": "x"}, {"role": "assistant", "content": "y"}], "messages", "no user turn"),
        ([], "messages", "no turns"),
        ([{"role": "user", "content": 5}, {"role": "assistant", "content": "y"}], "messages[0].content", "int"),
        ([{"role": "user"}, {"role": "assistant", "content": "y"}], "messages[0].content", "nothing"),
        (["hi"], "messages[0]", "must be an object"),
        ("[not json", "messages", "not a JSON list"),
        ({"role": "user"}, "messages", "must be a list"),
        ([{"role": "user", "content": "a\x00b"}, {"role": "assistant", "content": "y"}], "messages[0].content", "NUL"),
        ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": " "}], "messages", "is empty"),
    ],
)
def test_invalid_conversations_name_the_field(messages, field, reason):
    bad = formats.get("messages").read({"messages": messages}, 7, "chat.jsonl")
    assert isinstance(bad, InvalidRow) and bad.field == field and reason in bad.reason, bad
    assert str(bad).startswith(f"chat.jsonl, row 7, field '{field}'")


def test_an_empty_last_answer_is_an_empty_example_when_allowed():
    ex = formats.get("messages").read({"messages": [CHAT[1], {"role": "assistant", "content": ""}]}, 1, "f", None, True)
    assert isinstance(ex, Example) and ex.empty_field == "last assistant turn"


def test_invalid_rows_are_listed_and_valid_ones_kept(tmp_path):
    bad_role = [CHAT[1], {"role": "bot", "content": "x"}]
    path = _jsonl(tmp_path / "c.jsonl", [{"messages": CHAT}, {"messages": bad_role}, {"messages": CHAT[:3]}])
    got = read_examples(path, skip_invalid=True)
    assert [e.row for e in got.examples] == [1, 3] and got.format == "messages"
    assert [(i.row, i.field) for i in got.invalid] == [(2, "messages[1].role")]
    with pytest.raises(DataError, match=r"c.jsonl, row 2, field 'messages\[1\].role': 'bot' is not"):
        read_examples(path)


def test_a_named_format_that_the_rows_do_not_fit_is_an_error_naming_file_row_field(tmp_path):
    path = _jsonl(tmp_path / "c.jsonl", [{"messages": CHAT}])
    with pytest.raises(DataError, match=r"c.jsonl, row 1, field 'conversations': missing"):
        read_examples(path, format="sharegpt")
    with pytest.raises(DataError, match=r"c.jsonl, row 1, field 'instruction': missing"):
        read_examples(path, format="alpaca")
    with pytest.raises(DataError, match="unknown; one of alpaca"):
        read_examples(path, format="chatml")
    with pytest.raises(DataError, match="does not go with --format messages"):
        read_examples(path, field_map={"instruction": "q"}, format="messages")
    assert read_examples(path, format="messages").examples[0].response == "Blue."


def test_detection_skips_rows_that_show_no_format(tmp_path):
    path = _jsonl(tmp_path / "c.jsonl", [{"text": "?"}, "not an object", {"conversations": SHAREGPT}])
    got = read_examples(path, skip_invalid=True)
    assert got.format == "sharegpt" and [e.row for e in got.examples] == [3]
    assert [(i.row, i.field) for i in got.invalid] == [(1, "conversations"), (2, None)]


# ---- every reader: CSV and Parquet with a messages column, datasets directories ---------------------------
def test_csv_with_a_messages_column_of_json_text(tmp_path):
    path = tmp_path / "c.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["messages", "source"])
        w.writeheader()
        w.writerow({"messages": json.dumps(CHAT), "source": "a"})
    (ex,) = read_examples(path).examples
    assert ex.format == "messages" and ex.response == "Blue."
    assert ex.fields() == {"messages": json.dumps(CHAT), "source": "a"}  # written back as read: the JSON text


def test_parquet_and_a_datasets_directory_with_lists(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = [{"conversations": SHAREGPT, "n": 1}, {"conversations": SHAREGPT[:3], "n": 2}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet")
    got = read_examples(tmp_path / "c.parquet").examples
    assert [e.format for e in got] == ["sharegpt"] * 2 and [e.response for e in got] == ["Blue.", "Red."]
    assert [e.fields() for e in got] == rows
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list([{"messages": CHAT}]).save_to_disk(str(tmp_path / "ds"))
    (ex,) = read_examples(tmp_path / "ds").examples
    assert ex.format == "messages" and ex.fields() == {"messages": CHAT}


def test_example_of_reads_a_ratings_row_whatever_its_format():
    rated = {"messages": CHAT, "id": "abc", "score": 4.0, "status": "ok", "judge": "j", "flags": []}
    ex = formats.example_of(rated)
    assert isinstance(ex, Example) and ex.fields() == {"messages": CHAT} and ex.response == "Blue."
    al = formats.example_of({"instruction": "i", "input": "", "output": "o", "score": 5, "status": "ok"})
    assert isinstance(al, Example) and al.id == content_id("i", "", "o")
    assert isinstance(formats.example_of({"messages": CHAT}, "sharegpt"), InvalidRow)
