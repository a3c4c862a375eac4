"""`--batch` (engine/batch.py) and the label-mass floor, against a real `alpagasus serve` on 127.0.0.1 over the
tiny model: its Files and Batches endpoints and the faults it injects (expire, failed requests, failed
validation, vanish, slow). What the server received is read back from it (every batch's input and output
files), so "never paid twice" is checked on the server's side, not ours."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from alpagasus.engine import RunOptions
from alpagasus.errors import UserError
from alpagasus.rate import rate_file
from alpagasus.report.stats import summarize
from alpagasus.serve import BatchFaults, ModelRunner, start_server

JUDGE = "openai:tiny"
POLL = 0.05


@pytest.fixture(scope="module")
def runner(tiny_model):
    return ModelRunner(str(tiny_model), name="tiny")


@pytest.fixture(scope="module")
def data(alpaca_rows, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("batch-data") / "six.jsonl"
    rows = [r for r in alpaca_rows if r["output"].strip() and len(r["output"]) < 300][:6]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def server_log(url: str) -> list[dict]:
    """Every batch the server holds, oldest first, with the custom ids of its input file and of its output
    lines answered 200 (the requests that were run and billed)."""
    import openai

    client = openai.OpenAI(base_url=url, api_key="none")
    out = []
    for b in reversed(list(client.batches.list(limit=100))):
        sent = [json.loads(x)["custom_id"] for x in client.files.content(b.input_file_id).text.splitlines()]
        ran = []
        if b.output_file_id:
            ran = [
                json.loads(x)["custom_id"]
                for x in client.files.content(b.output_file_id).text.splitlines()
                if json.loads(x)["response"]["status_code"] == 200
            ]
        out.append({"id": b.id, "status": b.status, "sent": sent, "ran": ran})
    return out


def never_paid_twice(log: list[dict]) -> None:
    """No row whose request was run (answered 200) is ever put in a later batch."""
    ran: set[str] = set()
    for b in log:
        assert not ran & set(b["sent"]), f"{b['id']} resent rows already answered"
        assert len(set(b["sent"])) == len(b["sent"])
        ran |= set(b["ran"])


def rate(data: Path, url: str, tmp: Path, mode: str = "logprob", limit: int | None = None, **opts) -> tuple:
    """Rate the six rows with --batch; in logprob mode with the whole vocabulary in top_logprobs (every label has a
    probability) and no label-mass floor unless given: the tiny random model holds little mass on the digits."""
    opts = {"batch": True, "batch_poll_s": POLL, "max_tokens": 8, **opts}
    if mode == "logprob":
        opts.setdefault("min_label_mass", 0.0)
    out = tmp / f"out-{mode}.jsonl"
    s = rate_file(
        data,
        out,
        judge=JUDGE,
        mode=mode,
        judge_options={"base_url": url, "top_logprobs": 800},
        store_path=tmp / "s.sqlite",
        options=RunOptions(**opts),
        limit=limit,
    )
    return s, [json.loads(x) for x in out.read_text().splitlines()]


def all_rated_once(rows: list[dict], log: list[dict], n: int = 6) -> None:
    assert len(rows) == n and all(r["status"] in ("ok", "unparsed") for r in rows)
    ran = [k for b in log for k in b["ran"]]
    assert sorted(set(ran)) == sorted(r["id"] for r in rows)


def test_logprob_batch_one_batch_scores_label_mass_and_batch_price(runner, data, tmp_path):
    with start_server(runner) as url:
        s, rows = rate(data, url, tmp_path, price_in=2.0, price_out=8.0)
        log = server_log(url)
    assert [len(b["sent"]) for b in log] == [6] and s.run.batches == 1 and s.run.requests_sent == 6
    assert s.run.ok == 6 and all(0 <= r["score"] <= 5 and 0 < r["label_mass"] <= 1 for r in rows)
    all_rated_once(rows, log)
    direct = RunOptions(price_in=2.0, price_out=8.0).cost(s.run.tokens_in, s.run.tokens_out)
    assert s.run.cost == pytest.approx(direct / 2) and s.run.tokens_out == 6
    dry = rate_file(
        data,
        tmp_path / "dry.jsonl",
        judge=JUDGE,
        mode="logprob",
        dry_run=True,
        judge_options={"base_url": "http://127.0.0.1:9/v1"},
        store_path=tmp_path / "empty.sqlite",
        options=RunOptions(batch=True, price_in=2.0, price_out=8.0),
    )
    assert dry["cost"] == pytest.approx(
        RunOptions(price_in=2.0, price_out=8.0).cost(dry["tokens_in"], dry["tokens_out_estimate"]) / 2
    )


def test_generate_batch_reasks_go_in_follow_up_batches(runner, data, tmp_path):
    with start_server(runner) as url:
        s, rows = rate(data, url, tmp_path, mode="generate", max_reasks=1, limit=3)
        log = server_log(url)
    # a random model writes no score: each row is asked twice (one re-ask), in two batches, then unparsed
    assert [len(b["sent"]) for b in log] == [3, 3] and s.run.requests_sent == 6
    assert all(r["status"] == "unparsed" for r in rows) and s.run.unparsed == 3
    ran = [k for b in log for k in b["ran"]]
    assert len(ran) == 6 and len(set(ran)) == 3


def test_label_mass_floor_asks_again_in_generate_mode(runner, data, tmp_path):
    """The issue's case: digits renormalised among the top log-probabilities looked like confident scores.
    Under the floor (default 0.5 for API judges) the row is asked again in generate mode, counted and priced."""
    with start_server(runner) as url:
        s, rows = rate(data, url, tmp_path, min_label_mass=None, max_reasks=0, price_in=1.0, price_out=1.0, limit=3)
        log = server_log(url)
        direct = rate_file(
            data,
            tmp_path / "direct.jsonl",
            judge=JUDGE,
            mode="logprob",
            store_path=tmp_path / "d.sqlite",
            judge_options={"base_url": url, "top_logprobs": 5},
            limit=3,
            options=RunOptions(max_reasks=0, max_tokens=8, min_label_mass=0.9),
        )
    assert s.run.fallbacks == 3 and [len(b["sent"]) for b in log] == [3, 3]
    assert s.run.tokens_out > 3 and s.run.cost == pytest.approx((s.run.tokens_in + s.run.tokens_out) / 2e6)
    assert all(r["status"] == "unparsed" and r["label_mass"] < 0.5 for r in rows)
    lm = summarize(rows)["label_mass"]  # the report's line: every row under the floor
    assert lm["rows"] == 3 and lm["share_under_floor"] == 1.0 and lm["median"] < 0.5
    assert direct.run.fallbacks == 3 and direct.run.requests_sent == 6
    with sqlite3.connect(tmp_path / "d.sqlite") as db:
        extras = [json.loads(x) for (x,) in db.execute("SELECT extra FROM replies")]
    assert all(e["label_mass"] < 0.9 for e in extras)


def test_local_judge_under_the_floor_is_unparsed_with_the_reason(tiny_model, data, tmp_path):
    s = rate_file(
        data,
        tmp_path / "o.jsonl",
        judge=f"hf:{tiny_model}",
        mode="logprob",
        store_path=tmp_path / "s.sqlite",
        options=RunOptions(min_label_mass=0.99),
    )
    rows = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert s.run.unparsed == 6 and s.run.fallbacks == 0
    assert all(r["score"] is None and "floor 0.99" in r["explanation"] and r["label_mass"] < 0.99 for r in rows)


@pytest.mark.parametrize(
    "faults,expect",
    [
        (BatchFaults(expire_after=2, batches=1), ["expired", "completed"]),
        (BatchFaults(fail_every=3, batches=1), ["completed", "completed"]),
        (BatchFaults(fail_validation=True, batches=1), ["failed", "completed"]),
        (BatchFaults(vanish=True, batches=1), ["completed"]),  # the vanished batch is not listed any more
    ],
    ids=["expired", "partly-failed", "failed-validation", "vanished"],
)
def test_faulty_batches_end_with_every_row_rated_once(runner, data, tmp_path, faults, expect):
    with start_server(runner, faults=faults) as url:
        s, rows = rate(data, url, tmp_path)
        log = server_log(url)
    assert [b["status"] for b in log] == expect
    never_paid_twice(log)
    all_rated_once(rows, log)
    resent = {"expired": 4, "partly-failed": 2, "failed-validation": 6, "vanished": 6}
    kind = next(
        k
        for k, v in {
            "expired": faults.expire_after is not None,
            "partly-failed": faults.fail_every,
            "failed-validation": faults.fail_validation,
            "vanished": faults.vanish,
        }.items()
        if v
    )
    assert len(log[-1]["sent"]) == resent[kind] and s.run.batches == 2
    if kind == "vanished":
        assert "6 row(s) of batches the server no longer knows were resubmitted" in s.run.note


def test_cancelled_batch_resubmits_only_its_missing_rows(runner, data, tmp_path):
    import openai

    with start_server(runner, faults=BatchFaults(delay=0.3, batches=1)) as url:
        client = openai.OpenAI(base_url=url, api_key="none")

        def cancel_when_two_done() -> None:
            for _ in range(200):
                got = list(client.batches.list())
                if got and got[0].request_counts and got[0].request_counts.completed >= 2:
                    client.batches.cancel(got[0].id)
                    return
                time.sleep(0.05)

        t = threading.Thread(target=cancel_when_two_done)
        t.start()
        s, rows = rate(data, url, tmp_path)
        t.join()
        log = server_log(url)
    assert log[0]["status"] == "cancelled" and 2 <= len(log[0]["ran"]) < 6
    assert len(log[1]["sent"]) == 6 - len(log[0]["ran"])
    never_paid_twice(log)
    all_rated_once(rows, log)


def cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "alpagasus.cli", "rate", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


@pytest.mark.slow
def test_kill_9_while_waiting_then_rerun_reattaches(runner, data, tmp_path):
    store = tmp_path / "s.sqlite"
    args = [
        str(data),
        "-o",
        str(tmp_path / "out.jsonl"),
        "--judge",
        JUDGE,
        "--mode",
        "logprob",
        "--batch",
        "--batch-poll",
        str(POLL),
        "--min-label-mass",
        "0",
        "--store",
        str(store),
    ]
    with start_server(runner, faults=BatchFaults(delay=0.4, batches=1)) as url:
        proc = cli(*args, "--base-url", url)
        deadline = time.time() + 60
        while time.time() < deadline:  # killed once the batch is recorded and running on the server
            with sqlite3.connect(store) if store.exists() else sqlite3.connect(":memory:") as db:
                try:
                    if db.execute("SELECT batch_id FROM batches WHERE batch_id IS NOT NULL").fetchone():
                        break
                except sqlite3.Error:
                    pass
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # as if killed between `batches.create` and recording its id: the rerun finds it by its metadata
        with sqlite3.connect(store) as db:
            db.execute("UPDATE batches SET batch_id=NULL, state='uploaded'")
        again = cli(*args, "--base-url", url)
        out, _ = again.communicate(timeout=60)
        log = server_log(url)
    assert again.returncode == 0, out.decode()
    assert len(log) == 1 and len(log[0]["ran"]) == 6  # exactly one batch on the server, each row run once
    assert "1 batch(es) of an earlier run re-attached" in out.decode()
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    all_rated_once(rows, log)


@pytest.mark.slow
def test_compare_batch_and_non_openai_judge_refused(runner, data, tmp_path):
    from alpagasus.compare import compare_files

    qs = [("1", "What is 2+2?"), ("2", "Name a colour."), ("3", "Say hi.")]
    for name in ("a", "b"):
        (tmp_path / f"{name}.jsonl").write_text(
            "".join(
                json.dumps(
                    {
                        "testset": "vicuna",
                        "question_id": i,
                        "question": q,
                        "answer": f"{name} answer {i}",
                        "model": name,
                    }
                )
                + "\n"
                for i, q in qs
            )
        )
    files = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    with start_server(runner) as url:
        rep = compare_files(
            files,
            tmp_path / "cmp",
            judge=JUDGE,
            judge_options={"base_url": url},
            store_path=tmp_path / "s.sqlite",
            options=RunOptions(batch=True, batch_poll_s=POLL, max_tokens=8, max_reasks=0),
        )
        log = server_log(url)
    assert [len(b["sent"]) for b in log] == [6] and rep.result.judging.run.batches == 1  # 3 questions x 2 orders
    assert len(rep.result.judgments) == 6
    with pytest.raises(UserError, match="--batch needs a judge with a provider Batch API"):
        rate_file(
            data,
            tmp_path / "o.jsonl",
            judge="predictor:alpaca-claude-accuracy",
            store_path=tmp_path / "s2.sqlite",
            options=RunOptions(batch=True),
        )


def test_files_split_within_the_limits_and_bodies_are_the_direct_ones(runner, data, tmp_path):
    import openai

    from alpagasus import judges
    from alpagasus.engine.batch import BatchLimits, run_batch
    from alpagasus.engine.loop import run_sync
    from alpagasus.engine.types import Item
    from alpagasus.prompts import load_template
    from alpagasus.prompts.rubric import Rubric
    from alpagasus.rate.loop import build_request
    from alpagasus.records import Example
    from alpagasus.store import Store

    t = load_template("accuracy")
    exs = [
        Example.alpaca(r["instruction"], r["input"], r["output"])
        for r in map(json.loads, data.read_text().splitlines())
    ]
    with start_server(runner) as url, Store(tmp_path / "s.sqlite") as st:
        j = judges.get(JUDGE, base_url=url, mode="logprob", top_logprobs=800)
        items = [Item(e.id, build_request(e, t, "logprob")) for e in exs]
        want = {it.key: j.body(it.request) for it in items}
        one_line = len(json.dumps({"custom_id": items[0].key, "body": want[items[0].key]})) + 200
        s = run_sync(
            run_batch(
                items,
                j,
                st,
                Rubric.rating(t),
                RunOptions(batch=True, batch_poll_s=POLL, min_label_mass=0.0),
                limits=BatchLimits(max_requests=4, max_bytes=2 * one_line),
            ),
            j,
        )
        client = openai.OpenAI(base_url=url, api_key="none")
        sent = [
            [json.loads(x) for x in client.files.content(b.input_file_id).text.splitlines()]
            for b in reversed(list(client.batches.list()))
        ]
    # 2 lines fit in a file by bytes, 4 by count: 6 rows -> 3 files of 2
    assert [len(f) for f in sent] == [2, 2, 2] and s.batches == 3 and s.ok == 6
    assert all(
        line["body"] == want[line["custom_id"]] and line["url"] == "/v1/chat/completions" for f in sent for line in f
    )
