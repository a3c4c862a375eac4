"""`judge_check`: run a judge on a reference set through the engine and the store (a judgment already held is
never asked again, so a second run sends nothing), measure it beside the trivial judges, and make its card.

Pairwise sets are judged with compare's prompt in both orders (compare.pairwise.judge_pairs; position bias is
the share of items whose two orders disagree) and combined by the paper's rule; rating sets are rated with
the rating prompt of `dimension` (rate.loop.rate) and the score ranked against the recorded decisions.
"""

from __future__ import annotations

import datetime
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from alpagasus.data import DataError
from alpagasus.engine.loop import ProgressFactory
from alpagasus.engine.session import Session, judging_session
from alpagasus.engine.types import RunOptions
from alpagasus.errors import UserError
from alpagasus.judgecheck.baselines import pairwise_verdicts, rating_scores
from alpagasus.judgecheck.cards import JudgeCard, ReferenceInfo, SampleInfo, describe, length_preference
from alpagasus.judgecheck.metrics import pairwise_figures, rating_figures
from alpagasus.judgecheck.references import (
    PairItem,
    RatingItem,
    ReferenceSet,
    read_alpacaeval,
    read_labels_reference,
    read_reviews_reference,
    sample,
)
from alpagasus.prompts.template import TemplateError, load_template

TESTSET = "judge-check"  # the test-set name of the pairs judged (it never enters a stored item's id)


@dataclass
class ReferenceSpec:
    """Which reference set to read, as the command's options give it."""

    files: list[str] = field(default_factory=list)  # AlpacaEval annotations, or a labels file
    reviews_ab: list[str] = field(default_factory=list)
    reviews_ba: list[str] = field(default_factory=list)
    model_a: str | None = None
    model_b: str | None = None
    decision: str | None = None  # a labels file's decision column
    uniform_column: str | None = None
    holdout: float | None = None
    holdout_seed: int = 0

    def read(self) -> ReferenceSet:
        try:
            if self.reviews_ab or self.reviews_ba:
                if not (self.model_a and self.model_b):
                    raise UserError("--reviews-ab/--reviews-ba need --model-a and --model-b (the answers' fields)")
                return read_reviews_reference(self.reviews_ab, self.reviews_ba, self.model_a, self.model_b)
            if not self.files:
                raise UserError(
                    "give a reference: --reference FILE (AlpacaEval annotations, or a labels file "
                    "with --decision COLUMN), or --reviews-ab/--reviews-ba"
                )
            if self.decision:
                if len(self.files) != 1:
                    raise UserError("--decision reads one labels file: give one --reference")
                return read_labels_reference(
                    self.files[0], self.decision, self.uniform_column, self.holdout, self.holdout_seed
                )
            return read_alpacaeval(self.files)
        except (DataError, OSError) as e:
            raise UserError(str(e)) from e

    def filters(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in (
                ("uniform_column", self.uniform_column),
                ("holdout", self.holdout),
                ("holdout_seed", self.holdout_seed if self.holdout is not None else None),
                ("model_a", self.model_a),
                ("model_b", self.model_b),
            )
            if v is not None
        }


def judge_check(
    judge: str,
    reference: ReferenceSpec,
    *,
    n: int | None = None,
    seed: int = 0,
    uniform: bool = False,
    dimension: str = "accuracy",
    store_path: str | Path | None = None,
    judge_options: Mapping[str, Any] | None = None,
    options: RunOptions | None = None,
    dry_run: bool = False,
    wait: bool = False,
    command: str = "",
    progress: ProgressFactory | None = None,
) -> JudgeCard | dict:
    """Measure `judge` on the reference set; the card (or, with `dry_run`, a dict of what would be sent)."""
    if n is not None and n < 1:
        raise UserError(f"--sample must be 1 or more, not {n}")
    ref = reference.read()
    items = sample(ref.items, n, seed, uniform)
    if not items:
        raise UserError(f"{', '.join(ref.files)}: no item with a verdict to measure the judge on")
    opts = options or RunOptions()
    template_name = "pairwise" if ref.kind == "pairwise" else dimension
    try:
        template = load_template(template_name)
    except TemplateError as e:
        raise UserError(str(e)) from e
    mode = "generate" if ref.kind == "pairwise" else None
    with judging_session(
        judge, mode=mode, judge_options=judge_options, store_path=store_path, lock=not dry_run, wait=wait
    ) as session:
        if ref.kind == "pairwise" and session.judge.mode != "generate":
            raise UserError(
                f"{session.judge.id} scores one answer, not a pair: for a pairwise reference give a "
                "pairwise judge (e.g. pointwise:NAME for a predictor, or an LLM)"
            )
        if ref.kind == "rating" and session.judge.order_blind:
            raise UserError(
                f"{session.judge.id} judges a pair of answers: for a rating reference give a rating "
                "judge (e.g. predictor:NAME)"
            )
        if dry_run:
            return _dry_run(items, ref, template, session, opts)
        if ref.kind == "pairwise":
            figures, base, ref_figs, requests = _check_pairs(items, template, session, opts, progress)
        else:
            figures, base, requests = _check_ratings(items, template, session, opts, progress)
            ref_figs = None
        judge_id = session.judge.id
    method = (
        "all"
        if n is None or n >= len(ref.items)
        else "uniform"
        if uniform
        else "stratified by judged model"
        if ref.kind == "pairwise"
        else "stratified by decision"
    )
    from alpagasus import __version__

    return JudgeCard(
        judge=judge,
        judge_id=judge_id,
        kind=ref.kind,
        description=describe(judge_id),
        reference=ReferenceInfo(
            ref.format, ref.files, ref.annotator, ref.rows, len(items), reference.filters(), ref.skipped
        ),
        sample=SampleInfo(n, seed, method),
        figures=figures,
        baselines=base,
        reference_figures=ref_figs,
        length_preference=length_preference(figures),
        requests=requests,
        command=command,
        date=datetime.date.today().isoformat(),
        version=__version__,
    )


def _pairs(items: Sequence[PairItem]):
    from alpagasus.compare.types import Pair

    return [Pair(TESTSET, it.key, it.question, it.answer_1, it.answer_2) for it in items]


def _check_pairs(
    items: Sequence[PairItem], template: Any, session: Session, opts: RunOptions, progress: ProgressFactory | None
) -> tuple:
    from alpagasus.compare.aggregate import judging_json, order_result, question_outcome
    from alpagasus.compare.pairwise import judge_pairs, stored_judgments

    pairs = _pairs(items)
    judging = judge_pairs(
        pairs, session.judge, session.store, template, opts, progress=progress, label="judge-check, both orders"
    )
    by_q: dict[str, dict] = defaultdict(dict)
    for j in stored_judgments(pairs, session.store, session.judge.id, template.version):
        by_q[j.question_id][j.order] = j
    verdicts: dict[str, str | None] = {}
    disagree: dict[str, bool] = {}
    for key, orders in by_q.items():
        outcome, _ = question_outcome(orders)
        verdicts[key] = {"win": "1", "lose": "2", "tie": "tie"}.get(outcome or "")
        if outcome is not None:
            disagree[key] = order_result(orders["ab"]) != order_result(orders["ba"])
    blind = bool(session.judge.order_blind)
    figures = pairwise_figures(items, verdicts, None if blind else disagree)
    base = {name: pairwise_figures(items, v) for name, v in pairwise_verdicts(items).items()}
    ref_figs = pairwise_figures(items, {it.key: it.reference for it in items})
    return figures, base, ref_figs, judging_json(judging) or {}


def _check_ratings(
    items: Sequence[RatingItem], template: Any, session: Session, opts: RunOptions, progress: ProgressFactory | None
) -> tuple:
    from alpagasus.rate.loop import rate

    summary = rate(
        [it.example for it in items], session.judge, template, session.store, opts, progress, total=len(items)
    )
    got = session.store.get_many([it.key for it in items], session.judge.id, template.version)
    scores = {k: r.score for k, r in got.items() if r.status == "ok"}
    run = summary.run
    requests = {
        "already_in_store": summary.already_rated,
        "sent": run.requests_sent,
        "ok": run.ok,
        "unparsed": run.unparsed,
        "error": run.error,
        "tokens_in": run.tokens_in,
        "tokens_out": run.tokens_out,
        "cost": run.cost,
        "seconds": round(run.elapsed_s, 2),
    }
    base = {name: rating_figures(items, s) for name, s in rating_scores(items).items()}
    return rating_figures(items, scores), base, requests


def _dry_run(items: Sequence[Any], ref: ReferenceSet, template: Any, session: Session, opts: RunOptions) -> dict:
    """What the run would send and cost; nothing is sent."""
    if ref.kind == "pairwise":
        from alpagasus.compare.pairwise import plan

        todo, done = plan(_pairs(items), template, session.store, session.judge.id, retry_unparsed=opts.retry_unparsed)
        tokens_in = sum(session.judge.count_tokens(it.request.system + it.request.user) + 8 for it in todo)
        tokens_out = len(todo) * min(opts.max_tokens, 200)
        est = {
            "requests": len(todo),
            "tokens_in": tokens_in,
            "tokens_out_estimate": tokens_out,
            "cost": opts.cost(tokens_in, tokens_out),
        }
    else:
        from alpagasus.rate.loop import Pending, estimate

        pending = Pending(session.store, session.judge.id, template.version, opts.retry_unparsed)
        est = estimate(
            pending([it.example for it in items]), template, session.judge.mode, session.judge.count_tokens, opts
        )
        done = pending.already
    return {
        "judge": session.judge.id,
        "kind": ref.kind,
        "reference": ref.files,
        "items": len(items),
        "already_in_store": done,
        **est,
    }
