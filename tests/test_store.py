"""The SQLite store of paid replies: every Rating field round-trips, replace semantics, the `final` statuses that
decide what a resumed run asks again, chunked reads past SQLite's parameter limits, the attempts log, meta, the
write signature, one writer at a time across processes, durability, rollback and the integrity check.

Everything runs on real SQLite files under tmp_path; the exclusive lock is contended by a real second process."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from alpagasus.records import Rating
from alpagasus.store import (
    FINAL,
    MIGRATIONS,
    SCHEMA,
    SCHEMA_V1,
    STORE_VERSION,
    Store,
    StoreBusy,
    StoreDamaged,
    StoreVersionError,
)

J, P = "hf:tiny#logprob", "accuracy-v1"


def rating(item: str, status: str = "ok", judge: str = J, version: str = P, **kw) -> Rating:
    score = kw.pop("score", 4.0 if status == "ok" else None)
    return Rating(example_id=item, judge=judge, prompt_version=version, score=score, status=status, **kw)


# ---- round trips ----------------------------------------------------------------------------------------
def test_every_field_round_trips(tmp_path):
    full = Rating(
        example_id="e1",
        judge=J,
        prompt_version=P,
        score=3.75,
        status="ok",
        probs={"3": 0.25, "4": 0.75},
        explanation="Mostly right.\nOne slip.",
        raw="Score: 4\nMostly",
        model="llama-3-8b",
        tokens_in=321,
        tokens_out=17,
        latency_s=1.5,
        attempts=3,
        created_at=1700000000.25,
        extra={"label_mass": 0.98, "argmax": "4", "note": "ünïcödé ✓", "nested": {"a": [1, 2]}},
    )
    bare = Rating(
        example_id="e2",
        judge=J,
        prompt_version=P,
        score=None,
        status="unparsed",
        probs=None,
        explanation=None,
        raw=None,
        extra=None,
        created_at=1700000001.0,
    )
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
    assert st.done_ids(J, P, ids=[f"id{i:05d}" for i in range(500)], final=("unparsed",)) == {
        f"id{i:05d}" for i in range(1, 500, 4)
    }
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
        st.log_attempts(
            [
                ("a", J, P, "error", "HTTP 500"),
                ("b", J, "v2", "throttled", None),
                ("c", "other", P, "ambiguous", "x" * 2000),
            ]
        )
        st.log_attempts([])
        rows = st.attempts()
        assert [(r[0], r[1], r[2], r[4], r[5]) for r in rows] == [
            ("a", J, P, "reask", "no score in the reply"),
            ("a", J, P, "error", "HTTP 500"),
            ("b", J, "v2", "throttled", ""),
            ("c", "other", P, "ambiguous", "x" * 500),
        ]  # detail capped at 500
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
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
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
    data[2 * page : len(data) - page] = bytes(len(data) - 3 * page)
    path.write_bytes(bytes(data))
    # a damaged store is refused at open (PRAGMA quick_check), before anything writes to it
    with pytest.raises(StoreDamaged, match=r"is damaged \(.*\.recover"):
        Store(path)
    assert path.read_bytes() == bytes(data)


# ---- the layout's version: today's stores open, newer ones are refused untouched -------------------------
FIXTURES = Path(__file__).parent / "fixtures"
# What tests/fixtures/store_v0.sql must read back as: written out here by hand, not derived from the fixture
V0_RATINGS = [
    Rating(
        "e1",
        J,
        P,
        3.75,
        "ok",
        {"3": 0.25, "4": 0.75},
        "Mostly right.\nOne slip.",
        "Score: 4\nMostly",
        "llama-3-8b",
        321,
        17,
        1.5,
        3,
        1700000000.25,
        {"label_mass": 0.98, "argmax": "4", "note": "ünïcödé ✓", "nested": {"a": [1, 2]}},
    ),
    Rating(
        "e2",
        J,
        P,
        5.0,
        "ok",
        {"5": 1.0},
        'Correct; it\'s "exact".',
        "5",
        "llama-3-8b",
        280,
        1,
        0.5,
        1,
        1700000001.5,
        {"argmax": "5"},
    ),
    Rating(
        "e1",
        "openai:gpt-4o#generate",
        P,
        2.0,
        "ok",
        {"2": 0.5, "3": 0.5},
        "Two errors; see 'step 2'.",
        "Score: 2",
        "gpt-4o-2024-08-06",
        410,
        55,
        2.25,
        2,
        1700000060.5,
        {"finish_reason": "stop"},
    ),
    Rating(
        "e1",
        J,
        "helpfulness-v1",
        1.0,
        "unparsed",
        {"1": 0.125, "0": 0.875},
        "no score in the reply",
        "I cannot rate this.",
        "llama-3-8b",
        300,
        9,
        0.75,
        3,
        1700000120.0,
        {"reasks": 2, "empty": []},
    ),
    Rating(
        "9f2c41d0a7b3e5c6",
        "openai:gpt-4o#generate",
        "pairwise-v1",
        7.5,
        "ok",
        {"8": 0.5, "7": 0.5},
        "Assistant 1 is clearer.",
        "8 7\nAssistant 1 is clearer.",
        "gpt-4o-2024-08-06",
        900,
        120,
        3.0,
        1,
        1700000180.75,
        {"order": "ab", "scores": [8, 7], "question_id": "vicuna-12"},
    ),
]
V0_META = {"input_sig": {"files": ["alpaca.json"], "sizes": [1024], "ok": True, "none": None}, "runs": 3}
V0_ATTEMPTS = [
    ("e1", J, P, 1699999990.5, "reask", "no score in the reply"),
    ("e1", J, P, 1699999995.25, "error", "HTTP 500: upstream"),
    ("e2", "openai:gpt-4o#generate", P, 1700000050.0, "throttled", ""),
]


CONNECT = sqlite3.connect  # the real one, for connections of our own while `connections` spies on Store's


def raw_db(path) -> contextlib.closing:
    """A plain sqlite3 connection, outside Store: what another version of the tool would see."""
    return contextlib.closing(CONNECT(path, isolation_level=None))


def version_of(path) -> int:
    with raw_db(path) as db:
        return db.execute("PRAGMA user_version").fetchone()[0]


def layout(path) -> list[tuple]:
    with raw_db(path) as db:
        return list(db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name"))


def new_layout(tmp_path) -> list[tuple]:
    """The layout Store gives a brand-new file: what every migrated store must end up with."""
    with Store(tmp_path / "reference.sqlite") as st:
        return layout(st.path)


def v0_store(path: Path, version: int = 0) -> Path:
    """A store as alpagasus wrote it before versions (from the SQL fixture), stamped `version` if given."""
    with raw_db(path) as db:
        db.executescript((FIXTURES / "store_v0.sql").read_text(encoding="utf-8"))
        if version:
            db.execute(f"PRAGMA user_version={version}")
    assert version_of(path) == version
    return path


@pytest.fixture
def connections(monkeypatch):
    """Every connection Store opens, with the SQL each ran (in order), to see what it did and that it closed."""
    opened: list[tuple[sqlite3.Connection, list[str]]] = []

    def spy(*a, **kw):
        db, ran = CONNECT(*a, **kw), []
        db.set_trace_callback(ran.append)
        opened.append((db, ran))
        return db

    monkeypatch.setattr(sqlite3, "connect", spy)  # the module Store connects through
    return opened


def test_a_new_store_gets_the_current_layout_and_version(tmp_path):
    assert STORE_VERSION == len(MIGRATIONS) >= 1  # one step per version since 0, the layout before versions
    with Store(tmp_path / "new.sqlite") as st:
        assert st.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert st.db.execute("PRAGMA busy_timeout").fetchone()[0] == 60000
    assert version_of(tmp_path / "new.sqlite") == STORE_VERSION
    assert [r[1] for r in layout(tmp_path / "new.sqlite") if r[0] == "table"] == [
        "attempts",
        "batch_items",
        "batches",
        "embeddings",
        "meta",
        "replies",
    ]


def test_a_version_1_store_gains_the_batch_ledger_and_embeddings_and_keeps_its_rows(tmp_path):
    path = v0_store(tmp_path / "v1.sqlite", version=1)
    with Store(path) as st:
        assert st.count() == len(V0_RATINGS)
        with st.transaction():
            st.db.execute("INSERT INTO embeddings VALUES ('e1', 'enc', 2, x'0000')")
        with pytest.raises(ZeroDivisionError), st.transaction():  # an exception rolls the transaction back
            st.db.execute("INSERT INTO embeddings VALUES ('e2', 'enc', 2, x'0000')")
            raise ZeroDivisionError
        assert [r[0] for r in st.db.execute("SELECT item_id FROM embeddings")] == ["e1"]
    assert version_of(path) == STORE_VERSION
    assert layout(path) == new_layout(tmp_path)


def test_a_store_of_todays_layout_is_stamped_and_reads_back_identical(tmp_path, connections):
    path = v0_store(tmp_path / "old.sqlite")
    with Store(path) as st:
        assert st.count() == len(V0_RATINGS)
        for r in V0_RATINGS:
            assert asdict(st.get(r.example_id, r.judge, r.prompt_version)) == asdict(r)
        assert st.get_many(["e1", "e2"], J, P) == {"e1": V0_RATINGS[0], "e2": V0_RATINGS[1]}
        assert st.done_ids(J, P) == {"e1", "e2"} and st.done_ids(J, "helpfulness-v1") == {"e1"}
        assert {k: st.get_meta(k) for k in V0_META} == V0_META
        assert st.attempts() == V0_ATTEMPTS
        st.put(rating("e3"))  # and it takes new work
    assert version_of(path) == STORE_VERSION
    assert any(s == f"PRAGMA user_version={STORE_VERSION}" for s in connections[0][1])
    assert layout(path) == new_layout(tmp_path)  # migrated = created new

    # opening again is a no-op: no transaction, no migration, the file unchanged
    before = path.read_bytes()
    with Store(path) as st:
        assert st.count() == len(V0_RATINGS) + 1 and st.attempts() == V0_ATTEMPTS
    assert not any(s.startswith(("BEGIN", "CREATE", "PRAGMA user_version=")) for s in connections[-1][1])
    assert path.read_bytes() == before


def test_a_v0_store_cut_short_at_creation_is_completed(tmp_path):
    """Before versions, the tables were created one statement at a time: a store may hold `replies` only."""
    path = tmp_path / "partial.sqlite"
    with raw_db(path) as db:
        db.execute(SCHEMA_V1.split(";")[0])
        db.execute("INSERT INTO replies (item_id, judge, prompt_version, status) VALUES ('a', ?, ?, 'ok')", (J, P))
    with Store(path) as st:
        assert st.done_ids(J, P) == {"a"} and st.attempts() == [] and st.get_meta("k") is None
    assert version_of(path) == STORE_VERSION


def test_a_newer_store_is_refused_untouched_and_the_connection_closed(tmp_path, connections):
    newer = STORE_VERSION + 1
    path = v0_store(tmp_path / "newer.sqlite", version=newer)
    before = path.read_bytes()
    with pytest.raises(StoreVersionError) as e:
        Store(path)
    msg = str(e.value)
    assert str(path) in msg and f"version {newer}" in msg and f"(version {STORE_VERSION})" in msg
    assert "upgrade alpagasus to open it" in msg
    assert isinstance(e.value, RuntimeError) and not isinstance(e.value, sqlite3.Error)
    assert path.read_bytes() == before and not (tmp_path / "newer.sqlite-wal").exists()
    assert connections[0][1] == ["PRAGMA busy_timeout=60000", "PRAGMA user_version"]  # read, then refused
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        connections[0][0].execute("SELECT 1")
    with raw_db(path) as db:
        assert db.execute("SELECT COUNT(*) FROM replies").fetchone()[0] == len(V0_RATINGS)


def test_a_database_that_is_not_a_store_is_refused_untouched(tmp_path):
    path = tmp_path / "other.sqlite"
    with raw_db(path) as db:
        db.execute("CREATE TABLE notes (body TEXT)")
    before = path.read_bytes()
    with pytest.raises(StoreVersionError, match=r"not an alpagasus store \(its tables: notes\)"):
        Store(path)
    assert path.read_bytes() == before and layout(path)[0][1] == "notes" and len(layout(path)) == 1


def test_a_store_created_by_someone_else_while_we_wait_is_re_read(tmp_path, connections):
    """The version is read again under the write lock: here another process creates the store (as a newer
    version) between our first read and our BEGIN IMMEDIATE; we must see its stamp, not overwrite it."""
    path = tmp_path / "race.sqlite"
    other = CONNECT(path, isolation_level=None)
    other.execute("PRAGMA journal_mode=WAL")
    other.execute("BEGIN IMMEDIATE")
    for stmt in SCHEMA.split(";")[:-1]:
        other.execute(stmt)
    other.execute(f"PRAGMA user_version={STORE_VERSION + 1}")
    errors: list[BaseException] = []

    def opener():
        try:
            Store(path).close()
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=opener, daemon=True)
    t.start()
    deadline = time.time() + 30
    while not (connections and "BEGIN IMMEDIATE" in connections[0][1]) and time.time() < deadline:
        time.sleep(0.01)
    assert "BEGIN IMMEDIATE" in connections[0][1], "Store never tried to take the write lock"
    time.sleep(0.2)  # it is waiting on our lock now (busy_timeout)
    other.execute("COMMIT")
    other.close()
    t.join(30)
    assert len(errors) == 1 and isinstance(errors[0], StoreVersionError), errors
    assert version_of(path) == STORE_VERSION + 1


OPENER = textwrap.dedent("""
    import os, sys, time
    from alpagasus.records import Rating
    from alpagasus.store import Store
    path, go, me = sys.argv[1:]
    while not os.path.exists(go):
        time.sleep(0.001)
    with Store(path) as st:
        st.put(Rating(example_id=me, judge="j", prompt_version="p", score=1.0, status="ok"))
""")


def test_processes_opening_a_new_store_at_once_create_it_once(tmp_path):
    path, go = tmp_path / "new.sqlite", tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", OPENER, str(path), str(go), f"p{i}"], stderr=subprocess.PIPE, text=True)
        for i in range(4)
    ]
    time.sleep(1.5)  # let them all start and wait for the signal
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert version_of(path) == STORE_VERSION and layout(path) == new_layout(tmp_path)
    with Store(path) as st:
        assert st.done_ids("j", "p") == {"p0", "p1", "p2", "p3"} and st.integrity_ok()


def test_cli_refuses_a_newer_store_without_a_traceback(tmp_path):
    """Needs engine/session.py's open_store to turn StoreVersionError into a UserError, like sqlite3.Error."""
    path = v0_store(tmp_path / "newer.sqlite", version=STORE_VERSION + 1)
    before = path.read_bytes()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "alpagasus.cli",
            "rate",
            "sample:alpaca",
            "-o",
            str(tmp_path / "o"),
            "--limit",
            "1",
            "--store",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "upgrade alpagasus to open it" in " ".join(r.stderr.split())
    assert path.read_bytes() == before and not (tmp_path / "o").exists()
