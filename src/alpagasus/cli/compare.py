"""`alpagasus compare`: two models judged against each other in both orders (win / tie / lose)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from alpagasus.cli import app

if TYPE_CHECKING:  # for the annotations only: the CLI imports the library when a command runs
    from alpagasus.compare import CompareReport

console = Console(stderr=True)


@app.command("compare")
def compare_cmd(
    answers: list[Path] = typer.Argument(
        None,
        help="ANSWERS_A ANSWERS_B (e.g. two outputs of `alpagasus "
        "generate`), or files holding both models' answers in two columns "
        "named by --model-a / --model-b.",
    ),
    output: Path = typer.Option(
        ..., "-o", "--output", help="Directory for summary.json, outcomes.jsonl and the charts."
    ),
    judge: str | None = typer.Option(
        None,
        help="openai:MODEL | hf:PATH_OR_ID | vllm:MODEL (generate mode) | "
        "pointwise:PREDICTOR. Default: pointwise:alpaca-chatgpt-helpfulness, offline "
        "(each answer scored alone; docs/compare.md).",
    ),
    model_a: str | None = typer.Option(
        None,
        help="Model A's name: its column in a two-column file, its "
        "`model` value in a file of several models, or a display name.",
    ),
    model_b: str | None = typer.Option(None, help="Model B's name (as --model-a)."),
    testset: str | None = typer.Option(
        None, help="Test set name for rows that carry none (default: from the file name, e.g. vicuna_..json -> vicuna)."
    ),
    reviews_ab: list[Path] = typer.Option(
        [],
        "--reviews-ab",
        help="Re-aggregate judge replies made elsewhere "
        "(official AlpaGasus format), model A as Assistant 1 (repeatable: one "
        "file per test set).",
    ),
    reviews_ba: list[Path] = typer.Option([], "--reviews-ba", help="The same with model B as Assistant 1."),
    annotations: list[Path] = typer.Option(
        [],
        "--annotations",
        help="Re-aggregate AlpacaEval annotation files "
        "(results/<model>/<annotator>/annotations.json, or JSONL(.gz) of several "
        "models; repeatable): each judged model's win rate, raw and length "
        "controlled, in summary.json.",
    ),
    lc_calibration: list[Path] = typer.Option(
        [],
        "--lc-calibration",
        help="--annotations: AlpacaEval annotation "
        "files on the same instructions whose joint fit gives the "
        "instructions' difficulty and the pooled length slope for the "
        "length control (AlpacaEval uses its GPT-4-turbo leaderboard's for "
        "every judge). Default: the --annotations files themselves.",
    ),
    store: Path | None = typer.Option(None, help="SQLite store of judgments (default: in the user cache)."),
    limit: int | None = typer.Option(None, min=0, help="Judge only the first N questions of each test set."),
    max_tokens: int = typer.Option(256, min=1, help="Judge reply length cap (the paper: 256)."),
    max_reasks: int = typer.Option(2, min=0, help="Extra asks after a reply without two scores."),
    retry_unparsed: bool = typer.Option(False, help="Ask again for judgments stored as unparsed."),
    base_url: str | None = typer.Option(None, help="OpenAI-compatible endpoint (or $OPENAI_BASE_URL)."),
    concurrency: int | None = typer.Option(None, min=1, help="Requests in flight (API judges; default 16)."),
    batch_size: int | None = typer.Option(None, min=1, help="Prompts per generate call (local judges)."),
    device: str | None = typer.Option(None, help="Local judges: cpu, cuda, cuda:1..."),
    price_in: float | None = typer.Option(None, min=0, help="Price per million input tokens."),
    price_out: float | None = typer.Option(None, min=0, help="Price per million output tokens."),
    dry_run: bool = typer.Option(False, help="Print requests, tokens and cost; send nothing."),
    batch: bool = typer.Option(
        False,
        "--batch",
        help="openai: judges: send through the provider's Batch API (half "
        "the price, results within 24 h; resumable, never paid twice; docs/cost.md).",
    ),
    batch_discount: float = typer.Option(
        0.5, min=0, help="--batch: the batch price as a fraction of --price-in/--price-out (OpenAI: 0.5)."
    ),
    batch_poll: float = typer.Option(30.0, min=0.01, help="--batch: seconds between status checks."),
    wait: bool = typer.Option(False, help="If another run holds the store, wait instead of refusing."),
    capacity: bool = typer.Option(
        False,
        "--capacity",
        help="Also judge each model against --reference and report its score per skill as a % of the reference's.",
    ),
    reference: Path | None = typer.Option(None, help="The reference model's answers (for --capacity)."),
    reference_model: str | None = typer.Option(None, help="Its `model` value if the file holds several."),
    skills: Path | None = typer.Option(
        None,
        help="Skill per question ({idx, Skill}, like the WizardLM test "
        "set) when the answers carry none (default: the bundled WizardLM set).",
    ),
) -> None:
    """Compare two models with an LLM judge in both orders, as the AlpaGasus paper does."""
    from alpagasus.cli._errors import user_errors
    from alpagasus.cli._progress import ProgressBars
    from alpagasus.compare import compare_files, reaggregate_files
    from alpagasus.engine import RunOptions
    from alpagasus.errors import UserError

    with user_errors():  # what the user can fix: `error: ...`, exit status 2
        if lc_calibration and not annotations:
            raise UserError("--lc-calibration goes with --annotations (the verdicts whose win rates it calibrates)")
        if annotations:
            from alpagasus.compare.files import annotations_files

            _print_annotations(annotations_files(annotations, output, lc_calibration))
            return
        if reviews_ab or reviews_ba:
            if not (model_a and model_b):
                raise UserError("--reviews-ab/--reviews-ba need --model-a and --model-b (the answers' field names)")
            report: CompareReport | dict = reaggregate_files(reviews_ab, reviews_ba, model_a, model_b, output, testset)
        else:
            opts = RunOptions(
                max_tokens=max_tokens,
                max_reasks=max_reasks,
                retry_unparsed=retry_unparsed,
                price_in=price_in,
                price_out=price_out,
                batch=batch,
                batch_poll_s=batch_poll,
                batch_discount=batch_discount,
            )
            with ProgressBars(console) as bars:
                report = compare_files(
                    answers or [],
                    output,
                    judge=judge,
                    model_a=model_a,
                    model_b=model_b,
                    testset=testset,
                    store_path=store,
                    limit=limit,
                    options=opts,
                    wait=wait,
                    judge_options=dict(
                        base_url=base_url, concurrency=concurrency, batch_size=batch_size, device=device
                    ),
                    dry_run=dry_run,
                    with_capacity=capacity,
                    reference=reference,
                    reference_model=reference_model,
                    skills=skills,
                    progress=bars,
                )
    if isinstance(report, dict):  # --dry-run: what would be sent
        typer.echo(json.dumps(report, indent=2))
        return
    _print(report)


def _print(report: CompareReport) -> None:
    s = report.summary
    t = Table(
        title=escape(f"A = {s['model_a']}, B = {s['model_b']}; judge {s['judge']}"),
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    rows = {name: r for name, r in s["results"].items() if r["questions"]}
    failed = any(r["failed"] for r in rows.values())
    cols = ["test set", "n", "A wins", "tie", "B wins", "WS", "95% CI", "disagree", "unparsed"]
    cols += ["failed"] if failed else []
    for col in cols + ["words A/B"]:
        # the scores and intervals keep their width on a narrow terminal; headers give way first
        t.add_column(
            col,
            justify="left" if col == "test set" else "right",
            no_wrap=True,
            min_width={"WS": 5, "95% CI": 9}.get(col),
        )
    for name, r in rows.items():
        cells = [
            name,
            str(r["questions"]),
            str(r["win"]),
            str(r["tie"]),
            str(r["lose"]),
            _fmt(r["winning_score"], "{:.3f}"),
            _ci(r.get("winning_score_ci")),
            _fmt(r["disagreement"], "{:.0%}"),
            str(r["unparsed"]),
        ]
        cells += [str(r["failed"])] if failed else []
        cells.append(f"{_fmt(r.get('mean_words_a'), '{:.0f}')}/{_fmt(r.get('mean_words_b'), '{:.0f}')}")
        t.add_row(escape(cells[0]), *cells[1:])
        lc = r.get("length_controlled")
        if lc:  # right under the raw score: the same comparison at equal answer lengths (compare/lc.py)
            t.add_row(
                "  LC",
                "",
                "",
                "",
                "",
                _fmt(lc["winning_score"], "{:.3f}"),
                _ci(lc["winning_score_ci"]),
                *[""] * (len(cols) - 7 + 1),
            )
    console.print(t)
    console.print(
        "WS: winning score, (A wins - B wins) / judged + 1; 95% CI: bootstrap over questions; "
        "LC: length controlled, the winning score a logistic fit predicts at equal answer lengths "
        "(docs/compare.md); disagree: the two orders' verdicts differ"
    )
    if rows.get("all", {}).get("noise"):
        console.print(f"all: {rows['all']['noise']}", markup=False, highlight=False)
    lc_all = rows.get("all", {}).get("length_controlled")
    if lc_all and lc_all["winning_score"] is not None:
        console.print(
            f"all, length controlled: winning score {lc_all['winning_score']:.3f}, 95% interval "
            f"{_ci(lc_all['winning_score_ci'])} at equal answer lengths (raw "
            f"{rows['all']['winning_score']:.3f})",
            markup=False,
            highlight=False,
        )
    if s.get("position_bias"):
        console.print(f"position bias: {s['position_bias']}", markup=False, highlight=False)
    if s.get("judge_note"):
        console.print(f"judge: {s['judge_note']}", markup=False, highlight=False)
    if s["mismatches"]:
        console.print(f"[yellow]{len(s['mismatches'])} question(s) not compared:[/yellow]")
        for m in s["mismatches"][:20]:
            console.print(f"  {m}", markup=False, highlight=False)
    req = s.get("requests")
    if req:
        console.print(
            f"judge requests: {req['sent']} sent, {req['already_in_store']} found in the store; "
            f"unparsed {req['unparsed']}, errors {req['error']}"
        )
    if report.capacity:
        _print_capacity(report.capacity)
    console.print("written: " + ", ".join(str(p) for p in report.files), markup=False, highlight=False)


def _print_annotations(report) -> None:
    s = report.summary
    t = Table(
        title=escape(
            f"AlpacaEval win rates against {', '.join(s['reference'])}; annotator {', '.join(s['annotators'])}"
        ),
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for col in ("model", "n", "wins", "draws", "losses", "WR %", "LC WR %", "chars"):
        t.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
    for m, r in report.models.items():
        t.add_row(
            escape(m),
            str(r.n_total),
            str(r.n_wins),
            str(r.n_draws),
            str(r.n_wins_base),
            _fmt(r.win_rate, "{:.2f}"),
            _fmt(r.length_controlled_winrate, "{:.2f}"),
            _fmt(r.avg_length, "{:.0f}"),
        )
    console.print(t)
    console.print(
        f"{s['verdicts']} verdicts on {s['instructions']} instructions; WR: win rate, LC: length "
        f"controlled, chars: the model's mean answer length. {s['win_rate']}. "
        f"{s['length_controlled']}.",
        markup=False,
        highlight=False,
    )
    console.print("written: " + ", ".join(str(p) for p in report.files), markup=False, highlight=False)


def _print_capacity(cap: dict) -> None:
    t = Table(title=escape(f"capacity per skill, % of {cap['reference']}'s score"))
    models = list(cap["models"])
    t.add_column("skill")
    for m in models:
        t.add_column(escape(m), justify="right")
    skills: list[str] = []
    for m in models:
        skills += [k for k in cap["models"][m]["skills"] if k not in skills]
    for k in skills + ["all"]:
        cells = []
        for m in models:
            row = cap["models"][m]["all"] if k == "all" else cap["models"][m]["skills"].get(k, {})
            cells.append(_fmt(row.get("percent"), "{:.1f}%") + f" (n={row.get('judged', 0)})")
        t.add_row(escape(k), *cells)
    console.print(t)


def _ci(ci) -> str:
    return "-" if not ci else f"{ci[0]:.2f}-{ci[1]:.2f}"


def _fmt(v, spec: str) -> str:
    return "-" if v is None else spec.format(v)
