"""Pairwise comparison of two models, as the AlpaGasus paper does it: an LLM judge scores both answers to
each question (1-10) twice, once with each model as Assistant 1, and the two verdicts are combined.

Matching the two models' answers, judging each question in both orders, and re-aggregating reviews made
elsewhere; how verdicts combine is in aggregate.py. Judging runs on the engine shared with rating
(alpagasus.engine) and the same store: a judgment's item id hashes the question
and the two answers in the order the judge saw them, so no prompt is ever paid for twice, whichever model is
called A in a later run.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from alpagasus.compare.aggregate import aggregate
from alpagasus.compare.inputs import AnswerRow, ReviewRow, norm_text
from alpagasus.compare.types import ORDERS, CompareResult, Judging, Mismatch, Pair
from alpagasus.engine.loop import ProgressFactory, run_items, run_sync
from alpagasus.engine.types import Item, RunOptions, final_statuses
from alpagasus.judges.base import Judge, JudgeError
from alpagasus.prompts.parse import parse_pair
from alpagasus.prompts.rubric import Rubric
from alpagasus.prompts.template import Template, load_template
from alpagasus.records import Judgment, Request
from alpagasus.store import Store


def match(
    answers_a: Sequence[AnswerRow], answers_b: Sequence[AnswerRow], limit: int | None = None
) -> tuple[list[Pair], list[Mismatch]]:
    """Questions answered by both, matched by test set and id, in A's order. A question in one file only, or
    asked in different words, is reported and not judged. `limit`: the first N per test set."""
    by_key = {b.key: b for b in answers_b}
    pairs: list[Pair] = []
    mismatches: list[Mismatch] = []
    per_set: dict[str, int] = defaultdict(int)
    seen: set[tuple[str, str]] = set()
    for a in answers_a:
        seen.add(a.key)
        b = by_key.get(a.key)
        bad = _unmatched(a, b, f"only in the answers of {a.model} ({a.source})")
        if bad is not None or b is None:  # (b is None only with a mismatch)
            mismatches.extend([bad] if bad else [])
            continue
        if limit is not None and per_set[a.testset] >= limit:
            continue
        per_set[a.testset] += 1
        pairs.append(Pair(a.testset, a.question_id, a.question, a.answer, b.answer, a.skill or b.skill))
    for b in answers_b:
        if b.key not in seen:
            mismatches.append(Mismatch(b.testset, b.question_id, f"only in the answers of {b.model} ({b.source})"))
    return pairs, mismatches


def _unmatched(x: AnswerRow | ReviewRow, y: AnswerRow | ReviewRow | None, missing: str) -> Mismatch | None:
    """Why row x has no counterpart to be judged with (`missing` when y is None, or the same question id with
    different texts in the two files), or None when y is its counterpart."""
    if y is None:
        return Mismatch(x.testset, x.question_id, missing)
    if norm_text(x.question) != norm_text(y.question):
        return Mismatch(
            x.testset,
            x.question_id,
            f"different question texts: {x.source} has {_short(x.question)!r}, {y.source} has {_short(y.question)!r}",
        )
    return None


def _short(text: str, n: int = 60) -> str:
    t = norm_text(text)
    return t if len(t) <= n else t[: n - 3] + "..."


# ---- judging ----------------------------------------------------------------------------------------------
def plan(
    pairs: Sequence[Pair],
    template: Template,
    store: Store,
    judge_id: str,
    orders: Sequence[str] = ORDERS,
    retry_unparsed: bool = False,
) -> tuple[list[Item], int]:
    """The judge requests still to send (one per distinct prompt) and how many are in the store already."""
    items: dict[str, Item] = {}
    for p in pairs:
        for order in orders:
            key = p.item_id(order)
            if key not in items:
                a1, a2 = p.answers(order)
                fields = {"question": p.question, "answer_1": a1, "answer_2": a2}
                user = template.render(fields)
                items[key] = Item(key, Request(key=key, system=template.system, user=user, fields=fields))
    done = store.done_ids(judge_id, template.version, items, final=final_statuses(retry_unparsed))
    return [it for k, it in items.items() if k not in done], len(done)


def judge_pairs(
    pairs: Sequence[Pair],
    judge: Judge,
    store: Store,
    template: Template,
    options: RunOptions | None = None,
    orders: Sequence[str] = ORDERS,
    progress: ProgressFactory | None = None,
    label: str = "judging both orders",
) -> Judging:
    """Send every judgment not yet in the store; each reply is committed as it settles. The judge is loaded
    only when something is left to ask; `progress(label, requests left)` is called then."""
    opts = options or RunOptions()
    if judge.mode != "generate" and not judge.pair_scores:
        raise JudgeError(
            f"{judge.id}: pairwise judging needs a judge that writes its review (mode generate) or gives two "
            "scores (pair_scores)"
        )
    todo, already = plan(pairs, template, store, judge.id, orders, opts.retry_unparsed)
    judging = Judging(already_in_store=already)
    judging.run.judge, judging.run.prompt_version = judge.id, template.version
    if todo:
        judge.load()
        update = progress(label, len(todo)) if progress else None
        if opts.batch:  # the provider's Batch API (engine/batch.py): same requests and parsing, batch price
            from alpagasus.engine.batch import run_batch

            judging.run = run_sync(run_batch(todo, judge, store, Rubric.pairwise(template), opts, update), judge)
        else:
            judging.run = run_sync(run_items(todo, judge, store, Rubric.pairwise(template), opts, update), judge)
    return judging


def stored_judgments(
    pairs: Sequence[Pair], store: Store, judge_id: str, prompt_version: str, orders: Sequence[str] = ORDERS
) -> list[Judgment]:
    """The judgments of `pairs` as the store holds them (status `missing` where a run was cut short)."""
    got = store.get_many({p.item_id(o) for p in pairs for o in orders}, judge_id, prompt_version)
    out: list[Judgment] = []
    for p in pairs:
        for order in orders:
            r = got.get(p.item_id(order))
            if r is None:
                out.append(Judgment(p.testset, p.question_id, order, None, None, "missing", None, judge_id))
                continue
            s2 = (r.extra or {}).get("score_2") if r.status == "ok" else None
            out.append(
                Judgment(
                    p.testset,
                    p.question_id,
                    order,
                    r.score,
                    s2,
                    r.status,
                    r.raw if r.raw is not None else r.explanation,
                    judge_id,
                )
            )
    return out


def compare(
    answers_a: Sequence[AnswerRow],
    answers_b: Sequence[AnswerRow],
    judge: Judge,
    store: Store,
    template: Template | None = None,
    options: RunOptions | None = None,
    limit: int | None = None,
    progress: ProgressFactory | None = None,
) -> CompareResult:
    """Match the two models' answers, judge every question in both orders, aggregate. The caller holds the
    store (`with store.exclusive(): ...`) when other runs may share it."""
    template = template or load_template("pairwise")
    pairs, mismatches = match(answers_a, answers_b, limit)
    judging = judge_pairs(pairs, judge, store, template, options, ORDERS, progress)
    judgments = stored_judgments(pairs, store, judge.id, template.version)
    model_a = answers_a[0].model if answers_a else "A"
    model_b = answers_b[0].model if answers_b else "B"
    return CompareResult(
        model_a,
        model_b,
        judge.id,
        template.version,
        pairs,
        judgments,
        aggregate(judgments, pairs),
        mismatches,
        judging,
        order_blind=judge.order_blind,
    )


def reaggregate(
    reviews_ab: Sequence[ReviewRow],
    reviews_ba: Sequence[ReviewRow],
    model_a: str,
    model_b: str,
    judge: str = "external",
    scale: tuple[float, float] = (1, 10),
) -> CompareResult:
    """Win/tie/lose from reviews made elsewhere (the official AlpaGasus format): in `reviews_ab` model A was
    Assistant 1, in `reviews_ba` model B. Scores are parsed from each raw review."""
    by_key = {r.key: r for r in reviews_ba}
    pairs: list[Pair] = []
    judgments: list[Judgment] = []
    mismatches: list[Mismatch] = []
    for ab in reviews_ab:
        ba = by_key.pop(ab.key, None)
        bad = _unmatched(ab, ba, f"no review with {model_b} first ({ab.source})")
        if bad is not None or ba is None:  # (ba is None only with a mismatch)
            mismatches.extend([bad] if bad else [])
            continue
        pairs.append(Pair(ab.testset, ab.question_id, ab.question, ab.answer_1, ab.answer_2))
        for order, rev in (("ab", ab), ("ba", ba)):
            scores, reason = parse_pair(rev.review, *scale)
            status = "ok" if scores else "unparsed"
            judgments.append(
                Judgment(
                    ab.testset,
                    ab.question_id,
                    order,
                    scores[0] if scores else None,
                    scores[1] if scores else None,
                    status,
                    rev.review,
                    judge,
                )
            )
    for ba in by_key.values():
        mismatches.append(Mismatch(ba.testset, ba.question_id, f"no review with {model_a} first ({ba.source})"))
    return CompareResult(model_a, model_b, judge, "external", pairs, judgments, aggregate(judgments, pairs), mismatches)
