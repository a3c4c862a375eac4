"""The batch ledger: the store's record of the provider batches a run created (tables `batches` and
`batch_items`, store schema v2), written before anything is sent so that no row is ever paid for twice
(see engine/batch.py). States: recorded (items chosen, nothing sent) -> uploaded (input file id) -> submitted
(batch id) -> done (results read), or abandoned (never created on the server) / vanished (the server forgot it).
Provider-neutral: a batch belongs to a judge id, whose prefix names the provider (`openai:`, `anthropic:`); a
provider without input files (Anthropic) goes from recorded to submitted with no input file id.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Callable

from alpagasus.engine.types import StoreWriteError
from alpagasus.store import Store

OPEN = ("recorded", "uploaded", "submitted")  # states of a batch that may still hold our rows


class Ledger:
    """The store's record of our batches: what each holds, its ids on the server, how far it got."""

    def __init__(self, store: Store, judge_id: str, version: str):
        self.store, self.judge_id, self.version = store, judge_id, version

    def open(self) -> list[dict]:
        cols = ("key", "state", "batch_id", "input_file_id", "server_status", "created_at")
        rows = self.store.db.execute(
            f"SELECT {', '.join(cols)} FROM batches WHERE judge=? AND prompt_version=? AND state IN "
            f"({','.join('?' * len(OPEN))}) ORDER BY created_at",
            (self.judge_id, self.version, *OPEN),
        )
        return [dict(zip(cols, r)) for r in rows]

    def batch_ids(self) -> set[str]:
        """Every provider batch id the ledger knows, of any judge (a batch found by `find` must be none of them)."""
        return {r[0] for r in self.store.db.execute("SELECT batch_id FROM batches WHERE batch_id IS NOT NULL")}

    def items_of(self, key: str) -> list[str]:
        return [r[0] for r in self.store.db.execute("SELECT custom_id FROM batch_items WHERE key=?", (key,))]

    def record(self, item_keys: list[str]) -> str:
        """A new batch and its items, in one transaction, before anything is sent."""
        key, now = f"ab-{uuid.uuid4().hex[:20]}", time.time()
        self._write(
            lambda: (
                self.store.db.execute(
                    "INSERT INTO batches (key, judge, prompt_version, state, created_at, updated_at) "
                    "VALUES (?, ?, ?, 'recorded', ?, ?)",
                    (key, self.judge_id, self.version, now, now),
                ),
                self.store.db.executemany(
                    "INSERT INTO batch_items (key, item_id, custom_id) VALUES (?, ?, ?)",
                    [(key, k, k) for k in item_keys],
                ),
            )
        )
        return key

    def update(self, key: str, **values: Any) -> None:
        if "extra" in values:
            values["extra"] = json.dumps(values["extra"])
        sets = ", ".join(f"{k}=?" for k in values)
        self._write(
            lambda: self.store.db.execute(
                f"UPDATE batches SET {sets}, updated_at=? WHERE key=?", (*values.values(), time.time(), key)
            )
        )

    def _write(self, fn: Callable[[], Any]) -> None:
        try:
            with self.store.transaction():
                fn()
        except Exception as e:  # sqlite3.Error, OSError: the run must stop before it sends what it cannot record
            raise StoreWriteError.of(self.store.path, e) from e
