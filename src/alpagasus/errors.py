"""The error a user can fix. Library calls raise it with a message naming the file, row and field (or the
flag) at fault; the CLI prints it without a traceback."""
from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (bad file, bad flag, busy store); the CLI prints it without a traceback."""
