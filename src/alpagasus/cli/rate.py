"""`alpagasus rate`, `alpagasus select`, `alpagasus show`: flags in, one library call, a summary out."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from alpagasus.cli import app
from alpagasus.data.jsontext import MAX_ROW_BYTES

console = Console(stderr=True, soft_wrap=True)


def fail(msg: str) -> None:
    """`error: MSG` (no markup, secrets redacted), exit status 2."""
    from alpagasus.cli._errors import fail as fail_

    fail_(msg)


@app.command()
def rate(
    input: str = typer.Argument(
        ..., help="Dataset: .json/.jsonl/.csv/.tsv/.parquet, a datasets directory or hub name."
    ),
    output: Path = typer.Option(
        ..., "-o", "--output", help="Ratings file to write (.jsonl).", rich_help_panel="Output"
    ),
    judge: str | None = typer.Option(
        None,
        help="openai:MODEL | hf:PATH_OR_ID | predictor:NAME | vllm:MODEL | ifd:MODEL (Instruction-Following Difficulty). "
        "Default: the distilled predictor of the dimension (predictor:alpaca-claude-accuracy / -chatgpt-helpfulness); with --prompt, --scale or --mode, the embedded SmolLM2-135M-Instruct.",
        rich_help_panel="Judge",
    ),
    mode: str | None = typer.Option(
        None,
        help="generate (reply + explanation) or logprob (expected score). "
        "Default: logprob for local judges, generate for API judges.",
        rich_help_panel="Judge",
    ),
    dimension: str = typer.Option(
        "accuracy",
        help="accuracy or helpfulness (the paper's two prompts), or "
        "accuracy-guarded / helpfulness-guarded (data fenced against prompt injection).",
        rich_help_panel="Judge",
    ),
    prompt: str | None = typer.Option(
        None, help="Your own template file (see prompts/rate_accuracy.txt).", rich_help_panel="Judge"
    ),
    scale: str | None = typer.Option(
        None, help="Score range LO-HI, overriding the template's (e.g. 1-10).", rich_help_panel="Judge"
    ),
    base_url: str | None = typer.Option(
        None, help="OpenAI-compatible endpoint (or $OPENAI_BASE_URL).", rich_help_panel="Judge"
    ),
    concurrency: int | None = typer.Option(
        None, min=1, help="Requests in flight (API judges; default 16).", rich_help_panel="Run"
    ),
    batch_size: int | None = typer.Option(
        None, min=1, help="Examples per forward pass (local judges).", rich_help_panel="Run"
    ),
    store: Path | None = typer.Option(
        None, help="SQLite store of paid ratings (default: in the user cache).", rich_help_panel="Run"
    ),
    field: list[str] = typer.Option(
        [], "--field", help="Map a column: instruction=question (repeatable).", rich_help_panel="Input"
    ),
    skip_invalid: bool = typer.Option(
        False, help="Rate the valid rows; list invalid ones in the summary.", rich_help_panel="Input"
    ),
    max_row_bytes: int = typer.Option(
        MAX_ROW_BYTES,
        min=1,
        help="A JSON/JSONL row longer than this is invalid, "
        "never read whole: memory stays bounded whatever a line holds.",
        rich_help_panel="Input",
    ),
    limit: int | None = typer.Option(None, min=0, help="Rate only the first N examples.", rich_help_panel="Input"),
    sample: int | None = typer.Option(None, min=0, help="Rate a random sample of N examples.", rich_help_panel="Input"),
    seed: int = typer.Option(0, help="Seed for --sample.", rich_help_panel="Input"),
    dry_run: bool = typer.Option(False, help="Print requests, tokens and cost; send nothing.", rich_help_panel="Cost"),
    price_in: float | None = typer.Option(None, min=0, help="Price per million input tokens.", rich_help_panel="Cost"),
    price_out: float | None = typer.Option(
        None, min=0, help="Price per million output tokens.", rich_help_panel="Cost"
    ),
    max_tokens: int = typer.Option(256, min=1, help="Generate mode: reply length cap.", rich_help_panel="Judge"),
    retry_unparsed: bool = typer.Option(
        False, help="Ask again for examples stored as unparsed.", rich_help_panel="Run"
    ),
    rate_empty: bool = typer.Option(
        False,
        help="Also send rows whose instruction or output is empty (by default "
        "they get status `empty` without a request, and are never selected).",
        rich_help_panel="Input",
    ),
    wait: bool = typer.Option(
        False, help="If another run holds the store, wait instead of refusing.", rich_help_panel="Run"
    ),
    device: str | None = typer.Option(None, help="Local judges: cpu, cuda, cuda:1...", rich_help_panel="Judge"),
    context: int | None = typer.Option(
        None,
        min=1,
        help="API judges: the model's context in tokens; longer "
        "examples are stored as invalid_input without a request. ifd: judges: the truncation window (long "
        "rows are cut, not rejected).",
        rich_help_panel="Judge",
    ),
    timeout: float | None = typer.Option(
        None, min=0.001, help="API judges: seconds to wait for one reply (default 120).", rich_help_panel="Judge"
    ),
    max_attempts: int | None = typer.Option(
        None,
        min=1,
        help="Requests per example before it is stored as error (default 5; outages and 429s are not counted).",
        rich_help_panel="Run",
    ),
    max_outage: float | None = typer.Option(
        None,
        min=0,
        help="Seconds to pause while the judge is unreachable before stopping (default 3600); rerun to resume.",
        rich_help_panel="Run",
    ),
    ray: str | None = typer.Option(
        None,
        "--ray",
        metavar="[ADDRESS]",
        help="Rate on Ray workers: --ray alone "
        "starts a local cluster; auto or ray://HOST:10001 joins one (docs/ray.md).",
        rich_help_panel="Run",
    ),
    batch: bool = typer.Option(
        False,
        "--batch",
        help="openai: judges: send through the provider's Batch API (half "
        "the price, results within 24 h; resumable, never paid twice; docs/cost.md).",
        rich_help_panel="Cost",
    ),
    batch_discount: float = typer.Option(
        0.5,
        min=0,
        help="--batch: the batch price as a fraction of --price-in/--price-out (OpenAI: 0.5).",
        rich_help_panel="Cost",
    ),
    batch_poll: float = typer.Option(
        30.0, min=0.01, help="--batch: seconds between status checks.", rich_help_panel="Cost"
    ),
    min_label_mass: float | None = typer.Option(
        None,
        min=0,
        max=1,
        help="Logprob mode: a reply whose score "
        "labels hold less probability than this is no score: asked again "
        "in generate mode (API judges) or stored unparsed. Default 0.5 "
        "for API judges, off for local ones.",
        rich_help_panel="Judge",
    ),
    cascade: bool = typer.Option(
        False,
        help="The judge rates a random sample, a predictor (shipped or distilled "
        "from it) rates the rest, and rows it is unsure of go to the judge, within "
        "certified recall/precision targets; gives up when it cannot save (docs/cost.md).",
        rich_help_panel="Cascade",
    ),
    cascade_sample: int | None = typer.Option(
        None,
        min=1,
        help="--cascade: rows the judge rates first (default max(400, 10%), at most 5000).",
        rich_help_panel="Cascade",
    ),
    cascade_recall: float = typer.Option(
        0.95, help="--cascade: target recall of the kept set vs the judge alone.", rich_help_panel="Cascade"
    ),
    cascade_precision: float = typer.Option(
        0.95, help="--cascade: target precision of the kept set.", rich_help_panel="Cascade"
    ),
    cascade_threshold: float = typer.Option(
        4.5, help="--cascade: a row is kept when its score >= this.", rich_help_panel="Cascade"
    ),
    cascade_confidence: float = typer.Option(
        0.95,
        help="--cascade: confidence that both targets hold (one-sided "
        "Clopper-Pearson bounds on sample rows the band was not chosen on).",
        rich_help_panel="Cascade",
    ),
    cascade_min_saving: float = typer.Option(
        0.2,
        help="--cascade: give up after the sample unless the certified "
        "band leaves at least this share of the other rows to the predictor.",
        rich_help_panel="Cascade",
    ),
    cascade_stop: bool = typer.Option(
        False,
        help="--cascade: when it gives up, stop after the sample instead of rating the other rows with the judge.",
        rich_help_panel="Cascade",
    ),
    cascade_start: str = typer.Option(
        "auto",
        help="--cascade: the predictor: auto (whichever of the dimension's "
        "shipped one, one distilled from the sample, or both combined ranks the "
        "sample best), shipped or distilled.",
        rich_help_panel="Cascade",
    ),
) -> None:
    """Rate every example with an LLM judge (0-5, the paper's prompt); every rating is stored as it returns."""
    from alpagasus.cli._errors import user_errors
    from alpagasus.cli._progress import ProgressBars
    from alpagasus.engine import RunOptions
    from alpagasus.rate import rate_file

    opts = RunOptions(price_in=price_in, price_out=price_out, max_tokens=max_tokens, retry_unparsed=retry_unparsed)
    if max_attempts is not None:
        opts.max_attempts = max_attempts
    if max_outage is not None:
        opts.max_outage_s = max_outage
    opts.batch, opts.batch_discount, opts.batch_poll_s = batch, batch_discount, batch_poll
    opts.min_label_mass = min_label_mass
    judge_options = dict(
        base_url=base_url,
        concurrency=concurrency,
        batch_size=batch_size,
        device=device,
        context=context,
        timeout=timeout,
    )
    cascade_opts = None
    if cascade:
        from alpagasus.rate.cascade import CascadeOptions

        cascade_opts = CascadeOptions(
            sample=cascade_sample,
            recall=cascade_recall,
            precision=cascade_precision,
            threshold=cascade_threshold,
            seed=seed,
            confidence=cascade_confidence,
            min_saving=cascade_min_saving,
            stop=cascade_stop,
            start=cascade_start,
        )
    try:
        with user_errors(), ProgressBars(console) as bars:  # a fixable error: `error: ...`, exit status 2
            result = rate_file(
                input,
                output,
                judge=judge,
                mode=mode,
                dimension=dimension,
                prompt=prompt,
                scale=scale,
                judge_options=judge_options,
                options=opts,
                store_path=store,
                field_map=field,
                skip_invalid=skip_invalid,
                limit=limit,
                sample=sample,
                seed=seed,
                dry_run=dry_run,
                wait=wait,
                ray=ray,
                rate_empty=rate_empty,
                progress=bars,
                cascade=cascade_opts,
                max_row_bytes=max_row_bytes,
            )
    except KeyboardInterrupt as e:
        counts = getattr(e, "counts", None)
        done = f"{counts.done} ratings stored by this run, " if counts is not None else ""
        console.print(
            f"[yellow]interrupted:[/yellow] {done}nothing stored is lost; run the same command again to "
            f"resume ({output} was not written)"
        )
        raise typer.Exit(130) from None
    if dry_run:
        typer.echo(json.dumps(result, indent=2))
        return
    _print_summary(result, output)
    from alpagasus.judgecheck.caveats import domain_note  # the shipped predictors learned from Alpaca rows only

    for note in filter(None, [domain_note(result.judge, input)]):
        console.print(f"note: {note}", style="yellow", markup=False, highlight=False)


def _print_summary(s, output: Path) -> None:
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
    if r.note.startswith("batch:"):
        console.print(r.note)
    if s.cascade:
        _print_cascade(s.cascade)
    for bad in s.invalid[:50]:
        console.print(f"  [yellow]invalid[/yellow] {bad}")
    if len(s.invalid) > 50:
        console.print(f"  ... and {len(s.invalid) - 50} more invalid rows (status invalid_input in {output})")
    console.print(f"{output} is unchanged" if s.note.startswith("nothing to do") else f"ratings written to {output}")


def _print_cascade(c) -> None:
    """A rate.cascade.CascadeSummary."""
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


@app.command()
def show(
    ratings: Path = typer.Argument(..., help="Ratings file from `alpagasus rate`."),
    status: str = typer.Option("unparsed", help="ok | unparsed | invalid_input | error | empty"),
    n: int = typer.Option(20, min=0, help="How many to show."),
) -> None:
    """List rated rows of one status, with the raw reply (e.g. the unparsed ones)."""
    from alpagasus.cli._errors import user_errors
    from alpagasus.data import read_jsonl
    from alpagasus.records import STATUSES, rating_field
    from alpagasus.redact import redact

    if status not in STATUSES:
        fail(f"--status must be one of {', '.join(STATUSES)}, not {status!r}")
    shown = 0
    with user_errors():  # a missing, unreadable or malformed ratings file
        for r in read_jsonl(ratings):
            if rating_field(r, "status") == status and shown < n:
                shown += 1
                fields = {k: rating_field(r, k) for k in ("id", "row", "score", "status", "explanation", "raw")}
                typer.echo(redact(json.dumps({**fields, "instruction": r.get("instruction")}, ensure_ascii=False)))
