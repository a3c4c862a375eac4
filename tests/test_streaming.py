"""Flat memory: inputs, the engine and outputs stream; selection from a ratings file holds no rows."""

import asyncio
import json
import random

import pytest

from alpagasus.data import ReadResult, read_table, stream_examples, write_rows
from alpagasus.engine import Item, Rubric, run_items
from alpagasus.prompts.parse import parse_score
from alpagasus.records import Reply, Request
from alpagasus.select import select_file
from alpagasus.select.rules import select, training_rows
from alpagasus.store import Store
from fakes import FakeJudge


def test_engine_reads_its_items_lazily(tmp_path):
    pulled = [0]

    def items():
        for i in range(2000):
            pulled[0] += 1
            yield Item(f"k{i}", Request(key=f"k{i}", system="", user=f"u{i}"))

    # answers at once, noting how far the engine had read its input at each call
    seen_at_call = []
    judge = FakeJudge(
        id="count#logprob",
        mode="logprob",
        batch_size=4,
        concurrency=8,
        threaded=False,
        reply=Reply(score=4.0, probs={"4": 1.0}),
        on_call=lambda _: seen_at_call.append(pulled[0]),
    )
    with Store(tmp_path / "s.sqlite") as st:
        s = asyncio.run(run_items(items(), judge, st, Rubric("v1", (0, 5), parse_score)))
        assert s.ok == 2000 and st.count(status="ok") == 2000
    # the first call went out after reading at most one window of batches, not the whole input
    assert seen_at_call[0] <= judge.batch_size * judge.concurrency
    # and never ran more than one window ahead of the calls made
    window = judge.batch_size * judge.concurrency
    assert all(seen <= k * judge.batch_size + window for k, seen in enumerate(seen_at_call))


def test_stream_examples_dedups_and_counts(tmp_path):
    rows = [{"instruction": f"q{i % 50}", "input": "", "output": "a"} for i in range(120)]
    rows.insert(7, {"instruction": "", "input": "", "output": "x"})
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    stats = ReadResult()
    got = list(stream_examples(tmp_path / "d.jsonl", skip_invalid=True, stats=stats))
    assert len(got) == 50 and stats.rows == 121 and stats.duplicates == 70
    assert [(b.row, b.field) for b in stats.invalid] == [(8, "instruction")]
    assert stats.examples == []  # nothing was kept in memory


def ratings_rows(n=400, seed=3):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        status = rng.choice(["ok"] * 8 + ["unparsed", "invalid_input"])
        out.append(
            {
                "instruction": f"i{i}",
                "input": "",
                "output": "x" * rng.randint(1, 60),
                "id": f"id{i}",
                "score": round(rng.uniform(0, 5), 1) if status == "ok" else None,
                "status": status,
                "flags": ["injection"] if rng.random() < 0.1 else [],
            }
        )
    return out


@pytest.mark.parametrize(
    "rule,value",
    [("threshold", 4.5), ("top_k", 37), ("keep_fraction", 0.3), ("random", 50), ("longest", 25), ("all", None)],
)
@pytest.mark.parametrize("exclude", [False, True])
def test_select_file_streams_to_the_same_result_as_select(tmp_path, rule, value, exclude):
    rows = ratings_rows()
    src = tmp_path / "r.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = select_file(src, tmp_path / "sel.jsonl", rule, value, seed=5, exclude_flagged=exclude)
    kw = {
        "threshold": {"threshold": value},
        "top_k": {"k": value},
        "keep_fraction": {"fraction": value},
        "random": {"k": value},
        "longest": {"k": value},
        "all": {},
    }[rule]
    kept_rows = [r for r in rows if not (exclude and r["flags"])]
    want = training_rows(select(kept_rows, rule, seed=5, **kw))
    got = [json.loads(line) for line in (tmp_path / "sel.jsonl").read_text().splitlines()]
    assert got == want and res["kept"] == len(want) and len(want) > 0


def test_writers_stream_json_csv_and_parquet_in_chunks(tmp_path):
    rows = [{"instruction": f"i{i}", "output": "o", "note": None if i < 25000 else f"n{i}"} for i in range(45000)]
    assert write_rows(tmp_path / "a.parquet", iter(rows)) == 45000
    back = list(read_table(tmp_path / "a.parquet"))
    assert back[0] == rows[0] and back[-1] == rows[-1] and len(back) == 45000  # a null-only first chunk is fine
    assert write_rows(tmp_path / "a.json", iter(rows[:3])) == 3
    assert json.loads((tmp_path / "a.json").read_text()) == rows[:3]
    assert write_rows(tmp_path / "e.json", iter([])) == 0 and json.loads((tmp_path / "e.json").read_text()) == []
    assert write_rows(tmp_path / "a.csv", iter(rows[:3]), columns=["instruction", "output", "note"]) == 3
    assert (tmp_path / "a.csv").read_text().splitlines()[0] == "instruction,output,note"


@pytest.mark.slow
def test_rerun_of_a_finished_command_reads_nothing_until_something_changes(tiny_model, alpaca_rows, tmp_path):
    import sqlite3

    from alpagasus.rate.files import rate_file

    rows = [r for r in alpaca_rows if r["output"].strip()][:31]
    data, out, store = tmp_path / "d.jsonl", tmp_path / "r.jsonl", tmp_path / "s.sqlite"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows[:30]))
    run = lambda: rate_file(data, out, judge=f"hf:{tiny_model}", store_path=store)  # noqa: E731
    first = run()
    assert first.run.ok == 30 and first.note == ""
    written = out.stat().st_mtime_ns
    again = run()
    assert "up to date" in again.note and again.run.requests_sent == 0 and again.unique == 30
    assert out.stat().st_mtime_ns == written  # not even rewritten
    with data.open("a") as f:  # the input changed: read again, only the new row is asked
        f.write(json.dumps(rows[30]) + "\n")
    grown = run()
    assert grown.note == "" and grown.already_rated == 30 and grown.run.requests_sent == 1
    out.write_text("")  # the output was edited: rewritten from the store, nothing asked
    rewritten = run()
    assert rewritten.run.requests_sent == 0 and len(out.read_text().splitlines()) == 31
    with sqlite3.connect(store) as db:  # a reply went missing from the store: asked again
        db.execute("DELETE FROM replies WHERE item_id = (SELECT item_id FROM replies LIMIT 1)")
    assert run().run.requests_sent == 1
