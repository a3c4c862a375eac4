"""File-level calls behind `alpagasus compare`: read the answers, judge, write summary.json, outcomes.jsonl
and the charts. Usable from Python as they are; `UserError` carries problems the user can fix."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from alpagasus.compare.aggregate import outcome_rows, summary_json
from alpagasus.compare.alpacaeval import WinRate, read_annotations, win_rates
from alpagasus.compare.capacity import CapacityError, attach_skills, capacity
from alpagasus.compare.inputs import (
    AnswerRow,
    bundled_skills,
    columns,
    read_answers,
    read_reviews,
    read_skills,
    read_two_columns,
)
from alpagasus.compare.pairwise import compare, match, plan, reaggregate
from alpagasus.compare.types import CompareResult
from alpagasus.data import DataError, write_json, write_jsonl
from alpagasus.engine.loop import ProgressFactory
from alpagasus.engine.session import judging_session
from alpagasus.engine.types import RunOptions
from alpagasus.errors import UserError
from alpagasus.prompts.template import Template, TemplateError, load_template
from alpagasus.store import Store

SUMMARY, OUTCOMES, CHART = "summary.json", "outcomes.jsonl", "win_tie_lose.png"
CAPACITY, CAPACITY_CHART = "capacity.json", "capacity.png"


@dataclass
class CompareReport:
    summary: dict  # what summary.json holds
    result: CompareResult
    capacity: dict | None = None  # what capacity.json holds
    files: list[Path] = field(default_factory=list)


@dataclass
class AnnotationsReport:
    """`compare --annotations`: AlpacaEval's win rates re-aggregated from its published verdicts."""

    summary: dict  # what summary.json holds
    models: dict[str, WinRate]  # per judged model, highest win rate first
    files: list[Path] = field(default_factory=list)


WIN_RATE_NOTE = (
    "win_rate: AlpacaEval's, 100 x mean(preference - 1) over the verdicts, a draw (1.5 or 0) one half, "
    "a null preference left out (as alpaca_eval's describe_head2head); n_wins / n_wins_base / n_draws "
    "by the preference's side of 1.5"
)
LC_NOTE = (
    "length_controlled_winrate: a logistic model of each verdict on tanh(length difference / sd) with the "
    "instructions' difficulty, predicted at zero length difference (compare/lc.py, docs/compare.md)"
)


def annotations_files(
    paths: Sequence[str | Path], out_dir: str | Path, calibration: Sequence[str | Path] = ()
) -> AnnotationsReport:
    """Read AlpacaEval annotation files (one judged model per file, or several: grouped by generator_2) and
    write summary.json with each model's raw and length-controlled win rate. `calibration`: annotation files
    whose joint fit gives the instructions' difficulty and the pooled length slope (default: `paths`)."""
    if not paths:
        raise UserError("give at least one AlpacaEval annotations file (--annotations FILE)")
    _check_out_dir(out_dir)
    try:
        verdicts = read_annotations(paths)
        cal = read_annotations(calibration) if calibration else None
    except (DataError, OSError) as e:
        raise UserError(str(e)) from e
    if not verdicts:
        raise UserError(f"{', '.join(map(str, paths))}: no verdicts")
    rates = win_rates(verdicts)
    try:
        from alpagasus.compare.lc import alpaca_eval_lc

        lc = alpaca_eval_lc(verdicts, cal)
    except ImportError:  # numpy / scipy (the `lc` extra) not installed: the raw win rates alone
        lc = {}
    models = {m: replace(r, length_controlled_winrate=lc.get(m)) for m, r in rates.items()}
    models = dict(sorted(models.items(), key=lambda kv: -(kv[1].win_rate or 0.0)))
    summary = {
        "format": "alpacaeval",
        "inputs": {"annotations": [str(p) for p in paths], "lc_calibration": [str(p) for p in calibration] or None},
        "annotators": sorted({v.annotator for v in verdicts}),
        "reference": sorted({v.generator_1 for v in verdicts}),
        "instructions": len({v.instruction for v in verdicts}),
        "verdicts": len(verdicts),
        "models": {m: asdict(r) for m, r in models.items()},
        "win_rate": WIN_RATE_NOTE,
        "length_controlled": LC_NOTE if lc else "not computed: needs numpy and scipy (pip install 'alpagasus[lc]')",
    }
    out = Path(out_dir)
    write_json(out / SUMMARY, summary)
    return AnnotationsReport(summary, models, [out / SUMMARY])


def load_answers(
    files: Sequence[str | Path], model_a: str | None = None, model_b: str | None = None, testset: str | None = None
) -> tuple[list[AnswerRow], list[AnswerRow]]:
    """Two files (A's answers, B's), or files holding both models in columns named --model-a/--model-b."""
    try:
        if files and model_a and model_b and all({model_a, model_b} <= columns(f) for f in files):
            rows_a: list[AnswerRow] = []
            rows_b: list[AnswerRow] = []
            for f in files:
                a, b = read_two_columns(f, model_a, model_b, testset)
                rows_a += a
                rows_b += b
            return rows_a, rows_b
        if len(files) != 2:
            raise UserError(
                "give two answer files (model A's, model B's), or files with both models' answers in "
                "two columns named by --model-a and --model-b"
            )
        return read_answers(files[0], model_a, testset), read_answers(files[1], model_b, testset)
    except (DataError, OSError) as e:
        raise UserError(str(e)) from e


def compare_files(
    files: Sequence[str | Path],
    out_dir: str | Path,
    *,
    judge: str | None = None,
    judge_options: Mapping[str, Any] | None = None,
    options: RunOptions | None = None,
    model_a: str | None = None,
    model_b: str | None = None,
    testset: str | None = None,
    store_path: str | Path | None = None,
    limit: int | None = None,
    wait: bool = False,
    dry_run: bool = False,
    with_capacity: bool = False,
    reference: str | Path | None = None,
    reference_model: str | None = None,
    skills: str | Path | None = None,
    progress: ProgressFactory | None = None,
) -> CompareReport | dict:
    """Judge model A against model B in both orders and write the outputs into `out_dir`. With
    `with_capacity`, also each model against `reference` per skill. `judge_options` go to the judge, `options`
    to the run (max_tokens, max_reasks, prices...). With `dry_run`, a dict of what would be sent."""
    if limit is not None and limit < 0:
        raise UserError(f"limit must be >= 0, not {limit}")
    _check_out_dir(out_dir)
    rows_a, rows_b = load_answers(files, model_a, model_b, testset)
    ref_rows = _reference(rows_a, rows_b, reference, reference_model, skills, testset) if with_capacity else []
    try:
        template, cap_template = load_template("pairwise"), load_template("capacity")
    except TemplateError as e:
        raise UserError(str(e)) from e
    opts = options or RunOptions()
    inputs = {
        "files": [str(f) for f in files],
        "reference": str(reference) if reference else None,
        "max_tokens": opts.max_tokens,
        "limit": limit,
    }
    if judge is None:  # no --judge: the offline pairwise judge (judges.DEFAULT_PAIRWISE)
        from alpagasus.judges import default_pairwise_judge

        judge = default_pairwise_judge()
    with judging_session(
        judge, mode="generate", judge_options=judge_options, store_path=store_path, lock=not dry_run, wait=wait
    ) as session:
        j, store = session.judge, session.store
        if opts.batch:  # before anything is sent: the judge must speak the Batch API
            from alpagasus.engine.batch import check_batchable

            check_batchable(j)
        if dry_run:
            return _dry_run(rows_a, rows_b, template, store, j.id, opts, limit)
        result = compare(rows_a, rows_b, j, store, template, opts, limit, progress)
        cap = None
        if with_capacity:
            if rows_a[0].model == rows_b[0].model:
                raise UserError(
                    f"both models are named {rows_a[0].model!r}: name them with --model-a and "
                    "--model-b for the capacity table"
                )
            try:
                cap = capacity(
                    {rows_a[0].model: rows_a, rows_b[0].model: rows_b},
                    ref_rows,
                    j,
                    store,
                    cap_template,
                    opts,
                    limit,
                    progress,
                ).to_json()
            except CapacityError as e:
                raise UserError(str(e)) from e
    if not result.pairs:
        raise UserError(
            "no question is in both answer files (see the mismatches): "
            + "; ".join(str(m) for m in result.mismatches[:5])
        )
    return write_outputs(result, out_dir, inputs, cap)


def _check_out_dir(out_dir: str | Path) -> None:
    """Before anything is judged: the outputs go into a directory, not onto a file."""
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise UserError(f"{out_dir}: a file, not a directory; give a directory for the outputs (-o)")


def _reference(
    rows_a: list[AnswerRow],
    rows_b: list[AnswerRow],
    reference: str | Path | None,
    reference_model: str | None,
    skills: str | Path | None,
    testset: str | None,
) -> list[AnswerRow]:
    """The reference model's answers, with every row's skill filled in from the skills table."""
    if reference is None:
        raise UserError("--capacity needs --reference FILE (the reference model's answers)")
    try:
        ref_rows = read_answers(reference, reference_model, testset)
        table = read_skills(skills, testset) if skills else bundled_skills()
    except (DataError, OSError) as e:
        raise UserError(str(e)) from e
    for rows in (rows_a, rows_b, ref_rows):
        attach_skills(rows, table)
    return ref_rows


def _dry_run(
    rows_a: list[AnswerRow],
    rows_b: list[AnswerRow],
    template: Template,
    store: Store,
    judge_id: str,
    opts: RunOptions,
    limit: int | None,
) -> dict:
    pairs, mismatches = match(rows_a, rows_b, limit)
    todo, done = plan(pairs, template, store, judge_id, retry_unparsed=opts.retry_unparsed)
    tokens_in = sum(max(1, len(it.request.system + it.request.user) // 4) + 8 for it in todo)
    tokens_out = len(todo) * min(opts.max_tokens, 200)
    return {
        "judge": judge_id,
        "prompt_version": template.version,
        "questions": len(pairs),
        "mismatches": len(mismatches),
        "already_in_store": done,
        "requests": len(todo),
        "tokens_in_estimate": tokens_in,
        "tokens_out_estimate": tokens_out,
        "cost_estimate": opts.cost(tokens_in, tokens_out),
    }


def reaggregate_files(
    reviews_ab: Sequence[str | Path],
    reviews_ba: Sequence[str | Path],
    model_a: str,
    model_b: str,
    out_dir: str | Path,
    testset: str | None = None,
) -> CompareReport:
    """Win/tie/lose from review files in the official AlpaGasus format (one per test set and order)."""
    if not reviews_ab or len(reviews_ab) != len(reviews_ba):
        raise UserError("give as many --reviews-ba files as --reviews-ab files (one of each per test set)")
    _check_out_dir(out_dir)
    try:
        ab = [r for f in reviews_ab for r in read_reviews(f, model_a, model_b, testset)]
        ba = [r for f in reviews_ba for r in read_reviews(f, model_b, model_a, testset)]
    except (DataError, OSError) as e:
        raise UserError(str(e)) from e
    result = reaggregate(ab, ba, model_a, model_b)
    if not result.pairs:
        raise UserError("no question is in both review files: " + "; ".join(str(m) for m in result.mismatches[:5]))
    inputs = {"reviews_ab": [str(f) for f in reviews_ab], "reviews_ba": [str(f) for f in reviews_ba]}
    return write_outputs(result, out_dir, inputs)


def write_outputs(
    result: CompareResult, out_dir: str | Path, inputs: dict | None = None, cap: dict | None = None
) -> CompareReport:
    """summary.json, outcomes.jsonl, win_tie_lose.png (and capacity.json, capacity.png), written atomically."""
    from alpagasus.compare.plots import capacity_bars, win_tie_lose
    from alpagasus.judgecheck.cards import judge_note

    out = Path(out_dir)
    summary = summary_json(result, inputs)
    # what the judge is and what its card measured (docs/judge_check.md), beside its verdicts
    summary["judge_note"] = judge_note(result.judge, result.summary.get("all", {}).get("longer_answer_wins"))
    write_json(out / SUMMARY, summary)
    write_jsonl(out / OUTCOMES, outcome_rows(result))
    win_tie_lose(
        {k: v for k, v in result.summary.items() if v["questions"]}, result.model_a, result.model_b, out / CHART
    )
    files = [out / SUMMARY, out / OUTCOMES, out / CHART]
    if cap is not None:
        write_json(out / CAPACITY, cap)
        capacity_bars(cap, out / CAPACITY_CHART)
        files += [out / CAPACITY, out / CAPACITY_CHART]
    return CompareReport(summary, result, cap, files)
