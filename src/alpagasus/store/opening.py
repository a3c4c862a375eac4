"""The one checked way every command opens a store: what keeps it from opening (a newer layout, not a store,
damaged, unreadable) is a UserError that says what to do."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from alpagasus.errors import UserError
from alpagasus.store.db import Store
from alpagasus.store.errors import StoreDamaged, StoreVersionError, damage


def open_store(path: str | Path) -> Store:
    """The store at `path`, checked; what keeps it from being opened (a newer layout, not a store, damaged,
    unreadable) is a UserError that says what to do. Every command that opens a store comes through here."""
    try:
        return Store(path)
    except (StoreVersionError, StoreDamaged) as e:  # their messages say what to do
        raise UserError(str(e)) from e
    except (sqlite3.Error, OSError) as e:
        hurt = damage(path, e)
        raise UserError(str(hurt) if hurt else f"cannot open the store {path}: {e}") from e


@contextlib.contextmanager
def opened(path: str | Path) -> Iterator[Store]:
    """`open_store` for one block, closed at its end; damage SQLite finds while the block reads or writes is a
    UserError too (with what to do), not a traceback."""
    st = open_store(path)
    try:
        yield st
    except sqlite3.DatabaseError as e:
        if (hurt := damage(st.path, e)) is None:
            raise
        raise UserError(str(hurt)) from e
    finally:
        st.close()
