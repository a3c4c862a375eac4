"""The error a user can fix. Library calls raise it with a message naming the file, row and field (or the
flag) at fault; the CLI prints it without a traceback."""

from __future__ import annotations

from typing import Any

from alpagasus.redact import redact


class UserError(Exception):
    """A problem the user can fix (bad file, bad flag, busy store); the CLI prints it without a traceback.
    Its message is redacted (see alpagasus.redact): an API key echoed in an error never reaches the user's
    screen or log through it."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))
