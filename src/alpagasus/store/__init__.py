"""The SQLite store of paid replies: the source of truth. Output files are views of it.

One row per (item id, judge, prompt version), committed the moment a reply returns (WAL), so Ctrl-C or
kill -9 loses at most the requests in flight and no rating is ever paid for twice. Ratings and pairwise
judgments share this table: a judgment is a paid reply too (its item id hashes the question and answers).

The layout has a version, kept in `PRAGMA user_version`: opening a store brings an older one up to
STORE_VERSION through MIGRATIONS, and a newer one (written by a later alpagasus) is refused, untouched.

`db.py` holds `Store`, `migrations.py` the layouts and their ordered steps, `errors.py` why a store is refused,
`opening.py` `open_store` / `opened`, the checked way every command opens one.
"""

from __future__ import annotations

from alpagasus.store.db import COLUMNS, FINAL, Store
from alpagasus.store.errors import StoreBusy, StoreDamaged, StoreVersionError, damage
from alpagasus.store.migrations import MIGRATIONS, SCHEMA, SCHEMA_V1, SCHEMA_V2_ADDED, STORE_VERSION
from alpagasus.store.opening import open_store, opened

__all__ = [
    "COLUMNS",
    "FINAL",
    "MIGRATIONS",
    "SCHEMA",
    "SCHEMA_V1",
    "SCHEMA_V2_ADDED",
    "STORE_VERSION",
    "Store",
    "StoreBusy",
    "StoreDamaged",
    "StoreVersionError",
    "damage",
    "open_store",
    "opened",
]
