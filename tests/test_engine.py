"""The judging engine on its own: scripted judges (tests/fakes.py), real SQLite stores, no model.

run_items / run_sync (the sliding window, re-asks, retries, 429s, the context check, store-write failures),
settle on single replies, the small formulas of engine/types.py, and judging_session (store, lock, closing).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from alpagasus.engine import (
    Item,
    RunCounts,
    RunOptions,
    StoreWriteError,
    final_statuses,
    judging_session,
    run_items,
    run_sync,
    settle,
)
from alpagasus.engine.loop import _batches, chunked, too_long
from alpagasus.engine.types import ADDED, SPENT
from alpagasus.errors import UserError
from alpagasus.prompts import load_template
from alpagasus.prompts.rubric import Rubric
from alpagasus.records import Reply, Request
from alpagasus.store import FINAL, Store
from fakes import FakeJudge

RATING = Rubric.rating(load_template("accuracy"))  # scale 0-5
PAIRWISE = Rubric.pairwise(load_template("pairwise"))  # scale 1-10, Assistant 2's score in extra


def item(key: str, user: str = "", system: str = "") -> Item:
    return Item(key, Request(key=key, system=system, user=user or f"rate {key}"))


def run(items, judge, store, rubric=RATING, options=None) -> RunCounts:
    return asyncio.run(run_items(items, judge, store, rubric, options))


class Recorder(FakeJudge):
    """A FakeJudge that keeps every Request it receives (temperature, max_tokens...) and when it was called."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.requests: list[Request] = []
        self.call_times: list[float] = []

    async def score(self, requests):
        self.call_times.append(time.monotonic())
        self.requests += [Request(**vars(r)) for r in requests]  # a copy: the engine mutates them on re-asks
        return await super().score(requests)


# ---- run_items: settling, storing, counting ---------------------------------------------------------------
def test_every_item_is_settled_once_stored_with_the_prompt_version_and_counted(tmp_path):
    def reply(r: Request):
        if r.key.startswith("ok"):
            return Reply(text=f"Score: {int(r.key[2:]) % 6}\nbecause", tokens_in=10, tokens_out=3, model="m")
        if r.key == "nonsense":
            return Reply(text="I would rather not say", tokens_in=7, tokens_out=5)
        return Reply(error="HTTP 400: bad request", retryable=False)

    keys = [f"ok{i}" for i in range(6)] + ["nonsense", "bad"]
    judge = FakeJudge(reply=reply, id="scripted#generate", batch_size=3, concurrency=2)
    with Store(tmp_path / "s.sqlite") as st:
        counts = run([item(k) for k in keys], judge, st, options=RunOptions(max_reasks=0))
        assert isinstance(counts, RunCounts)
        assert (counts.judge, counts.prompt_version) == ("scripted#generate", RATING.version)
        assert (counts.to_judge, counts.requests_sent) == (8, 8)
        assert (counts.ok, counts.unparsed, counts.error, counts.invalid_input) == (6, 1, 1, 0)
        assert counts.done == 8
        assert (counts.tokens_in, counts.tokens_out) == (6 * 10 + 7, 6 * 3 + 5)
        assert counts.cost is None and counts.elapsed_s > 0
        assert sorted(judge.asked) == sorted(keys)  # each asked exactly once
        assert st.count() == 8
        got = st.get_many(keys, "scripted#generate", RATING.version)
        assert set(got) == set(keys)
        for i in range(6):
            r = got[f"ok{i}"]
            assert (r.status, r.score, r.explanation, r.model, r.tokens_in, r.attempts) == (
                "ok",
                float(i % 6),
                "because",
                "m",
                10,
                1,
            )
        assert (got["nonsense"].status, got["nonsense"].score, got["nonsense"].raw) == (
            "unparsed",
            None,
            "I would rather not say",
        )
        assert (got["bad"].status, got["bad"].score) == ("error", None)
        assert "HTTP 400" in got["bad"].raw
        # nothing under another prompt version
        assert st.get("ok1", "scripted#generate", "other@v") is None


def test_cost_is_computed_from_the_run_tokens_when_prices_are_given(tmp_path):
    judge = FakeJudge(reply=Reply(text="4", tokens_in=1000, tokens_out=200))
    with Store(tmp_path / "s.sqlite") as st:
        counts = run([item(f"k{i}") for i in range(3)], judge, st, options=RunOptions(price_in=2.0, price_out=10.0))
    assert counts.ok == 3
    assert counts.cost == pytest.approx((3000 * 2.0 + 600 * 10.0) / 1e6)


def test_a_generator_of_items_is_pulled_lazily(tmp_path):
    n, pulled, seen_at_call = 1200, [0], []

    def items():
        for i in range(n):
            pulled[0] += 1
            yield item(f"k{i}")

    judge = FakeJudge(
        reply=Reply(score=3.0),
        batch_size=2,
        concurrency=1,
        threaded=False,
        on_call=lambda reqs: seen_at_call.append(pulled[0]),
    )
    with Store(tmp_path / "s.sqlite") as st:
        counts = run(items(), judge, st)
        assert counts.ok == n and st.count(status="ok") == n
    assert len(seen_at_call) == n // 2
    # items are admitted one at a time as the window pulls them: never more than one window (plus the batch
    # being filled) ahead of the calls made
    ahead = [seen - k * judge.batch_size for k, seen in enumerate(seen_at_call)]
    assert seen_at_call[0] <= judge.batch_size * judge.concurrency + 1
    assert max(ahead) <= judge.batch_size * judge.concurrency + judge.batch_size
    # and it keeps reading as replies come back (not everything up front)
    assert seen_at_call[-1] == n and min(seen_at_call) < n


# ---- re-asks, retries, throttling ---------------------------------------------------------------------------
def test_a_reply_without_a_score_is_asked_again_with_more_temperature_then_stored_unparsed(tmp_path):
    judge = Recorder(
        reply={"a": ["no idea", "still thinking", "hmm, hard to say"], "b": ["what?", "Score: 4\nfine now"]}
    )
    with Store(tmp_path / "s.sqlite") as st:
        counts = run([item("a"), item("b")], judge, st, options=RunOptions(max_reasks=2))
        a = st.get("a", judge.id, RATING.version)
        b = st.get("b", judge.id, RATING.version)
        reasks = [row for row in st.attempts() if row[4] == "reask"]
    temps = {k: [r.temperature for r in judge.requests if r.key == k] for k in "ab"}
    assert temps == {"a": [0.0, 0.7, 0.7], "b": [0.0, 0.7]}
    assert (counts.ok, counts.unparsed, counts.requests_sent) == (1, 1, 5)
    assert (a.status, a.score, a.raw) == ("unparsed", None, "hmm, hard to say")  # the raw reply, never a number
    assert a.extra["asks"] == 3 and a.attempts == 3 and a.explanation
    assert (b.status, b.score, b.explanation) == ("ok", 4.0, "fine now")
    assert sorted(row[0] for row in reasks) == ["a", "a", "b"]
    assert all(row[2] == RATING.version for row in reasks)


def test_a_score_outside_the_scale_is_unparsed(tmp_path):
    judge = FakeJudge(reply={"computed": [Reply(score=7.0)], "written": ["Score: 9"]})
    with Store(tmp_path / "s.sqlite") as st:
        counts = run([item("computed"), item("written")], judge, st, options=RunOptions(max_reasks=0))
        c = st.get("computed", judge.id, RATING.version)
        w = st.get("written", judge.id, RATING.version)
    assert (counts.ok, counts.unparsed) == (0, 2)
    assert (c.status, c.score, c.raw) == ("unparsed", None, "7.0")
    assert "outside the scale" in c.explanation
    assert (w.status, w.score, w.raw) == ("unparsed", None, "Score: 9")
    assert "outside the scale" in w.explanation


def test_a_retryable_error_is_retried_with_backoff_then_stored_as_error(tmp_path):
    judge = Recorder(reply="!HTTP 503: busy")
    opts = RunOptions(max_attempts=3, backoff_s=0.01)
    with Store(tmp_path / "s.sqlite") as st:
        counts = run([item("x")], judge, st, options=opts)
        r = st.get("x", judge.id, RATING.version)
        log = st.attempts("x")
    assert (counts.requests_sent, counts.error, counts.ok) == (3, 1, 0)
    assert (r.status, r.score, r.attempts) == ("error", None, 3)
    assert "HTTP 503" in r.raw
    assert [row[4] for row in log] == ["error", "error"]  # the two failures that were retried
    assert all("HTTP 503" in row[5] for row in log)
    gaps = [b - a for a, b in zip(judge.call_times, judge.call_times[1:])]
    # backoff(1) >= 0.5 * 0.01, backoff(2) >= 0.5 * 0.02 (jitter 0.5x-1.5x); and the small backoff_s was used
    assert gaps[0] >= 0.005 and gaps[1] >= 0.01
    assert all(g < 0.5 for g in gaps)


def test_a_non_retryable_error_is_stored_at_once(tmp_path):
    judge = FakeJudge(reply=Reply(error="HTTP 400: context too long", retryable=False))
    with Store(tmp_path / "s.sqlite") as st:
        counts = run([item("x")], judge, st, options=RunOptions(max_attempts=5, backoff_s=0.01))
        r = st.get("x", judge.id, RATING.version)
        assert st.attempts() == []
    assert judge.calls == 1 and counts.requests_sent == 1 and counts.error == 1
    assert (r.status, r.attempts, r.raw) == ("error", 1, "HTTP 400: context too long")


def test_a_backend_exception_is_retried_like_a_transport_error(tmp_path):
    class Flaky(FakeJudge):
        async def score(self, requests):
            self.calls += 1
            if self.calls == 1:
                raise ConnectionResetError("peer went away")
            return [Reply(text="5") for _ in requests]

    judge = Flaky()
    with Store(tmp_path / "s.sqlite") as st:
        counts = run([item("x")], judge, st, options=RunOptions(backoff_s=0.01))
        r = st.get("x", judge.id, RATING.version)
        log = st.attempts("x")
    assert (counts.ok, counts.requests_sent) == (1, 2)
    assert (r.score, r.attempts) == (5.0, 2)
    assert [row[4] for row in log] == ["error"] and "ConnectionResetError" in log[0][5]


def test_a_429_waits_retry_after_and_is_not_charged_an_attempt(tmp_path):
    throttled = Reply(error="HTTP 429: slow down", extra={"throttled": True}, retry_after=0.05)
    judge = Recorder(reply={"x": [throttled, throttled, "Score: 4"]})
    with Store(tmp_path / "s.sqlite") as st:
        counts = run([item("x")], judge, st, options=RunOptions(max_attempts=1, backoff_s=0.01))
        r = st.get("x", judge.id, RATING.version)
        log = st.attempts("x")
    # max_attempts=1: had the 429s been charged, the item would have been stored as an error
    assert (r.status, r.score, r.attempts) == ("ok", 4.0, 1)
    assert (counts.throttled, counts.ok, counts.error, counts.requests_sent) == (2, 1, 0, 3)
    assert [row[4] for row in log] == ["throttled", "throttled"]
    gaps = [b - a for a, b in zip(judge.call_times, judge.call_times[1:])]
    assert all(g >= 0.049 for g in gaps)  # never before the server's Retry-After


def test_too_many_429s_are_finally_charged_and_stored_as_error(tmp_path):
    judge = FakeJudge(reply=Reply(error="HTTP 429", extra={"throttled": True}, retry_after=0.001))
    opts = RunOptions(max_throttled=2, max_attempts=1, backoff_s=0.001)
    with Store(tmp_path / "s.sqlite") as st:
        counts = run([item("x")], judge, st, options=opts)
        r = st.get("x", judge.id, RATING.version)
    assert (counts.throttled, counts.error, counts.requests_sent) == (2, 1, 3)
    assert (r.status, r.attempts) == ("error", 1)


# ---- the context check and the reply cap -------------------------------------------------------------------
class ShortContext(Recorder):
    @property
    def max_context(self):
        return 300


def test_items_too_long_for_the_context_are_stored_invalid_without_a_request(tmp_path):
    judge = ShortContext(reply="Score: 3", mode="generate")
    long_text = "word " * 400  # ~500 tokens at 4 characters a token: over 300 - max_tokens
    items = [item("short1"), item("long1", user=long_text), item("short2"), item("long2", system=long_text)]
    with Store(tmp_path / "s.sqlite") as st:
        counts = run(items, judge, st, options=RunOptions(max_tokens=100))
        long1 = st.get("long1", judge.id, RATING.version)
        assert st.count(status="invalid_input") == 2 and st.count(status="ok") == 2
    assert sorted(judge.asked) == ["short1", "short2"]  # the long ones were never sent
    assert (counts.to_judge, counts.requests_sent, counts.invalid_input, counts.ok) == (4, 2, 2, 2)
    assert (long1.status, long1.score) == ("invalid_input", None)
    assert "too long" in long1.explanation and "200" in long1.explanation  # room = 300 - 100
    assert [r.max_tokens for r in judge.requests] == [100, 100]  # the run's reply cap on every request


def test_a_never_sent_item_reads_back_with_zero_attempts(tmp_path):
    judge = ShortContext(mode="generate")
    with Store(tmp_path / "s.sqlite") as st:
        run([item("long", user="x" * 5000)], judge, st, options=RunOptions(max_tokens=100))
        (stored,) = st.db.execute("SELECT attempts FROM replies WHERE item_id='long'").fetchone()
        assert stored == 0  # written as never sent...
        assert st.get("long", judge.id, RATING.version).attempts == 0  # ...but read back as 1


def test_max_tokens_reaches_every_request_including_reasks(tmp_path):
    judge = Recorder(reply={"a": ["??", "Score: 2"], "b": ["Score: 1"]})
    with Store(tmp_path / "s.sqlite") as st:
        run([item("a"), item("b")], judge, st, options=RunOptions(max_tokens=37))
    assert len(judge.requests) == 3
    assert {r.max_tokens for r in judge.requests} == {37}


def test_too_long_directly():
    judge = ShortContext(mode="generate")
    fits, over = item("fits", user="x" * 100), item("over", user="x" * 2000)
    assert too_long(fits, judge, "v@1", max_tokens=100) is None
    r = too_long(over, judge, "v@1", max_tokens=100)
    assert (r.example_id, r.status, r.prompt_version, r.judge) == ("over", "invalid_input", "v@1", judge.id)
    # logprob mode keeps room for one token only: the same prompt now fits
    lp = ShortContext(mode="logprob")
    mid = item("mid", user="x" * 1000)  # 250 + 16 tokens: > 300 - 100, <= 300 - 1
    assert too_long(mid, judge, "v", 100) is not None and too_long(mid, lp, "v", 100) is None
    # a judge with no known context keeps everything
    assert too_long(over, FakeJudge(), "v", 100) is None


# ---- store failures -------------------------------------------------------------------------------------------
class FullStore(Store):
    def put_many(self, ratings):
        raise sqlite3.OperationalError("database or disk is full")


def test_a_store_write_failure_stops_the_run_with_a_resumable_message(tmp_path):
    path = tmp_path / "full.sqlite"
    judge = FakeJudge(reply="Score: 4")
    with FullStore(path) as st, pytest.raises(StoreWriteError) as err:
        run([item(f"k{i}") for i in range(5)], judge, st)
    msg = str(err.value)
    assert str(path) in msg
    assert "database or disk is full" in msg
    assert "run the same command again to resume" in msg


def test_a_store_write_failure_while_storing_invalid_input_is_a_store_write_error(tmp_path):
    path = tmp_path / "full.sqlite"
    judge = ShortContext(mode="generate")
    with FullStore(path) as st, pytest.raises(StoreWriteError, match="resume"):
        run([item("long", user="x" * 5000)], judge, st, options=RunOptions(max_tokens=100))
    assert judge.calls == 0


# ---- run_sync --------------------------------------------------------------------------------------------------
class LoopRecorder(FakeJudge):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.score_loops, self.aclose_loops = [], []

    async def score(self, requests):
        self.score_loops.append(asyncio.get_running_loop())
        return await super().score(requests)

    async def aclose(self):
        self.aclose_loops.append(asyncio.get_running_loop())
        await super().aclose()


def test_run_sync_closes_the_judge_in_the_loop_that_used_it(tmp_path):
    judge = LoopRecorder(reply="3")
    with Store(tmp_path / "s.sqlite") as st:
        counts = run_sync(run_items([item("a"), item("b")], judge, st, RATING), judge)
    assert counts.ok == 2
    assert len(judge.aclose_loops) == 1
    assert judge.score_loops and all(lp is judge.aclose_loops[0] for lp in judge.score_loops)


def test_run_sync_closes_the_judge_even_when_the_run_fails(tmp_path):
    judge = LoopRecorder(reply="3")
    with FullStore(tmp_path / "s.sqlite") as st, pytest.raises(StoreWriteError):
        run_sync(run_items([item("a")], judge, st, RATING), judge)
    assert len(judge.aclose_loops) == 1 and judge.aclose_loops[0] is judge.score_loops[0]


# ---- small formulas -------------------------------------------------------------------------------------------
def test_backoff_doubles_is_capped_and_jittered():
    opts = RunOptions(backoff_s=1.0, max_backoff_s=10.0)
    for attempt, base in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (12, 10.0)]:
        draws = [opts.backoff(attempt) for _ in range(300)]
        assert all(0.5 * base <= d < 1.5 * base for d in draws), attempt
        assert min(draws) < 0.7 * base and max(draws) > 1.3 * base  # jitter actually spreads them
    assert all(RunOptions(backoff_s=0.01).backoff(1) < 0.015 for _ in range(50))


def test_backoff_bounds_exactly(monkeypatch):
    import alpagasus.engine.types as types

    opts = RunOptions(backoff_s=2.0, max_backoff_s=5.0)
    monkeypatch.setattr(types.random, "random", lambda: 0.0)
    assert [opts.backoff(a) for a in (0, 1, 2, 3, 9)] == [1.0, 1.0, 2.0, 2.5, 2.5]
    monkeypatch.setattr(types.random, "random", lambda: 1.0)
    assert [opts.backoff(a) for a in (1, 2, 3)] == [3.0, 6.0, 7.5]


def test_cost():
    assert RunOptions().cost(10**6, 10**6) is None
    assert RunOptions(price_in=3.0).cost(2 * 10**6, 10**6) == pytest.approx(6.0)
    assert RunOptions(price_out=15.0).cost(2 * 10**6, 10**5) == pytest.approx(1.5)
    assert RunOptions(price_in=0.5, price_out=1.5).cost(400_000, 200_000) == pytest.approx(0.2 + 0.3)


def test_final_statuses():
    assert final_statuses() == FINAL == ("ok", "unparsed", "invalid_input")
    assert final_statuses(True) == ("ok", "invalid_input")
    assert "error" not in final_statuses(False)
    assert RunOptions(retry_unparsed=True).final_statuses() == ("ok", "invalid_input")
    assert RunOptions().final_statuses() == FINAL


def test_run_counts_add_sums_the_counts_only():
    a = RunCounts(
        judge="j",
        prompt_version="p",
        to_judge=3,
        requests_sent=4,
        ok=2,
        unparsed=1,
        tokens_in=10,
        tokens_out=5,
        elapsed_s=1.0,
        throttled=1,
        outage_s=2.0,
        note="a",
    )
    b = RunCounts(
        judge="other",
        prompt_version="q",
        to_judge=5,
        requests_sent=6,
        ok=3,
        invalid_input=1,
        error=1,
        tokens_in=7,
        tokens_out=1,
        elapsed_s=9.0,
        ambiguous=2,
        outage_s=0.5,
        note="b",
    )
    a.add(b)
    assert (a.to_judge, a.requests_sent, a.ok, a.unparsed, a.invalid_input, a.error) == (8, 10, 5, 1, 1, 1)
    assert (a.tokens_in, a.tokens_out, a.throttled, a.ambiguous, a.outage_s) == (17, 6, 1, 2, 2.5)
    assert (a.judge, a.prompt_version, a.elapsed_s, a.note) == ("j", "p", 1.0, "a")
    assert a.done == 8
    total = RunCounts()
    for name in ADDED:
        setattr(b, name, 1)
    total.add(b)
    assert all(getattr(total, name) == 1 for name in ADDED)
    spent = RunCounts()
    spent.add(b, outcomes=False)  # what a block spent, not its items or statuses (the Ray driver's use)
    assert all(getattr(spent, name) == (1 if name in SPENT else 0) for name in ADDED)


def test_chunked_and_batches_are_lazy():
    pulled = []

    def gen():
        for i in range(10):
            pulled.append(i)
            yield i

    it = chunked(gen(), 3)
    assert next(it) == [0, 1, 2] and len(pulled) == 3
    assert list(it) == [[3, 4, 5], [6, 7, 8], [9]]
    assert list(chunked([], 4)) == []
    # local judges: sorted by length within a window, then batched
    items = [item(f"k{i}", user="x" * n) for i, n in enumerate([5, 1, 4, 2, 3])]
    assert [[i.key for i in b] for b in _batches(items, 2, True)] == [["k1", "k3"], ["k4", "k2"], ["k0"]]
    assert [[i.key for i in b] for b in _batches(items, 2, False)] == [["k0", "k1"], ["k2", "k3"], ["k4"]]


# ---- settle ---------------------------------------------------------------------------------------------------
def test_settle_a_score_from_the_backend():
    it = item("k")
    it.attempts, it.tokens_in = 1, 12
    r, delay = settle(it, Reply(score=4.25, probs={"4": 0.75, "5": 0.25}, model="m"), "j#lp", RATING, RunOptions())
    assert delay is None
    assert (r.example_id, r.judge, r.prompt_version, r.status, r.score) == ("k", "j#lp", RATING.version, "ok", 4.25)
    assert (r.probs, r.model, r.tokens_in, r.attempts) == ({"4": 0.75, "5": 0.25}, "m", 12, 1)
    r, _ = settle(item("k"), Reply(score=5.5), "j", RATING, RunOptions())
    assert (r.status, r.score, r.raw) == ("unparsed", None, "5.5")
    r, _ = settle(item("k"), Reply(text=None, probs=None, extra={"top": [["x", -0.1]]}), "j", RATING, RunOptions())
    assert (r.status, r.score, r.explanation) == ("unparsed", None, "no probability on the score labels")
    assert '"x"' in r.raw


def test_settle_text_parsed_by_the_rating_rubric():
    r, delay = settle(item("k"), Reply(text="Score: 3.5\nmostly right"), "j", RATING, RunOptions())
    assert delay is None and (r.status, r.score, r.explanation, r.raw) == (
        "ok",
        3.5,
        "mostly right",
        "Score: 3.5\nmostly right",
    )
    it = item("k")
    r, delay = settle(it, Reply(text="cannot tell"), "j", RATING, RunOptions(max_reasks=1))
    assert (r, delay) == (None, 0.0) and (it.reasks, it.request.temperature) == (1, 0.7)
    r, delay = settle(it, Reply(text="cannot tell"), "j", RATING, RunOptions(max_reasks=1))
    assert delay is None and (r.status, r.score, r.raw) == ("unparsed", None, "cannot tell")
    assert r.extra == {"asks": 2} and r.explanation == "no score found"


def test_settle_pairwise_text_puts_the_second_score_in_extra():
    r, delay = settle(
        item("q"),
        Reply(text="8 6\nAssistant 1 is more precise.", extra={"finish_reason": "x"}),
        "j",
        PAIRWISE,
        RunOptions(),
    )
    assert delay is None
    assert (r.status, r.score, r.prompt_version, r.explanation) == (
        "ok",
        8.0,
        PAIRWISE.version,
        "Assistant 1 is more precise.",
    )
    assert r.extra == {"finish_reason": "x", "score_2": 6.0}
    r, _ = settle(item("q"), Reply(text="11 3"), "j", PAIRWISE, RunOptions(max_reasks=0))
    assert (r.status, r.score) == ("unparsed", None) and "outside the scale" in r.explanation


def test_settle_errors():
    it = item("k")
    it.attempts = 1
    r, delay = settle(it, Reply(error="boom", retry_after=3.0), "j", RATING, RunOptions(backoff_s=0.01))
    assert r is None and delay == 3.0  # never before the server's Retry-After
    r, delay = settle(it, Reply(error="boom"), "j", RATING, RunOptions(backoff_s=0.01))
    assert r is None and 0.005 <= delay < 0.015
    it.attempts = 5
    r, delay = settle(it, Reply(error="boom"), "j", RATING, RunOptions(max_attempts=5))
    assert delay is None and (r.status, r.score, r.raw, r.attempts) == ("error", None, "boom", 5)
    it.attempts = 1
    r, _ = settle(it, Reply(error="HTTP 400", retryable=False), "j", RATING, RunOptions())
    assert (r.status, r.raw) == ("error", "HTTP 400")


# ---- judging_session ----------------------------------------------------------------------------------------
class Closing(FakeJudge):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.closed = 0

    def close(self):
        self.closed += 1


def test_session_on_a_directory_is_a_user_error_and_closes_the_judge(tmp_path):
    judge = Closing()
    with pytest.raises(UserError, match="cannot open the store") as err:
        with judging_session(judge, store_path=tmp_path):
            pytest.fail("the block must not run")
    assert str(tmp_path) in str(err.value)
    assert judge.closed == 1


def test_a_second_session_on_a_held_store_is_refused_naming_it(tmp_path):
    path = tmp_path / "s.sqlite"
    first, second = Closing(), Closing()
    with judging_session(first, store_path=path) as s:
        assert s.judge is first and s.store.path == path
        with pytest.raises(UserError) as err:
            with judging_session(second, store_path=path):
                pytest.fail("the store is held")
        assert str(path) in str(err.value) and "in use" in str(err.value)
        assert second.closed == 1 and first.closed == 0
        # a read-only session does not take the lock, so it works alongside
        third = Closing()
        with judging_session(third, store_path=path, lock=False) as s3:
            assert s3.store.count() == 0
        assert third.closed == 1
    assert first.closed == 1
    # released: the next run may take it
    with judging_session(Closing(), store_path=path):
        pass


def test_lock_false_takes_no_lock(tmp_path):
    path = tmp_path / "s.sqlite"
    with judging_session(Closing(), store_path=path, lock=False):
        with judging_session(Closing(), store_path=path):  # would be refused had the first taken the lock
            pass


def test_an_unknown_judge_spec_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="unknown judge backend 'nosuch'"):
        with judging_session("nosuch:model", store_path=tmp_path / "s.sqlite"):
            pytest.fail("no judge")
    with pytest.raises(UserError, match="concurency"):
        with judging_session(
            "openai:m",
            judge_options={"base_url": "http://127.0.0.1:9/v1", "concurency": 3},
            store_path=tmp_path / "s.sqlite",
        ):
            pytest.fail("bad option")


def test_the_store_and_the_judge_are_closed_after_the_block(tmp_path):
    judge = Closing(reply="4")
    with judging_session(judge, store_path=tmp_path / "s.sqlite") as s:
        counts = run([item("a")], s.judge, s.store)
        assert counts.ok == 1 and judge.closed == 0
    assert judge.closed == 1
    with pytest.raises(sqlite3.ProgrammingError):
        s.store.count()
    # and when the block fails with something the user can fix, it is a UserError, still closed
    judge2 = Closing()
    with pytest.raises(UserError, match="resume"):
        with judging_session(judge2, store_path=tmp_path / "s.sqlite") as s2:
            raise StoreWriteError.of(s2.store.path, OSError("disk full"))
    assert judge2.closed == 1
    with pytest.raises(sqlite3.ProgrammingError):
        s2.store.count()
    with Store(tmp_path / "s.sqlite") as st:  # what was stored is still there
        assert st.get("a", judge.id, RATING.version).score == 4.0


def test_a_session_built_from_a_spec_passes_options(tmp_path):
    with judging_session(
        "openai:m",
        judge_options={"base_url": "http://127.0.0.1:9/v1", "concurrency": 3, "timeout": None},
        store_path=tmp_path / "s.sqlite",
        lock=False,
    ) as s:
        assert (s.judge.concurrency, s.judge.base_url, s.judge.timeout) == (3, "http://127.0.0.1:9/v1", 120.0)
