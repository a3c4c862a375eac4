"""Options more than one command takes: declared once here (one default, one help text), used by each."""

from __future__ import annotations

import typer

# rate reads a dataset in it; select and report read the rows of a ratings file written from one
FORMAT = typer.Option(
    None,
    "--format",
    help="The rows' format: alpaca, dolly, messages (OpenAI chat) or sharegpt; detected from the rows when not "
    "given. See docs/formats.md.",
    rich_help_panel="Input",
)
