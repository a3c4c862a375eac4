"""`alpagasus rate`, `alpagasus show`: flags in, one library call, a summary out (`select`: cli/select.py)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from alpagasus.cli import app
from alpagasus.cli._options import FORMAT
from alpagasus.rate.options import FLAGS, Flag, flag_default, flag_type
from alpagasus.rate.summary import CascadeSummary, RateSummary

console = Console(stderr=True, soft_wrap=True)


def fail(msg: str) -> None:
    """`error: MSG` (no markup, secrets redacted), exit status 2."""
    from alpagasus.cli._errors import fail as fail_

    fail_(msg)


def _flag(f: Flag) -> inspect.Parameter:
    """One `rate` option from its declaration (rate/options.py: FLAGS): its default, help and panel are read
    there, never written here."""
    opt = typer.Option(
        flag_default(f), *f.names, help=f.help, rich_help_panel=f.panel, min=f.min, max=f.max, metavar=f.metavar
    )
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=flag_type(f))


def rate(input: str, output: Path, **flags: Any) -> None:
    """Rate every example with an LLM judge (0-5, the paper's prompt); every rating is stored as it returns."""
    from alpagasus.cli._errors import user_errors
    from alpagasus.cli._progress import ProgressBars
    from alpagasus.rate import rate_file
    from alpagasus.rate.options import from_flags

    try:
        with user_errors(), ProgressBars(console) as bars:  # a fixable error: `error: ...`, exit status 2
            result = rate_file(input, output, from_flags(flags), progress=bars)
    except KeyboardInterrupt as e:
        counts = getattr(e, "counts", None)
        done = f"{counts.done} ratings stored by this run, " if counts is not None else ""
        console.print(
            f"[yellow]interrupted:[/yellow] {done}nothing stored is lost; run the same command again to "
            f"resume ({output} was not written)"
        )
        raise typer.Exit(130) from None
    if isinstance(result, dict):  # --dry-run: what would be sent
        typer.echo(json.dumps(result, indent=2))
        return
    _print_summary(result, output)
    from alpagasus.judgecheck.caveats import domain_note  # the shipped predictors learned from Alpaca rows only

    for note in filter(None, [domain_note(result.judge, input)]):
        console.print(f"note: {note}", style="yellow", markup=False, highlight=False)


_P = inspect.Parameter
rate.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [
        _P(
            "input",
            _P.POSITIONAL_OR_KEYWORD,
            annotation=str,
            default=typer.Argument(
                ..., help="Dataset: .json/.jsonl/.csv/.tsv/.parquet, a datasets directory or hub name."
            ),
        ),
        _P(
            "output",
            _P.KEYWORD_ONLY,
            annotation=Path,
            default=typer.Option(
                ..., "-o", "--output", help="Ratings file to write (.jsonl).", rich_help_panel="Output"
            ),
        ),
        *(_flag(f) for f in FLAGS),
        _P("format", _P.KEYWORD_ONLY, annotation=str | None, default=FORMAT),  # shared with select and report
    ],
    return_annotation=None,
)
app.command()(rate)


def _print_summary(s: RateSummary, output: Path) -> None:
    r = s.run
    if s.note:
        console.print(s.note)
    t = Table(title=f"rated with {s.judge}", show_header=False)
    unique = s.cascade.rows + s.empty if s.cascade else s.unique  # a cascade's counts are the strong judge's
    for k, v in [
        ("rows read", s.rows),
        ("unique examples", unique),
        ("duplicates (rated once)", s.duplicates),
        ("invalid rows", len(s.invalid)),
        ("empty instruction or output (not sent)", s.empty),
        ("already in the store", s.already_rated),
        ("requests sent", r.requests_sent),
        ("ok", r.ok),
        ("unparsed", r.unparsed),
        ("invalid_input", r.invalid_input),
        ("error", r.error),
        ("rate limited (429, waited)", r.throttled),
        ("ambiguous attempts (timed out)", r.ambiguous),
        ("paused for outages (s)", f"{r.outage_s:.0f}"),
        ("re-asked in generate mode (label mass under the floor)", r.fallbacks),
        ("provider batches created (--batch)", r.batches),
        ("flagged (possible prompt injection)", s.flagged),
        ("tokens in/out", f"{r.tokens_in}/{r.tokens_out}"),
        ("cost", "-" if r.cost is None else f"{r.cost:.4f}"),
        ("seconds", f"{r.elapsed_s:.1f}"),
    ]:
        t.add_row(k, str(v))
    console.print(t)
    if r.used_batches:  # --batch: what the provider batches did
        console.print(r.batch_line())
    if s.cascade:
        _print_cascade(s.cascade)
    for bad in s.invalid[:50]:
        console.print(f"  [yellow]invalid[/yellow] {bad}")
    if len(s.invalid) > 50:
        console.print(f"  ... and {len(s.invalid) - 50} more invalid rows (status invalid_input in {output})")
    console.print(f"{output} is unchanged" if s.up_to_date else f"ratings written to {output}")


def _print_cascade(c: CascadeSummary) -> None:
    t = Table(title="cascade", show_header=False)
    rows = [
        ("rows", c.rows),
        (
            "strong-judge rows (sample + band)",
            f"{c.strong_rows} ({c.sample} + {c.band}, {100 * c.strong_fraction:.1f}%)",
        ),
        ("strong-judge calls saved", c.calls_saved),
        ("targets (recall, precision)", f"{c.targets[0]}, {c.targets[1]} with {c.confidence:.0%} confidence"),
    ]
    if c.predictor:
        rows[3:3] = [
            (
                "decided by the predictor",
                f"{c.decided.get('keep', 0)} kept, {c.decided.get('drop', 0)} dropped ({c.start}: {c.predictor})",
            ),
            ("band (predictor value)", f"[{c.lo:.4g}, {c.hi:.4g})"),
            ("recall lower bound", f"{c.recall_bound:.3f}"),
            ("precision lower bound", f"{c.precision_bound:.3f}"),
        ]
    for k, v in rows:
        t.add_row(k, str(v))
    console.print(t)
    console.print(f"guaranteed: {c.guarantee}", markup=False, highlight=False)
    if c.note:
        console.print(
            f"cascade: {'gave up after the sample: ' if c.gave_up else ''}{c.note}",
            style="yellow",
            markup=False,
            highlight=False,
        )


@app.command()
def show(
    ratings: Path = typer.Argument(..., help="Ratings file from `alpagasus rate`."),
    status: str = typer.Option("unparsed", help="ok | unparsed | invalid_input | error | empty"),
    n: int = typer.Option(20, min=0, help="How many to show."),
) -> None:
    """List rated rows of one status, with the raw reply (e.g. the unparsed ones)."""
    from alpagasus.cli._errors import user_errors
    from alpagasus.data import read_jsonl
    from alpagasus.formats import example_of
    from alpagasus.ratings_file import rating_field
    from alpagasus.records import STATUSES, Example
    from alpagasus.redact import redact

    if status not in STATUSES:
        fail(f"--status must be one of {', '.join(STATUSES)}, not {status!r}")
    shown = 0
    with user_errors():  # a missing, unreadable or malformed ratings file
        for r in read_jsonl(ratings):
            if rating_field(r, "status") == status and shown < n:
                shown += 1
                fields = {k: rating_field(r, k) for k in ("id", "row", "score", "status", "explanation", "raw")}
                sample = example_of(r)  # the row's prompt in any format (a chat row: its rendered context)
                prompt = sample.prompt if isinstance(sample, Example) else None
                typer.echo(redact(json.dumps({**fields, "instruction": prompt}, ensure_ascii=False)))
