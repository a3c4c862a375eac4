"""One judging session, used by rating and comparison alike: build the judge, open the store, hold its lock,
close everything on the way out, and turn what a user can fix into a `UserError` (the CLI prints it without a
traceback)."""
from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from alpagasus import judges
from alpagasus.data import DataError
from alpagasus.engine.types import StoreWriteError
from alpagasus.errors import UserError
from alpagasus.judges.base import Judge, JudgeError, OutageError
from alpagasus.paths import default_store
from alpagasus.store import Store, StoreBusy, StoreVersionError

# what a run can stop on that the user can fix: all resumable, nothing stored is lost
USER_FIXABLE = (StoreBusy, StoreWriteError, OutageError, JudgeError, DataError)


@dataclass
class Session:
    judge: Judge
    store: Store


def build_judge(spec: str | None, mode: str | None = None, options: Mapping[str, Any] | None = None) -> Judge:
    """`judges.get` with the options that were given (None means not given); a bad spec or option, or a
    missing extra, is a UserError."""
    try:
        return judges.get(spec, mode=mode, **{k: v for k, v in (options or {}).items() if v is not None})
    except JudgeError as e:
        raise UserError(str(e)) from e


def open_store(path: str | Path | None) -> Store:
    """The store at `path` (default: in the user cache); one that cannot be opened is a UserError."""
    path = path or default_store()
    try:
        return Store(path)
    except StoreVersionError as e:  # a newer alpagasus's store: its message says what to do
        raise UserError(str(e)) from e
    except (sqlite3.Error, OSError) as e:
        raise UserError(f"cannot open the store {path}: {e}") from e


@contextlib.contextmanager
def judging_session(judge: str | Judge | None, *, mode: str | None = None,
                    judge_options: Mapping[str, Any] | None = None, store_path: str | Path | None = None,
                    lock: bool = True, wait: bool = False) -> Iterator[Session]:
    """The judge (built from its spec unless given) and the store, held for one run (`lock=False` for reads
    such as a dry run). Both are closed when the block ends, however it ends."""
    j = judge if judge is not None and not isinstance(judge, str) else build_judge(judge, mode, judge_options)
    try:
        store = open_store(store_path)
    except UserError:
        j.close()
        raise
    try:
        with store.exclusive(wait=wait) if lock else contextlib.nullcontext():
            yield Session(j, store)
    except USER_FIXABLE as e:
        raise UserError(str(e)) from e
    finally:
        store.close()
        j.close()
