"""The CLI's one error boundary: a mistake the user can fix (a bad path, name or value, a model or dataset that
cannot be loaded) ends as one message, `error: ...` on stderr with exit status 2, never a traceback. Every
message goes through `redact`, so an API key echoed by a server never reaches the screen or a log.

Set ALPAGASUS_DEBUG=1 to get the traceback instead (for bug reports).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, NoReturn

import typer

EXIT_USER_ERROR = 2
# (module, class) of the library's errors a user can fix
FIXABLE = (
    ("alpagasus.errors", "UserError"),
    ("alpagasus.data", "DataError"),
    ("alpagasus.models", "ModelNotFound"),
    ("alpagasus.judges.base", "JudgeError"),
    ("alpagasus.prompts", "TemplateError"),
    ("alpagasus.run.recipe", "RecipeError"),
    ("alpagasus.report", "ReportError"),
    ("alpagasus.train", "TrainError"),
    ("alpagasus.generate.backends", "BackendError"),
    ("alpagasus.predictors", "PredictorError"),
)


def fail(message: str, code: int = EXIT_USER_ERROR) -> NoReturn:
    """Print `error: MESSAGE` (secrets redacted, no markup interpreted) on stderr and exit with `code`."""
    from rich.console import Console
    from rich.markup import escape

    from alpagasus.redact import redact

    Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {escape(redact(message))}", highlight=False)
    raise typer.Exit(code)


def fixable() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "the user can fix this" (imported only when something went wrong; a module that
    cannot be imported contributes nothing). OSError covers what the file system and the network say: a
    missing or unreadable file, a directory, a full disk."""
    import importlib

    found: list[type[BaseException]] = [OSError]
    for module, name in FIXABLE:
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def describe(e: BaseException) -> str:
    """One line for the user: the library's message, or for an OSError the file and what is wrong with it."""
    if isinstance(e, OSError) and getattr(e, "filename", None) and e.strerror:
        files = f"{e.filename} -> {e.filename2}" if getattr(e, "filename2", None) else str(e.filename)
        return f"{files}: {e.strerror}"
    return str(e) or type(e).__name__


@contextlib.contextmanager
def user_errors(*extra: type[BaseException]) -> Iterator[None]:
    """Turn a fixable error raised inside the block (and any of `extra`) into `fail(...)`."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - filtered just below; anything else propagates unchanged
        if os.environ.get("ALPAGASUS_DEBUG") or not isinstance(e, fixable() + extra):
            raise
        fail(describe(e))


def check(ok: Any, message: str) -> None:
    """A flag's value checked in the CLI: `fail(message)` unless `ok`."""
    if not ok:
        fail(message)
