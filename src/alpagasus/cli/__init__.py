"""The `alpagasus` command: thin wrappers, one library call per subcommand.

Each module in this package registers its subcommands on `app`; none imports torch at import time.
"""
from __future__ import annotations

import importlib
import pkgutil

import typer

app = typer.Typer(
    name="alpagasus",
    help="Choose instruction-tuning data with an LLM judge (AlpaGasus), train on it, compare models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if not _mod.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod}")


def main() -> None:
    app()
