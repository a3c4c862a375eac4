"""The anthropic: judge (judges/anthropic.py) through the official `anthropic` client against `alpagasus serve`'s
Messages API and Message Batches (serve/anthropic_api.py) on 127.0.0.1: direct rating from the CLI, --batch end
to end (with the server's faults, a kill and a re-attach), 429 and 529 waited for, 401 refused, logprob mode
refused. What the server ran is read back from it with the anthropic client, so "never paid twice" is checked on
the server's side."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from alpagasus import judges
from alpagasus.devtools.faultproxy import FaultProxy, Rule
from alpagasus.engine import RunOptions
from alpagasus.errors import UserError
from alpagasus.judges.base import JudgeError
from alpagasus.rate import rate_file
from alpagasus.redact import redact
from alpagasus.serve import BatchFaults, ModelRunner, start_server

anthropic = pytest.importorskip("anthropic")  # the `anthropic` extra (in `all`)

MODEL = "tiny"
JUDGE = f"anthropic:{MODEL}"
POLL = 0.05
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runner(tiny_model):
    return ModelRunner(str(tiny_model), name=MODEL)


@pytest.fixture(scope="module")
def served(tiny_model, tmp_path_factory):
    """`alpagasus serve` in its own process (as a user runs it): its root URL, http://127.0.0.1:PORT."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("serve") / "serve.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "alpagasus.cli", "serve", "--model", str(tiny_model), "--port", str(port)]
        + ["--name", MODEL],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=ENV,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while True:
        try:
            urllib.request.urlopen(url + "/v1/models", timeout=2)
            break
        except OSError:
            assert proc.poll() is None and time.time() < deadline, Path(log.name).read_text()
            time.sleep(0.3)
    yield url
    proc.terminate()
    proc.wait(20)
    log.close()


@pytest.fixture(scope="module")
def rows(alpaca_rows) -> list[dict]:
    """Ten real Alpaca rows with a response."""
    return [{k: r[k] for k in ("instruction", "input", "output")} for r in alpaca_rows if r["output"].strip()][:10]


@pytest.fixture
def data(rows, tmp_path) -> Path:
    path = tmp_path / "ten.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "alpagasus.cli", "rate", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=ENV,
    )


def read_rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def server_log(url: str) -> list[dict]:
    """Every message batch the server holds, oldest first: its status, and the custom ids of its requests that
    succeeded (run and billed) and of the others (errored, expired, canceled: not billed)."""
    client = anthropic.Anthropic(base_url=url.removesuffix("/v1"), api_key="none")
    out = []
    for b in reversed(list(client.messages.batches.list(limit=100))):
        ran: list[str] = []
        not_run: list[str] = []
        if b.processing_status == "ended":
            for r in client.messages.batches.results(b.id):
                (ran if r.result.type == "succeeded" else not_run).append(r.custom_id)
        out.append(
            {"id": b.id, "status": b.processing_status, "ran": ran, "not_run": not_run, "counts": b.request_counts}
        )
    return out


def never_paid_twice(log: list[dict]) -> None:
    """No row that succeeded (was billed) in a batch is ever sent in a later batch."""
    ran: set[str] = set()
    for b in log:
        sent = b["ran"] + b["not_run"]
        assert not ran & set(sent), f"{b['id']} resent rows already answered"
        assert len(set(sent)) == len(sent)
        ran |= set(b["ran"])


# ---- the server speaks the Messages API ---------------------------------------------------------------------
def test_server_speaks_the_messages_api_with_system_prefill_and_key(runner):
    with start_server(runner, api_key="sk-ant-api03-" + "k" * 40) as url:
        root = url.removesuffix("/v1")
        client = anthropic.Anthropic(base_url=root, api_key="sk-ant-api03-" + "k" * 40)
        m = client.messages.create(
            model=MODEL,
            max_tokens=3,
            system="Answer with a digit.",
            messages=[{"role": "user", "content": "Say 4"}, {"role": "assistant", "content": "Score:"}],
        )
        assert m.model == MODEL and m.type == "message" and m.content[0].type == "text"
        assert m.usage.output_tokens <= 3 and m.usage.input_tokens > 0 and m.stop_reason in ("end_turn", "max_tokens")
        with pytest.raises(anthropic.BadRequestError, match="messages"):
            client.messages.create(model=MODEL, max_tokens=3, messages=[])
        with pytest.raises(anthropic.AuthenticationError):
            anthropic.Anthropic(base_url=root, api_key="wrong-key-123").messages.create(
                model=MODEL, max_tokens=3, messages=[{"role": "user", "content": "hi"}]
            )


# ---- direct rating ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_rate_ten_alpaca_rows_from_the_cli_then_nothing_twice(served, data, tmp_path):
    out, store = tmp_path / "out.jsonl", tmp_path / "s.sqlite"
    args = [str(data), "-o", str(out), "--judge", JUDGE, "--base-url", served, "--store", str(store)]
    args += ["--max-tokens", "8", "--price-in", "3", "--price-out", "15"]
    p = cli(*args)
    text, _ = p.communicate(timeout=300)
    assert p.returncode == 0, text.decode()
    rows = read_rows(out)
    assert len(rows) == 10 and all(r["status"] in ("ok", "unparsed") for r in rows)
    assert all(r["judge"] == f"{JUDGE}#generate" and r["model"] == MODEL and r["raw"] is not None for r in rows)
    with sqlite3.connect(store) as db:
        tin, tout = db.execute("SELECT SUM(tokens_in), SUM(tokens_out) FROM replies").fetchone()
    assert tin > 10 * 100 and 10 <= tout <= 10 * 3 * 8  # usage read back; at most 3 asks of 8 tokens per row
    again = cli(*args)
    text, _ = again.communicate(timeout=300)
    assert again.returncode == 0 and "nothing to do" in text.decode(), text.decode()  # no request sent again


def test_logprob_mode_is_refused_with_a_clear_error(served, data, tmp_path):
    with pytest.raises(JudgeError, match="generate mode only.*no log-probabilities"):
        judges.get(JUDGE, mode="logprob", base_url=served)
    p = cli(str(data), "-o", str(tmp_path / "o.jsonl"), "--judge", JUDGE, "--mode", "logprob", "--base-url", served)
    text, _ = p.communicate(timeout=120)
    assert p.returncode == 2 and "error: " in text.decode() and "--mode logprob" in text.decode()
    assert not (tmp_path / "o.jsonl").exists()


def test_refused_key_stops_the_run_and_is_redacted(runner, data, tmp_path):
    key = "sk-ant-api03-" + "Z" * 40
    with start_server(runner, api_key="the-right-key-42") as url:
        with pytest.raises(UserError, match="refused") as e:
            rate_file(
                data,
                tmp_path / "o.jsonl",
                judge=JUDGE,
                judge_options={"base_url": url, "api_key": key},
                store_path=tmp_path / "s.sqlite",
                options=RunOptions(max_tokens=8),
            )
    assert key not in str(e.value) and key[:20] not in str(e.value)
    assert redact(f"Invalid key {key}") == "Invalid key [redacted]"  # an Anthropic key anywhere, given or not
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM replies").fetchone()[0] == 0  # refused rows are asked again later


def test_429_through_the_fault_proxy_waits_retry_after_and_costs_no_attempt(served, rows, tmp_path):
    from alpagasus.prompts import load_template
    from alpagasus.rate.loop import rate
    from alpagasus.records import Example
    from alpagasus.store import Store

    exs = [Example.alpaca(r["instruction"], r["input"], r["output"]) for r in rows[:4]]
    t = load_template("accuracy")
    with FaultProxy(served, [Rule("429", requests={0, 1, 2}, retry_after=1.0)]) as proxy:
        j = judges.get(JUDGE, base_url=proxy.url, concurrency=2)
        with Store(tmp_path / "s.sqlite") as st:
            s = rate(exs, j, t, st, RunOptions(max_tokens=8, max_reasks=0))
            got = st.get_many([e.id for e in exs], j.id, t.version)
        events = proxy.events
    assert s.run.throttled == 3 == sum(e.status == 429 for e in events) and s.run.error == 0
    assert len(got) == 4 and all(r.attempts == 1 for r in got.values())  # a 429 is no attempt
    firsts = {e.key: e for e in reversed(events) if e.status == 429}
    for e in events:
        if e.key in firsts and e.status == 200:
            assert e.received - firsts[e.key].sent >= 1.0  # never before the Retry-After


class Overloaded:
    """A real HTTP server in front of another: its first `n` POSTs are answered 529 overloaded_error with a
    Retry-After, as Anthropic's API answers when it is overloaded; the rest are forwarded."""

    def __init__(self, upstream: str, n: int, retry_after: float):
        self.seen: list[tuple[float, int, str]] = []  # (when, status, the request's messages)
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                key = json.dumps(json.loads(body)["messages"])
                if len(outer.seen) < n:
                    outer.seen.append((time.monotonic(), 529, key))
                    data = json.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
                    return self._reply(529, data.encode(), {"retry-after": f"{retry_after:g}"})
                outer.seen.append((time.monotonic(), 200, key))
                req = urllib.request.Request(upstream + self.path, body, {"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=60) as r:
                    self._reply(r.status, r.read(), {})

            def _reply(self, code: int, data: bytes, headers: dict):
                self.send_response(code)
                for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Overloaded:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_529_overloaded_is_waited_for_and_costs_no_attempt(served, data, tmp_path):
    with Overloaded(served, n=2, retry_after=1.0) as srv:
        s = rate_file(
            data,
            tmp_path / "o.jsonl",
            judge=JUDGE,
            judge_options={"base_url": srv.url, "concurrency": 1},
            store_path=tmp_path / "s.sqlite",
            options=RunOptions(max_tokens=8, max_reasks=0),
            limit=2,
        )
    assert s.run.throttled == 2 and s.run.error == 0 and s.run.ok + s.run.unparsed == 2
    busy = {key: t for t, code, key in srv.seen if code == 529}
    retried = [t - busy[key] for t, code, key in srv.seen if code == 200 and key in busy]
    assert len(busy) == 2 and len(retried) == 2 and min(retried) >= 1.0  # each retry after the Retry-After
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        assert [a for (a,) in db.execute("SELECT attempts FROM replies")] == [1, 1]


# ---- --batch through Message Batches ------------------------------------------------------------------------
def batch_rate(data: Path, url: str, tmp: Path, **opts) -> tuple:
    opts = {"batch": True, "batch_poll_s": POLL, "max_tokens": 8, "max_reasks": 0, **opts}
    out = tmp / "out.jsonl"
    s = rate_file(
        data, out, judge=JUDGE, judge_options={"base_url": url}, store_path=tmp / "s.sqlite", options=RunOptions(**opts)
    )
    return s, read_rows(out)


def all_rated_once(rows: list[dict], log: list[dict]) -> None:
    assert len(rows) == 10 and all(r["status"] in ("ok", "unparsed") for r in rows)
    never_paid_twice(log)
    assert sorted(k for b in log for k in b["ran"]) == sorted(r["id"] for r in rows)


def test_batch_rates_every_row_once_at_half_price(runner, data, tmp_path):
    with start_server(runner) as url:
        s, rows = batch_rate(data, url, tmp_path, price_in=3.0, price_out=15.0)
        log = server_log(url)
    assert [len(b["ran"]) for b in log] == [10] and s.run.batches == 1 and s.run.requests_sent == 10
    all_rated_once(rows, log)
    direct = RunOptions(price_in=3.0, price_out=15.0).cost(s.run.tokens_in, s.run.tokens_out)
    assert s.run.tokens_in > 1000 and s.run.cost == pytest.approx(direct / 2)
    assert log[0]["counts"].succeeded == 10 and "1 batch(es) created" in s.run.note


@pytest.mark.slow
@pytest.mark.parametrize(
    "faults,statuses,resent",
    [
        (BatchFaults(expire_after=3, batches=1), ["ended", "ended"], 7),
        (BatchFaults(fail_every=4, batches=1), ["ended", "ended"], 2),  # 500 api_error results: retried
        (BatchFaults(vanish=True, batches=1), ["ended"], 10),  # the vanished batch is not listed any more
    ],
    ids=["expired", "partly-errored", "vanished"],
)
def test_faulty_message_batches_end_with_every_row_rated_once(runner, data, tmp_path, faults, statuses, resent):
    with start_server(runner, faults=faults) as url:
        s, rows = batch_rate(data, url, tmp_path)
        log = server_log(url)
    assert [b["status"] for b in log] == statuses and s.run.batches == 2
    all_rated_once(rows, log)
    last = log[-1]
    assert len(last["ran"]) + len(last["not_run"]) == resent
    if faults.vanish:
        assert "10 row(s) of batches the server no longer knows were resubmitted" in s.run.note


@pytest.mark.slow
def test_cancelled_message_batch_resubmits_only_its_missing_rows(runner, data, tmp_path):
    with start_server(runner, faults=BatchFaults(delay=0.3, batches=1)) as url:
        client = anthropic.Anthropic(base_url=url.removesuffix("/v1"), api_key="none")

        def cancel_when_two_done() -> None:
            for _ in range(400):
                got = list(client.messages.batches.list())
                if got and got[0].request_counts.succeeded >= 2:
                    client.messages.batches.cancel(got[0].id)
                    return
                time.sleep(0.05)

        t = threading.Thread(target=cancel_when_two_done)
        t.start()
        s, rows = batch_rate(data, url, tmp_path)
        t.join()
        log = server_log(url)
    assert len(log) == 2 and 2 <= len(log[0]["ran"]) < 10 and log[0]["counts"].canceled == len(log[0]["not_run"])
    assert sorted(log[1]["ran"]) == sorted(log[0]["not_run"])
    all_rated_once(rows, log)


@pytest.mark.slow
@pytest.mark.parametrize("lost_id", [False, True], ids=["killed-waiting", "killed-before-the-id-was-recorded"])
def test_kill_9_while_waiting_then_rerun_reattaches_and_pays_nothing_twice(runner, data, tmp_path, lost_id):
    store = tmp_path / "s.sqlite"
    args = [str(data), "-o", str(tmp_path / "out.jsonl"), "--judge", JUDGE, "--batch", "--batch-poll", str(POLL)]
    args += ["--max-tokens", "8", "--store", str(store)]
    with start_server(runner, faults=BatchFaults(delay=0.4, batches=1)) as url:
        proc = cli(*args, "--base-url", url)
        deadline = time.time() + 120
        while time.time() < deadline:  # killed once the batch is recorded and running on the server
            try:
                with sqlite3.connect(store) as db:
                    if db.execute("SELECT batch_id FROM batches WHERE batch_id IS NOT NULL").fetchone():
                        break
            except sqlite3.Error:
                pass
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        if lost_id:  # as if killed between `create` and recording its id: found again by what the server shows
            with sqlite3.connect(store) as db:
                db.execute("UPDATE batches SET batch_id=NULL, state='recorded'")
        again = cli(*args, "--base-url", url)
        out, _ = again.communicate(timeout=180)
        log = server_log(url)
    assert again.returncode == 0, out.decode()
    # exactly one batch on the server, each row run once; re-asks (if any) went into later batches
    assert len(log[0]["ran"]) == 10 and "1 batch(es) of an earlier run re-attached" in out.decode()
    never_paid_twice([log[0]])
    rows = read_rows(tmp_path / "out.jsonl")
    assert len(rows) == 10 and all(r["status"] in ("ok", "unparsed") for r in rows)


def test_a_429_costs_the_same_in_the_direct_and_the_batch_engine(data, tmp_path):
    """engine/retry.py is the one policy: a throttled reply is no attempt, whichever engine received it."""
    from alpagasus.backends.http import http_error
    from alpagasus.engine import run_items, run_sync
    from alpagasus.engine.batch import run_batch
    from alpagasus.engine.batchapi import BatchLimits, BatchState
    from alpagasus.engine.types import Item
    from alpagasus.prompts import load_template
    from alpagasus.prompts.rubric import Rubric
    from alpagasus.rate.loop import build_request
    from alpagasus.records import Example
    from alpagasus.store import Store
    from fakes import FakeJudge

    class ScriptedBatch:
        """A provider batch that answers each request with the FakeJudge's next scripted reply."""

        provider, limits = "scripted", BatchLimits()

        def __init__(self, judge: FakeJudge):
            self.judge = judge
            self.sent: dict[str, list[str]] = {}  # batch id -> custom ids

        def line(self, custom_id, request):
            return {"custom_id": custom_id}

        async def submit(self, key, lines, record):
            bid = f"b{len(self.sent)}"
            self.sent[bid] = [line["custom_id"] for line in lines]
            record(batch_id=bid)
            return BatchState(bid, "running", ended=False)

        async def find(self, key, since, size, known):
            return None

        async def poll(self, batch_id):
            return BatchState(batch_id, "ended", ended=True) if batch_id in self.sent else None

        async def results(self, state, request_of):
            for cid in self.sent[state.batch_id]:
                yield cid, self.judge.score_sync([request_of(cid)])[0]

        async def cancel(self, batch_id):
            pass

        def error(self, e):
            return None

    t = load_template("accuracy")
    exs = [
        Example.alpaca(r["instruction"], r["input"], r["output"])
        for r in map(json.loads, data.read_text().splitlines())
    ][:3]
    throttled = http_error(429, "rate limited", retry_after=0.01)

    def script() -> dict:
        return {e.id: [throttled, throttled, "4\nfine"] for e in exs}

    counts, attempts = [], []
    for path in ("direct", "batch"):
        j = FakeJudge("x", reply=script(), threaded=False)
        items = [Item(e.id, build_request(e, t, "generate")) for e in exs]
        opts = RunOptions(backoff_s=0.01, batch_poll_s=0.01, batch=path == "batch")
        with Store(tmp_path / f"{path}.sqlite") as st:
            if path == "batch":
                j.batch_api = ScriptedBatch(j)
                s = run_sync(run_batch(items, j, st, Rubric.rating(t), opts), j)
            else:
                s = run_sync(run_items(items, j, st, Rubric.rating(t), opts), j)
            got = st.get_many([e.id for e in exs], j.id, t.version)
        counts.append((s.ok, s.throttled, s.error))
        attempts.append(sorted(r.attempts for r in got.values()))
    assert counts == [(3, 6, 0), (3, 6, 0)] and attempts == [[1, 1, 1], [1, 1, 1]]
