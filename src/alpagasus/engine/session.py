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
from alpagasus.store import Store, StoreBusy, damage
from alpagasus.store import open_store as open_checked

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
    """The store at `path` (default: in the user cache), checked (store.open_store); one that cannot be opened
    (newer, damaged, unreadable) is a UserError."""
    return open_checked(path or default_store())


@contextlib.contextmanager
def judging_session(
    judge: str | Judge | None,
    *,
    mode: str | None = None,
    judge_options: Mapping[str, Any] | None = None,
    store_path: str | Path | None = None,
    lock: bool = True,
    wait: bool = False,
) -> Iterator[Session]:
    """The judge (built from its spec unless given) and the store, held for one run (`lock=False` for reads
    such as a dry run). Both are closed when the block ends, however it ends."""
    given = None if judge is None or isinstance(judge, str) else judge  # a built judge, which the caller hands over
    spec = judge if judge is None or isinstance(judge, str) else None
    try:  # the store first: a damaged or newer one stops the run before a model is loaded
        store = open_store(store_path)
    except UserError:
        if given is not None:
            given.close()
        raise
    try:
        j = given if given is not None else build_judge(spec, mode, judge_options)
    except BaseException:
        store.close()
        raise
    try:
        with store.exclusive(wait=wait) if lock else contextlib.nullcontext():
            yield Session(j, store)
    except USER_FIXABLE as e:
        hurt = damage(store.path, e)  # a write that failed on damage: say so, not "free space"
        raise UserError(str(hurt or e)) from e
    except sqlite3.DatabaseError as e:  # damage SQLite found after the open's check
        hurt = damage(store.path, e)
        if hurt is None:
            raise
        raise UserError(str(hurt)) from e
    finally:
        store.close()
        j.close()
