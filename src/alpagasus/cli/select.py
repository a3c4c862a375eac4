"""`alpagasus select`: a ratings file in, a training file out in the input's own format (one library call)."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from alpagasus.cli import app
from alpagasus.cli._options import FORMAT

console = Console(stderr=True, soft_wrap=True)


def fail(msg: str) -> None:
    """`error: MSG` (no markup, secrets redacted), exit status 2."""
    from alpagasus.cli._errors import fail as fail_

    fail_(msg)


@app.command("select")
def select_cmd(
    ratings: Path = typer.Argument(..., help="Ratings file from `alpagasus rate`."),
    output: Path = typer.Option(
        ..., "-o", "--output", help="Training file to write (.json list, .jsonl, .csv, .parquet)."
    ),
    threshold: float | None = typer.Option(None, help="Keep score >= threshold (the paper: 4.5)."),
    top_k: int | None = typer.Option(None, help="Keep the K best-rated."),
    keep_fraction: float | None = typer.Option(None, help="Keep this fraction of rated rows, best first."),
    random_k: int | None = typer.Option(None, "--random", help="K rows at random (the paper's baseline)."),
    longest: int | None = typer.Option(None, help="The K longest responses."),
    all_rows: bool = typer.Option(False, "--all", help="Every valid row."),
    seed: int = typer.Option(0, help="Seed for --random."),
    exclude_flagged: bool = typer.Option(False, help="Drop rows flagged as suspicious (prompt injection...)."),
    diverse: bool = typer.Option(
        False,
        help="Spend the score rule's budget on unlike rows (DEITA: best score "
        "first, skipping a row too similar to one already kept). See docs/select.md.",
    ),
    facility: bool = typer.Option(
        False,
        help="Diversity by facility location over the 4K best-scored rows "
        "(Superfiltering.D) instead of DEITA's walk; needs --top-k or --keep-fraction.",
    ),
    similarity: float | None = typer.Option(
        None,
        help="--diverse deita: skip a row whose cosine similarity "
        "to its nearest kept row is at least this (default 0.45).",
    ),
    dedup: bool = typer.Option(
        False,
        help="Remove near-duplicates first (MinHash over normalised text), "
        "keeping the best-rated copy; they are listed.",
    ),
    store: Path | None = typer.Option(None, help="Store for the embeddings (default: the user cache's)."),
    match_length: Path | None = typer.Option(
        None,
        help="With --random: draw the K rows with the response-length "
        "distribution of this selection (e.g. the filtered set), so an "
        "experiment can tell selection from length. See docs/select.md.",
    ),
    format: str | None = FORMAT,
) -> None:
    """Keep the best-rated examples (or a baseline) and write them in the training format."""
    from alpagasus.cli._errors import user_errors
    from alpagasus.select import select_file

    rules = {
        "threshold": threshold,
        "top_k": top_k,
        "keep_fraction": keep_fraction,
        "random": random_k,
        "longest": longest,
        "all": all_rows or None,
    }
    chosen = [k for k, v in rules.items() if v is not None]
    if len(chosen) != 1:
        fail("choose exactly one of --threshold, --top-k, --keep-fraction, --random, --longest, --all")
    if threshold is not None and not math.isfinite(threshold):
        fail(f"--threshold must be a number, not {threshold}")
    if similarity is not None and not diverse:
        fail("--similarity goes with --diverse")
    with user_errors():
        res = select_file(
            ratings,
            output,
            chosen[0],
            value=rules[chosen[0]],
            seed=seed,
            exclude_flagged=exclude_flagged,
            similarity=similarity,
            dedup=dedup,
            diverse="facility" if facility else "deita" if diverse else None,
            store=store,
            match_length=match_length,
            format=format,
        )
    t = Table(title=f"{ratings}: scores per bin")
    for b in res["bins"]:
        t.add_column(b, justify="right")
    t.add_row(*[str(v) for v in res["bins"].values()])
    console.print(t)
    console.print(f"rated ok: {res['rated']}, unparsed: {res['unparsed']}, other: {res['other']}")
    if res["flagged"]:
        console.print(f"flagged as suspicious: {res['flagged']} (excluded: {res['excluded_flagged']})")
    console.print(f"kept {res['kept']} of {res['rows']} rows ({chosen[0]}) -> {output}")
    from alpagasus.select.summary import summary_lines

    for line in summary_lines(res):
        console.print(line)
