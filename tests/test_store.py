"""The SQLite store of paid replies: every Rating field round-trips, replace semantics, the `final` statuses that
decide what a resumed run asks again, chunked reads past SQLite's parameter limits, the attempts log, meta, the
write signature, one writer at a time across processes, durability, rollback and the integrity check.

Everything runs on real SQLite files under tmp_path; the exclusive lock is contended by a real second process."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import asdict

import pytest

from alpagasus.records import Rating
from alpagasus.store import FINAL, Store, StoreBusy

J, P = "hf:tiny#logprob", "accuracy-v1"


def rating(item: str, status: str = "ok", judge: str = J, version: str = P, **kw) -> Rating:
    score = kw.pop("score", 4.0 if status == "ok" else None)
    return Rating(example_id=item, judge=judge, prompt_version=version, score=score, status=status, **kw)


# ---- round trips ----------------------------------------------------------------------------------------
def test_every_field_round_trips(tmp_path):
    full = Rating(example_id="e1", judge=J, prompt_version=P, score=3.75, status="ok",
                  probs={"3": 0.25, "4": 0.75}, explanation="Mostly right.\nOne slip.", raw="Score: 4\nMostly",
                  model="llama-3-8b", tokens_in=321, tokens_out=17, latency_s=1.5, attempts=3, created_at=1700000000.25,
                  extra={"label_mass": 0.98, "argmax": "4", "note": "ünïcödé ✓", "nested": {"a": [1, 2]}})
    bare = Rating(example_id="e2", judge=J, prompt_version=P, score=None, status="unparsed", probs=None,
                  explanation=None, raw=None, extra=None, created_at=1700000001.0)
    with Store(tmp_path / "s.sqlite") as st:
        st.put(full)
        st.put_many([bare])
        assert st.get("e1", J, P) == full
        assert asdict(st.get("e2", J, P)) == asdict(bare)
        assert st.get("e1", J, "other-version") is None and st.get("e1", "other-judge", P) is None
        assert st.get("missing", J, P) is None
        assert st.get_many(["e1", "e2", "missing"], J, P) == {"e1": full, "e2": bare}


def test_defaults_on_write(tmp_path):
    before = time.time()
    with Store(tmp_path / "s.sqlite") as st:
        st.put(rating("a", extra={}, probs={}))  # created_at 0 means "now"; an empty extra is stored as none
        got = st.get("a", J, P)
        st.put_many([])  # nothing to write is fine
        assert st.count() == 1
    assert before <= got.created_at <= time.time()
    assert got.extra is None and got.probs == {}
    assert (got.model, got.tokens_in, got.tokens_out, got.latency_s, got.attempts) == ("", 0, 0, 0.0, 1)


def test_insert_or_replace_keeps_one_row_per_item_judge_and_version(tmp_path):
    with Store(tmp_path / "s.sqlite") as st:
        st.put(rating("a", "error", raw="timeout", attempts=1))
        st.put(rating("a", "ok", score=5.0, raw="5", attempts=2))
        assert st.count() == 1
        got = st.get("a", J, P)
        assert (got.status, got.score, got.raw, got.attempts) == ("ok", 5.0, "5", 2)
        # another judge or prompt version is another row, untouched by the replace
        st.put_many([rating("a", judge="other#generate", score=1.0), rating("a", version="v2", score=2.0)])
        st.put(rating("a", "unparsed", raw="six"))
        assert st.count() == 3
        assert st.get("a", J, P).status == "unparsed" and st.get("a", J, P).score is None
        assert st.get("a", "other#generate", P).score == 1.0 and st.get("a", J, "v2").score == 2.0
        # a batch holding the same key twice keeps the last one
        st.put_many([rating("b", score=1.0), rating("b", score=2.0)])
        assert st.get("b", J, P).score == 2.0 and st.count() == 4


# ---- done_ids, get_many, count --------------------------------------------------------------------------
@pytest.fixture
def mixed(tmp_path):
    """1300 items: status by i % 4 (ok, unparsed, invalid_input, error), plus noise under another judge and
    another prompt version that must never leak into answers about (J, P)."""
    statuses = ["ok", "unparsed", "invalid_input", "error"]
    st = Store(tmp_path / "m.sqlite")
    st.put_many(rating(f"id{i:05d}", statuses[i % 4]) for i in range(1300))
    st.put_many(rating(f"id{i:05d}", "ok", judge="other#generate") for i in range(1300, 1400))
    st.put_many(rating(f"id{i:05d}", "ok", version="v0") for i in range(3, 1300, 4))  # the error ones, elsewhere
    yield st, statuses
    st.close()


def test_done_ids_without_ids_and_final_statuses(mixed):
    st, statuses = mixed
    assert FINAL == ("ok", "unparsed", "invalid_input") and "error" not in FINAL
    want = {f"id{i:05d}" for i in range(1300) if statuses[i % 4] != "error"}
    assert st.done_ids(J, P) == want and len(want) == 975
    # unparsed replies can be asked again by leaving them out of `final`
    no_unparsed = st.done_ids(J, P, final=("ok", "invalid_input"))
    assert no_unparsed == {i for i in want if int(i[2:]) % 4 != 1} and len(no_unparsed) == 650
    assert st.done_ids(J, P, final=("error",)) == {f"id{i:05d}" for i in range(3, 1300, 4)}
    assert st.done_ids("other#generate", P) == {f"id{i:05d}" for i in range(1300, 1400)}
    assert st.done_ids(J, "v0") == {f"id{i:05d}" for i in range(3, 1300, 4)}
    assert st.done_ids("nobody", P) == set()


def test_done_ids_restricted_to_ids_chunks_past_500(mixed):
    st, statuses = mixed
    # 1201 wanted ids (more than two chunks of 500), given as a one-shot generator, with duplicates, unknown
    # ids and another judge's ids mixed in
    wanted = [f"id{i:05d}" for i in range(100, 1300)] + ["nope", "id00100", "id01350"]
    got = st.done_ids(J, P, ids=(i for i in wanted))
    want = {f"id{i:05d}" for i in range(100, 1300) if statuses[i % 4] != "error"}
    assert got == want and len(got) == 900
    assert st.done_ids(J, P, ids=[f"id{i:05d}" for i in range(500)], final=("unparsed",)) == \
        {f"id{i:05d}" for i in range(1, 500, 4)}
    assert st.done_ids(J, P, ids=[]) == set()
    assert st.done_ids(J, P, ids=["id00000"]) == {"id00000"}


def test_get_many_across_more_than_500_ids(mixed):
    st, statuses = mixed
    ids = [f"id{i:05d}" for i in range(1250, -1, -1)] + ["missing", "id01399"]  # 1253 ids, reversed
    got = st.get_many(ids, J, P)
    assert set(got) == {f"id{i:05d}" for i in range(1251)}
    assert all(r.example_id == k and r.judge == J and r.prompt_version == P for k, r in got.items())
    assert all(got[f"id{i:05d}"].status == statuses[i % 4] for i in range(1251))
    assert st.get_many(iter(ids), "other#generate", P).keys() == {"id01399"}  # any iterable
    assert st.get_many([], J, P) == {}


def test_count_filters(mixed):
    st, _ = mixed
    assert st.count() == 1300 + 100 + 325
    assert st.count(judge=J) == 1300 + 325
    assert st.count(judge="other#generate") == 100
    assert st.count(status="ok") == 325 + 100 + 325
    assert st.count(status="error") == 325
    assert st.count(judge=J, status="unparsed") == 325
    assert st.count(judge="other#generate", status="error") == 0
    assert st.count(judge="nobody") == 0


# ---- attempts, meta, signature --------------------------------------------------------------------------
def test_attempts_log(tmp_path):
    before = time.time()
    with Store(tmp_path / "s.sqlite") as st:
        assert st.attempts() == []
        st.log_attempt("a", J, P, "reask", "no score in the reply")
        st.log_attempts([("a", J, P, "error", "HTTP 500"), ("b", J, "v2", "throttled", None),
                         ("c", "other", P, "ambiguous", "x" * 2000)])
        st.log_attempts([])
        rows = st.attempts()
        assert [(r[0], r[1], r[2], r[4], r[5]) for r in rows] == [
            ("a", J, P, "reask", "no score in the reply"), ("a", J, P, "error", "HTTP 500"),
            ("b", J, "v2", "throttled", ""), ("c", "other", P, "ambiguous", "x" * 500)]  # detail capped at 500
        assert all(before <= r[3] <= time.time() for r in rows)
        assert [r[4] for r in st.attempts("a")] == ["reask", "error"]
        assert st.attempts("zzz") == []
        assert st.count() == 0  # attempts are not replies


def test_meta_get_set(tmp_path):
    with Store(tmp_path / "s.sqlite") as st:
        assert st.get_meta("input_sig") is None
        value = {"files": ["a.jsonl"], "sizes": [1, 2], "ok": True, "none": None, "name": "ümlaut"}
        st.set_meta("input_sig", value)
        st.set_meta("n", 3)
        st.set_meta("s", "text")
        assert st.get_meta("input_sig") == value and st.get_meta("n") == 3 and st.get_meta("s") == "text"
        st.set_meta("n", [4, 5])  # replaced, not added
        assert st.get_meta("n") == [4, 5]
        assert st.db.execute("SELECT COUNT(*) FROM meta").fetchone()[0] == 3
    with Store(tmp_path / "s.sqlite") as st:
        assert st.get_meta("input_sig") == value and st.get_meta("n") == [4, 5]


def test_replies_sig_changes_after_each_write(tmp_path):
    with Store(tmp_path / "s.sqlite") as st:
        empty = st.replies_sig(J, P)
        assert empty == [0, None]
        st.put(rating("a"))
        one = st.replies_sig(J, P)
        assert one != empty and one[0] == 1
        assert st.replies_sig(J, P) == one  # reading does not change it
        time.sleep(0.01)
        st.put(rating("a", score=2.0))  # a replace: same count, newer write
        replaced = st.replies_sig(J, P)
        assert replaced != one and replaced[0] == 1
        st.put(rating("b"))
        assert st.replies_sig(J, P)[0] == 2
        # writes under another judge or prompt version do not touch this signature
        before = st.replies_sig(J, P)
        st.put_many([rating("c", judge="other"), rating("c", version="v9")])
        st.log_attempt("a", J, P, "error")
        st.set_meta("k", 1)
        assert st.replies_sig(J, P) == before
        assert st.replies_sig("other", P)[0] == 1


# ---- one writer at a time, across processes --------------------------------------------------------------
HOLDER = textwrap.dedent("""
    import sys
    from alpagasus.store import Store
    st = Store(sys.argv[1])
    with st.exclusive():
        print("held", flush=True)
        sys.stdin.readline()   # hold the store until the test says so
    print("released", flush=True)
    sys.stdin.readline()
""")


@pytest.fixture
def holder(tmp_path):
    """A second process holding the store's exclusive lock until a line is written to its stdin."""
    path = tmp_path / "busy.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        died = proc.poll() is not None
        assert line == "held\n", f"holder did not start: {line!r} {proc.stderr.read() if died else ''}"
        yield path, proc
    finally:
        proc.kill()
        proc.communicate(timeout=30)  # reaps it and closes the pipes


def release(proc) -> None:
    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == "released\n"


def test_exclusive_refuses_a_second_process_naming_its_pid(holder):
    path, proc = holder
    with Store(path) as st:
        with pytest.raises(StoreBusy) as e:
            with st.exclusive():
                pytest.fail("entered a store another process holds")
        msg = str(e.value)
        assert f"in use by pid {proc.pid}" in msg and str(path) in msg and "--wait" in msg
        release(proc)
        with st.exclusive():  # free once the other run ends
            pass
        with st.exclusive():  # and released again after our own use
            pass


def test_exclusive_wait_blocks_until_released(holder):
    path, proc = holder
    entered = threading.Event()
    errors: list[BaseException] = []

    def waiter():
        try:
            with Store(path) as st, st.exclusive(wait=True):
                entered.set()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    assert not entered.wait(1.0), "wait=True entered while another process held the store"
    release(proc)
    assert entered.wait(30), "wait=True never entered after the other process released the store"
    t.join(30)
    assert not errors and not t.is_alive()


def test_lock_holder_pid_is_ours_while_held(tmp_path):
    st = Store(tmp_path / "s.sqlite")
    with st.exclusive():
        assert (tmp_path / "s.sqlite.lock").read_text() == f"pid {os.getpid()}"
        # a second handle in this same process is refused too: one run per store, whoever asks
        with Store(tmp_path / "s.sqlite") as other, pytest.raises(StoreBusy, match=f"pid {os.getpid()}"):
            with other.exclusive():
                pass
    st.close()


# ---- durability, rollback, integrity --------------------------------------------------------------------
def test_data_survives_reopening(tmp_path):
    path = tmp_path / "s.sqlite"
    with Store(path) as st:
        st.put_many(rating(f"i{i}", "ok", score=float(i % 6)) for i in range(50))
        st.set_meta("k", {"v": 1})
    with Store(path) as st:
        assert st.count() == 50 and st.get("i7", J, P).score == 1.0 and st.get_meta("k") == {"v": 1}


def test_a_committed_write_survives_kill_9(tmp_path):
    """Each put is committed at once: a process killed right after loses nothing it wrote."""
    path = tmp_path / "k.sqlite"
    code = textwrap.dedent(f"""
        import os, signal, sys
        from alpagasus.records import Rating
        from alpagasus.store import Store
        st = Store(sys.argv[1])
        for i in range(20):
            st.put(Rating(example_id=f"k{{i}}", judge={J!r}, prompt_version={P!r}, score=float(i), status="ok"))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == -9, r.stderr
    with Store(path) as st:
        assert st.count() == 20 and st.get("k19", J, P).score == 19.0 and st.integrity_ok()


def test_a_failed_batch_is_rolled_back_whole(tmp_path):
    with Store(tmp_path / "s.sqlite") as st:
        st.put(rating("kept"))
        bad = rating("bad", status=None)  # NOT NULL status: fails after the first row of the batch went in
        with pytest.raises(sqlite3.IntegrityError):
            st.put_many([rating("new1"), rating("new2"), bad])
        assert st.count() == 1 and st.get("new1", J, P) is None and st.get("kept", J, P) is not None
        with pytest.raises(sqlite3.IntegrityError):
            st.log_attempts([("a", J, P, "error", "x"), ("b", J, P, None, "no outcome")])
        assert st.attempts() == []
        # the connection is usable afterwards: no transaction left open
        assert not st.db.in_transaction
        st.put(rating("after"))
    with Store(tmp_path / "s.sqlite") as st:
        assert st.done_ids(J, P) == {"kept", "after"}


def test_integrity_ok(tmp_path):
    path = tmp_path / "s.sqlite"
    with Store(path) as st:
        assert st.integrity_ok()
        st.put_many(rating(f"i{i:04d}", raw="r" * 200) for i in range(2000))
        assert st.integrity_ok()
    # damage the pages that hold the replies (keep page 1, the header and schema)
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    assert len(data) > 8 * page
    data[2 * page:len(data) - page] = bytes(len(data) - 3 * page)
    path.write_bytes(bytes(data))
    with Store(path) as st:
        assert st.integrity_ok() is False  # PRAGMA integrity_check lists the broken pages instead of "ok"
