"""The store's layout and its versions: SCHEMA (what a new store is created with) and MIGRATIONS, the ordered steps
that bring a store of any past version (`PRAGMA user_version`) up to STORE_VERSION."""

from __future__ import annotations

import sqlite3
from typing import Callable

# The layout of version 1, frozen: the 0 -> 1 step must keep creating exactly this even after SCHEMA moves on.
SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS replies (
    item_id TEXT NOT NULL, judge TEXT NOT NULL, prompt_version TEXT NOT NULL,
    score REAL, status TEXT NOT NULL, probs TEXT, explanation TEXT, raw TEXT, model TEXT,
    tokens_in INTEGER, tokens_out INTEGER, latency_s REAL, attempts INTEGER, created_at REAL, extra TEXT,
    PRIMARY KEY (item_id, judge, prompt_version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS attempts (
    item_id TEXT NOT NULL, judge TEXT NOT NULL, prompt_version TEXT NOT NULL,
    at REAL NOT NULL, outcome TEXT NOT NULL, detail TEXT
);
"""
# Version 2 adds what is not a reply but must survive a crash with them: provider batches (recorded before
# anything is sent, so a rerun re-attaches instead of paying again) and embeddings (computed once per content id).
SCHEMA_V2_ADDED = """
CREATE TABLE IF NOT EXISTS batches (
    key TEXT PRIMARY KEY, judge TEXT NOT NULL, prompt_version TEXT NOT NULL,
    state TEXT NOT NULL, batch_id TEXT, input_file_id TEXT, server_status TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, extra TEXT
);
CREATE TABLE IF NOT EXISTS batch_items (
    key TEXT NOT NULL, item_id TEXT NOT NULL, custom_id TEXT NOT NULL, extra TEXT,
    PRIMARY KEY (key, item_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS batch_items_item ON batch_items (item_id);
CREATE TABLE IF NOT EXISTS embeddings (
    item_id TEXT NOT NULL, encoder TEXT NOT NULL, dim INTEGER NOT NULL, vector BLOB NOT NULL,
    PRIMARY KEY (item_id, encoder)
) WITHOUT ROWID;
"""
# The current layout: what a brand-new store is created with. A change to it is a new STORE_VERSION and a new
# step at the end of MIGRATIONS that turns the previous layout into this one.
SCHEMA = SCHEMA_V1 + SCHEMA_V2_ADDED


def statements(script: str) -> list[str]:
    # executescript() would COMMIT the migration's open transaction first, so DDL runs one statement at a time
    # (a plain split on ";": the DDL holds no string literals)
    return [s.strip() for s in script.split(";") if s.strip()]


def _v0_to_v1(db: sqlite3.Connection) -> None:
    """Version 0 is the layout stores had before versions were recorded: the tables of version 1 with no
    user_version. Creating any table that is missing (IF NOT EXISTS) only completes a store whose first open was
    cut short between two CREATEs; existing tables and rows are left as they are."""
    for stmt in statements(SCHEMA_V1):
        db.execute(stmt)


def _v1_to_v2(db: sqlite3.Connection) -> None:
    """Version 2 only adds tables (batches, batch_items, embeddings); nothing existing changes."""
    for stmt in statements(SCHEMA_V2_ADDED):
        db.execute(stmt)


# MIGRATIONS[n] turns version n into n + 1. Append a step for each new layout; never edit or reorder old ones:
# stores of every past version on users' disks run them in order.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v0_to_v1, _v1_to_v2]
STORE_VERSION = len(MIGRATIONS)  # the layout this code reads and writes
