"""`alpagasus judge-check`: measure a judge on published verdicts, beside trivial judges; write its card."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from alpagasus.cli import app

console = Console(stderr=True)


@app.command("judge-check")
def judge_check_cmd(
    ctx: typer.Context,
    judge: str = typer.Option(
        ..., help="Any judge spec: pointwise:PREDICTOR, predictor:NAME, openai:MODEL, hf:PATH, vllm:MODEL, a plugin's."
    ),
    reference: list[Path] = typer.Option(
        [],
        "--reference",
        help="AlpacaEval annotation file(s) (JSON list or "
        "JSONL, .gz too; several are pooled), or one labels/ratings file with "
        "--decision.",
    ),
    reviews_ab: list[Path] = typer.Option(
        [],
        "--reviews-ab",
        help="Reviews in the official AlpaGasus format, model A as Assistant 1 (as in compare; one per test set).",
    ),
    reviews_ba: list[Path] = typer.Option([], "--reviews-ba", help="The same with model B as Assistant 1."),
    model_a: str | None = typer.Option(None, help="With --reviews-ab/ba: model A's answer field."),
    model_b: str | None = typer.Option(None, help="With --reviews-ab/ba: model B's answer field."),
    decision: str | None = typer.Option(
        None,
        help="A labels file's decision column (true/false, or a score "
        "kept at >= 4.5), e.g. claude_accuracy_ge_4_5: a rating reference.",
    ),
    uniform_column: str | None = typer.Option(
        None, help="With --decision: keep only the rows this true/false column marks (e.g. from_random_sample)."
    ),
    holdout: float | None = typer.Option(
        None,
        help="With --decision: keep only the rows `alpagasus distill "
        "--holdout F --seed HOLDOUT_SEED` held out (needs --uniform-column "
        "as distill had it), so a predictor is measured on unseen rows.",
    ),
    holdout_seed: int = typer.Option(0, help="The seed of that distill run."),
    dimension: str = typer.Option(
        "accuracy", help="Rating references: the rating prompt (accuracy or helpfulness) an LLM judge is asked with."
    ),
    output: Path = typer.Option(..., "-o", "--output", help="The judge card (JSON)."),
    sample: int | None = typer.Option(
        None,
        min=1,
        help="Measure on N items drawn with --seed: stratified (per judged model, or per decision) unless --uniform.",
    ),
    seed: int = typer.Option(0, help="Seed of the sample."),
    uniform: bool = typer.Option(False, "--uniform", help="Draw the sample uniformly, not stratified."),
    store: Path | None = typer.Option(None, help="SQLite store of judgments (default: in the user cache)."),
    dry_run: bool = typer.Option(False, help="Print requests, tokens and cost; send nothing."),
    price_in: float | None = typer.Option(None, min=0, help="Price per million input tokens."),
    price_out: float | None = typer.Option(None, min=0, help="Price per million output tokens."),
    max_tokens: int = typer.Option(256, min=1, help="Judge reply length cap."),
    max_reasks: int = typer.Option(2, min=0, help="Extra asks after a reply without scores."),
    base_url: str | None = typer.Option(None, help="OpenAI-compatible endpoint (or $OPENAI_BASE_URL)."),
    concurrency: int | None = typer.Option(None, min=1, help="Requests in flight (API judges; default 16)."),
    batch_size: int | None = typer.Option(None, min=1, help="Prompts per call (local judges)."),
    device: str | None = typer.Option(None, help="Local judges: cpu, cuda, cuda:1..."),
    wait: bool = typer.Option(False, help="If another run holds the store, wait instead of refusing."),
) -> None:
    """Measure a judge against published verdicts, beside trivial judges, and write its judge card."""
    from alpagasus.cli._errors import user_errors
    from alpagasus.cli._progress import ProgressBars
    from alpagasus.engine import RunOptions
    from alpagasus.judgecheck import ReferenceSpec, judge_check, write_card

    ref = ReferenceSpec(
        [str(p) for p in reference],
        [str(p) for p in reviews_ab],
        [str(p) for p in reviews_ba],
        model_a,
        model_b,
        decision,
        uniform_column,
        holdout,
        holdout_seed,
    )
    opts = RunOptions(max_tokens=max_tokens, max_reasks=max_reasks, price_in=price_in, price_out=price_out)
    with user_errors(), ProgressBars(console) as bars:
        card = judge_check(
            judge,
            ref,
            n=sample,
            seed=seed,
            uniform=uniform,
            dimension=dimension,
            store_path=store,
            options=opts,
            dry_run=dry_run,
            wait=wait,
            judge_options=dict(base_url=base_url, concurrency=concurrency, batch_size=batch_size, device=device),
            command=_command(ctx),
            progress=bars,
        )
        if not isinstance(card, dict):  # a dict of what would be sent with --dry-run
            write_card(card, output)
    if isinstance(card, dict):
        typer.echo(json.dumps(card, indent=2))
        return
    _print(card, output)


def _command(ctx: typer.Context) -> str:
    """The command as given (the options that differ from their defaults; the store left out, as where replies
    are kept changes no figure), for the card, with any secret in it redacted."""
    from alpagasus.redact import redact

    words = ["alpagasus", ctx.info_name or "judge-check"]
    for p in ctx.command.params:
        value = ctx.params.get(p.name)
        if value == p.default or value in (None, [], ()) or p.param_type_name != "option" or p.name == "store":
            continue
        flag = max(p.opts, key=len)
        if getattr(p, "is_flag", False):  # typer's options are its own vendored click's, not click.Option
            words.append(flag)
        else:
            words += [w for v in (value if isinstance(value, (list, tuple)) else [value]) for w in (flag, str(v))]
    return redact(shlex.join(words))


def _print(card, output: Path) -> None:
    from alpagasus.judgecheck.cards import figure_rows, key_figures

    cols, rows = figure_rows(card)
    s = card.sample
    t = Table(
        title=escape(
            f"{card.judge_id} on {card.reference.items} {card.kind} items of "
            f"{card.reference.annotator} (sample: {s.method}, seed {s.seed})"
        ),
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for c in ("", *cols):
        t.add_column(c, justify="left" if not c else "right", no_wrap=True)
    for r in rows:
        t.add_row(escape(r[0]), *r[1:])
    console.print(t)
    console.print(f"{key_figures(card)}; {card.length_preference}", markup=False, highlight=False)
    req = card.requests
    console.print(
        f"judge requests: {req.get('sent', 0)} sent, {req.get('already_in_store', 0)} found in the store"
        f"; unparsed {req.get('unparsed', 0)}, errors {req.get('error', 0)}",
        markup=False,
        highlight=False,
    )
    console.print(f"written: {output}", markup=False, highlight=False)
