"""Why a store cannot be used: another run holds it, a layout this code does not know, or damage SQLite found."""

from __future__ import annotations

import sqlite3
from pathlib import Path


class StoreBusy(RuntimeError):
    """Another run holds this store."""


class StoreVersionError(RuntimeError):
    """The file is a store of a layout this alpagasus does not know (a later version wrote it), or not a store."""


class StoreDamaged(RuntimeError):
    """SQLite finds the file damaged (bytes overwritten, a page cut off): it is refused before anything writes."""

    def __init__(self, path: Path, detail: str):
        fixed = path.with_name(path.stem + ".recovered" + path.suffix)
        super().__init__(
            f"the store {path} is damaged ({detail}); nothing was written to it. Recover what it still holds into "
            f'a new file with SQLite\'s .recover: `sqlite3 {path} ".recover" | sqlite3 {fixed}`, then pass '
            f"--store {fixed} (or move the damaged file away to start an empty store); ratings it lost are asked "
            "again"
        )


_DAMAGE_CODES = ("SQLITE_CORRUPT", "SQLITE_NOTADB")  # sqlite_errorname of damage (and SQLITE_CORRUPT_*)


def damage(path: str | Path, err: BaseException | None) -> StoreDamaged | None:
    """The StoreDamaged that `err` (or an error it was raised from) means, if it is SQLite reporting damage."""
    while err is not None and not (
        isinstance(err, sqlite3.DatabaseError) and str(getattr(err, "sqlite_errorname", "")).startswith(_DAMAGE_CODES)
    ):
        err = err.__cause__ or err.__context__
    return StoreDamaged(Path(path), str(err)) if err is not None else None
