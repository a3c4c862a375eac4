"""The `Store`: one row per (item id, judge, prompt version) in SQLite (WAL), committed the moment a reply returns."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from alpagasus.records import Rating
from alpagasus.store.errors import StoreBusy, StoreDamaged, StoreVersionError, damage
from alpagasus.store.migrations import MIGRATIONS, SCHEMA, STORE_VERSION, statements

# Statuses that are final: a resumed run does not request these again. `error` rows are retried.
FINAL = ("ok", "unparsed", "invalid_input")
COLUMNS = (
    "item_id",
    "judge",
    "prompt_version",
    "score",
    "status",
    "probs",
    "explanation",
    "raw",
    "model",
    "tokens_in",
    "tokens_out",
    "latency_s",
    "attempts",
    "created_at",
    "extra",
)


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = None
        # check_same_thread=False: written from the event loop thread only, read from anywhere
        self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        try:
            self.db.execute("PRAGMA busy_timeout=60000")
            # refuse a store we cannot read before anything below writes to it (WAL rewrites the file's header)
            self._version()
            self._check()
            self._wal()
            self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
            self._migrate()
        except BaseException:
            self.db.close()  # a refused or broken store leaves no open handle behind
            raise

    def _wal(self, patience_s: float = 60.0) -> None:
        """Switch to WAL (a no-op once the file is WAL). Switching needs the file alone for a moment, and when
        processes open a brand-new store at once SQLite answers "database is locked" at once instead of waiting
        (busy_timeout does not apply: waiting could deadlock), so the switch is tried again for a while."""
        deadline = time.monotonic() + patience_s
        while True:
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    # ---- the layout's version -------------------------------------------------------------------
    def _version(self) -> int:
        """The store's layout version, refusing what this code must not touch: a newer layout, or a database
        that is not a store (adding our tables to someone else's file would be a surprise, not a migration)."""
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > STORE_VERSION:
            raise StoreVersionError(
                f"{self.path} is an alpagasus store of version {version}, newer than this alpagasus reads "
                f"(version {STORE_VERSION}): upgrade alpagasus to open it"
            )
        if version == 0:
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if tables and "replies" not in tables:
                raise StoreVersionError(
                    f"{self.path} is not an alpagasus store (its tables: "
                    f"{', '.join(sorted(tables))}); use a new file or an alpagasus store"
                )
        return version

    def _check(self) -> None:
        """Refuse a damaged file before anything writes to it: SQLite's quick_check reads every page and checks
        the b-trees (0.4 s for a 490 MB store, docs/scale.md) but not indexes against their tables, which
        integrity_check adds at nearly twice the cost. Damage inside a stored value's bytes is invisible to both."""
        try:
            rows = [r[0] for r in self.db.execute("PRAGMA quick_check(5)")]
        except sqlite3.DatabaseError as e:  # "database is locked" is one too, and no damage
            if (hurt := damage(self.path, e)) is None:
                raise
            raise hurt from e
        if rows != ["ok"]:
            raise StoreDamaged(self.path, "; ".join(r.replace("\n", " ").strip() for r in rows)[:300])

    def _migrate(self) -> None:
        """Bring the store to STORE_VERSION: a new file gets SCHEMA, an older store runs the steps from its
        version on. All of it is one transaction, so a crash leaves the old version or the new one."""
        if self._version() == STORE_VERSION:
            return  # the usual case: no write, no lock
        with self._tx():
            # re-read under the write lock: another process opening the same store at the same moment may have
            # created or migrated it while we waited, and then there is nothing left to do (or it is newer now)
            version = self._version()
            if version == STORE_VERSION:
                return
            empty = self.db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0
            if empty:  # a brand-new file: the current layout at once
                for stmt in statements(SCHEMA):
                    self.db.execute(stmt)
            else:
                for step in MIGRATIONS[version:]:
                    step(self.db)
            self.db.execute(f"PRAGMA user_version={STORE_VERSION}")  # a PRAGMA takes no ? parameter

    # ---- one writer at a time -------------------------------------------------------------------
    @contextlib.contextmanager
    def exclusive(self, wait: bool = False) -> Iterator[None]:
        """Hold the store for one run. A second run on the same store refuses with a clear message
        (or waits, with wait=True) instead of interleaving requests for the same items."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        f = open(lock_path, "a+")
        try:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                raise StoreBusy(
                    f"{self.path} is in use by {holder}; wait for it to finish, pass --wait, or use another --store"
                ) from None
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()}")
            f.flush()
            yield
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(f, fcntl.LOCK_UN)
            f.close()

    # ---- writes ---------------------------------------------------------------------------------
    def put(self, r: Rating) -> None:
        self.put_many([r])

    def put_many(self, ratings: Iterable[Rating]) -> None:
        rows = [_row(r) for r in ratings]
        if not rows:
            return
        with self._tx():
            self.db.executemany(
                f"INSERT OR REPLACE INTO replies ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})", rows
            )

    def log_attempt(self, item_id: str, judge: str, prompt_version: str, outcome: str, detail: str = "") -> None:
        self.log_attempts([(item_id, judge, prompt_version, outcome, detail)])

    def log_attempts(self, rows: Iterable[tuple[str, str, str, str, str | None]]) -> None:
        """Requests that settled nothing: (item, judge, prompt version, outcome, detail). Outcomes: `reask`
        (no score in the reply), `error` (retried), `ambiguous` (timed out or cut off: it may have reached the
        server and be billed), `throttled` (429, not charged), `outage` (server away, not charged)."""
        now = time.time()
        data = [(i, j, p, now, o, (d or "")[:500]) for i, j, p, o, d in rows]
        if data:
            with self._tx():
                self.db.executemany("INSERT INTO attempts VALUES (?,?,?,?,?,?)", data)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT, rolled back on any exception): for modules that
        keep their own tables here (the batch ledger, embeddings)."""
        with self._tx():
            yield

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already (disk full)
                self.db.execute("ROLLBACK")
            raise
        try:
            self.db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
            raise

    # ---- reads ----------------------------------------------------------------------------------
    def done_ids(
        self, judge: str, prompt_version: str, ids: Iterable[str] | None = None, final: tuple[str, ...] = FINAL
    ) -> set[str]:
        """Ids already rated for good by this judge and prompt (optionally restricted to `ids`)."""
        q = (
            f"SELECT item_id FROM replies WHERE judge=? AND prompt_version=? "
            f"AND status IN ({','.join('?' * len(final))})"
        )
        args = [judge, prompt_version, *final]
        if ids is None:
            return {r[0] for r in self.db.execute(q, args)}
        wanted = set(ids)
        out: set[str] = set()
        chunk: list[str] = []
        for i in wanted:  # chunked IN queries keep memory and SQL size bounded
            chunk.append(i)
            if len(chunk) == 500:
                out.update(self._in(q, args, chunk))
                chunk = []
        if chunk:
            out.update(self._in(q, args, chunk))
        return out

    def _in(self, q: str, args: list, chunk: list[str]) -> list[str]:
        rows = self.db.execute(q + f" AND item_id IN ({','.join('?' * len(chunk))})", [*args, *chunk])
        return [r[0] for r in rows]

    def get(self, item_id: str, judge: str, prompt_version: str) -> Rating | None:
        row = self.db.execute(
            f"SELECT {', '.join(COLUMNS)} FROM replies WHERE item_id=? AND judge=? AND prompt_version=?",
            (item_id, judge, prompt_version),
        ).fetchone()
        return _rating(row) if row else None

    def get_many(self, ids: Iterable[str], judge: str, prompt_version: str) -> dict[str, Rating]:
        out: dict[str, Rating] = {}
        ids = list(ids)
        for k in range(0, len(ids), 500):
            chunk = ids[k : k + 500]
            rows = self.db.execute(
                f"SELECT {', '.join(COLUMNS)} FROM replies WHERE judge=? AND prompt_version=? "
                f"AND item_id IN ({','.join('?' * len(chunk))})",
                [judge, prompt_version, *chunk],
            )
            for row in rows:
                out[row[0]] = _rating(row)
        return out

    def count(self, judge: str | None = None, status: str | None = None) -> int:
        q = "SELECT COUNT(*) FROM replies WHERE 1=1"
        args: list[str] = []
        if judge:
            q, args = q + " AND judge=?", [*args, judge]
        if status:
            q, args = q + " AND status=?", [*args, status]
        return self.db.execute(q, args).fetchone()[0]

    def attempts(self, item_id: str | None = None) -> list[tuple]:
        q = "SELECT item_id, judge, prompt_version, at, outcome, detail FROM attempts"
        return list(self.db.execute(q + (" WHERE item_id=?" if item_id else ""), [item_id] if item_id else []))

    def replies_sig(self, judge: str, prompt_version: str) -> list:
        """(count, newest write) of one judge and prompt's replies: changes whenever one is written."""
        row = self.db.execute(
            "SELECT COUNT(*), MAX(created_at) FROM replies WHERE judge=? AND prompt_version=?", (judge, prompt_version)
        ).fetchone()
        return [row[0], row[1]]

    def get_meta(self, key: str) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def set_meta(self, key: str, value: Any) -> None:
        with self._tx():
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def integrity_ok(self) -> bool:
        return self.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _row(r: Rating) -> tuple:
    return (
        r.example_id,
        r.judge,
        r.prompt_version,
        r.score,
        r.status,
        json.dumps(r.probs) if r.probs is not None else None,
        r.explanation,
        r.raw,
        r.model,
        r.tokens_in,
        r.tokens_out,
        r.latency_s,
        r.attempts,
        r.created_at or time.time(),
        json.dumps(r.extra, ensure_ascii=False) if r.extra else None,
    )


def _rating(row: tuple) -> Rating:
    d = dict(zip(COLUMNS, row))
    return Rating(
        example_id=d["item_id"],
        judge=d["judge"],
        prompt_version=d["prompt_version"],
        score=d["score"],
        status=d["status"],
        probs=json.loads(d["probs"]) if d["probs"] else None,
        explanation=d["explanation"],
        raw=d["raw"],
        model=d["model"] or "",
        tokens_in=d["tokens_in"] or 0,
        tokens_out=d["tokens_out"] or 0,
        latency_s=d["latency_s"] or 0.0,
        attempts=d["attempts"] if d["attempts"] is not None else 1,
        created_at=d["created_at"] or 0.0,
        extra=json.loads(d["extra"]) if d["extra"] else None,
    )
