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
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"alpagasus {version('alpagasus')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            typer.echo("alpagasus (not installed)")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Choose instruction-tuning data with an LLM judge (AlpaGasus), train on it, compare models."""


__all__ = ["app", "main"]

for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if not _mod.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod}")


# options whose value may be left out (`--ray` alone means a local cluster); click cannot express it in typer
OPTIONAL_VALUE = {"--ray": "local"}


def main(argv: list[str] | None = None) -> None:
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    for i in range(len(args) - 1, -1, -1):
        if args[i] in OPTIONAL_VALUE and (i + 1 == len(args) or args[i + 1].startswith("-")):
            args.insert(i + 1, OPTIONAL_VALUE[args[i]])
    try:
        app(args=args, prog_name="alpagasus")
    except Exception:  # a bug, not a user's mistake: the traceback is wanted, but never with a secret in it
        import traceback

        from alpagasus.redact import redact

        sys.stderr.write(redact(traceback.format_exc()))
        sys.exit(1)
