"""`alpagasus report`: an HTML page, plots and summary.json for a ratings file (and agreement with another)."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from alpagasus.cli import app

console = Console(stderr=True, soft_wrap=True)


@app.command("report")
def report_cmd(
    ratings: Path = typer.Argument(..., help="Ratings file from `alpagasus rate` (.jsonl)."),
    output: Path = typer.Option(..., "-o", "--output", help="Directory for index.html, the PNGs and summary.json."),
    keywords: str | None = typer.Option(
        None,
        help="Comma-separated keywords, matched case-sensitively in "
        "instruction, input or output (default: the paper's coding set "
        "Java,java,C++,c++,C#,c#,Python,python).",
    ),
    compare: Path | None = typer.Option(
        None, help="A second ratings file of the same data (another judge or dimension): agreement on the common ids."
    ),
    threshold: float = typer.Option(
        4.5, help="Keep score >= threshold (the paper: 4.5); used for the kept counts and Cohen's kappa."
    ),
    examples: int = typer.Option(3, min=0, help="Example rows shown per score bin."),
    selection: list[Path] | None = typer.Option(
        None,
        help="A selection made from this file (the training "
        "file of `alpagasus select`, or its .selection.json); "
        "repeat to compare several side by side.",
    ),
    store: Path | None = typer.Option(None, help="Store of the embeddings (default: the selection's)."),
) -> None:
    """See the ratings before trusting them: score bins, kept per threshold, keywords, length, agreement."""
    from alpagasus.cli._errors import check, user_errors
    from alpagasus.report import DEFAULT_KEYWORDS, build_report

    check(math.isfinite(threshold), f"--threshold must be a number, not {threshold}")
    words = [k.strip() for k in keywords.split(",")] if keywords is not None else list(DEFAULT_KEYWORDS)
    with user_errors():
        s = build_report(
            ratings,
            output,
            keywords=words,
            compare=compare,
            threshold=threshold,
            examples_per_bin=examples,
            selections=selection or (),
            store=store,
        )
    t = Table(title=f"{ratings}: scores per bin")
    for b in s["bins"]:
        t.add_column(b, justify="right")
    t.add_row(*[str(v) for v in s["bins"].values()])
    console.print(t)
    th = f"{threshold:g}"
    kw = s["keywords"]
    lines = [
        f"rows {s['total']}, rated {s['rated']}, unparsed {s['unparsed']}, invalid {s['invalid']}, "
        f"error {s['error']}, flagged {s['flagged']}",
        f"kept at >= {th}: {s['kept_at'][th]} of {s['rated']} rated",
        f"keyword rows: {kw['rows']} ({kw['kept_at'][th]} kept at >= {th}); rest: {kw['rest']['rows']} "
        f"({kw['rest']['kept_at'][th]} kept)",
        f"Spearman(score, response length): {_num(s['length_spearman'])}",
    ]
    if s.get("length", {}).get("reading"):  # a strong length preference, read in words
        lines.append(s["length"]["reading"])
    if s.get("judge_note"):
        lines.append(f"judge: {s['judge_note']}")
    if "agreement" in s:
        a = s["agreement"]
        lines.append(
            f"agreement with {compare}: {a['common']} common rows, Spearman {_num(a['spearman'])}, "
            f"Cohen's kappa at {th} {_num(a['kappa'])}"
        )
    for x in s.get("selections", []):
        lines.append(
            f"selection {x['name']}: {x['size']} rows, mean score {_num(x['mean_score'])}, mean response "
            f"length {x['mean_length'] or 0:.0f}, redundancy {_num(x['redundancy'])}"
        )
    for line in lines:
        console.print(line)
    typer.echo(str(Path(output) / "index.html"))


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"
