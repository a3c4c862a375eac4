"""Pairwise comparison of two models, as the AlpaGasus paper does it: an LLM judge scores both answers to
each question (1-10) twice, once with each model as Assistant 1, and the two verdicts are combined.

Per order the higher score wins (equal: tie). From model A's side, win = won both orders or won one and tied
one; tie = tied both or won one and lost one; lose = the mirror of win. Winning score = (#win - #lose) /
#judged + 1, so 1.0 is even. A question with an unparsable (or failed) order has no outcome: it is counted in
`unparsed` (or `failed`), never as a silent tie, and left out of the winning score.

Judging reuses the rating engine (`rate.run_requests`) and the store: a judgment's item id hashes the question
and the two answers in the order the judge saw them, so no prompt is ever paid for twice, whichever model is
called A in a later run.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from alpagasus.compare.inputs import AnswerRow, ReviewRow, norm_text
from alpagasus.judges.base import Judge, JudgeError
from alpagasus.prompts import Template, load_template
from alpagasus.prompts.parse import parse_pair, parse_pair_reply
from alpagasus.engine import run_sync
from alpagasus.rate.loop import Item, RateOptions, RateSummary, reject_too_long, run_requests
from alpagasus.records import Judgment, Request, content_id
from alpagasus.store import FINAL, Store

ORDERS = ("ab", "ba")
POINTS = {"win": 1, "tie": 0, "lose": -1}


@dataclass
class Pair:
    """One question both models answered."""
    testset: str
    question_id: str
    question: str
    answer_a: str
    answer_b: str
    skill: str | None = None

    def answers(self, order: str) -> tuple[str, str]:
        """(Assistant 1's answer, Assistant 2's) in this order."""
        return (self.answer_a, self.answer_b) if order == "ab" else (self.answer_b, self.answer_a)

    def item_id(self, order: str) -> str:
        return content_id(self.question, *self.answers(order))


@dataclass
class Mismatch:
    testset: str
    question_id: str
    reason: str

    def __str__(self) -> str:
        return f"{self.testset}/{self.question_id}: {self.reason}"


@dataclass
class CompareResult:
    model_a: str
    model_b: str
    judge: str
    prompt_version: str
    pairs: list[Pair]
    judgments: list[Judgment]
    summary: dict                                      # aggregate(): per test set and "all"
    mismatches: list[Mismatch] = field(default_factory=list)
    run: RateSummary | None = None                     # requests sent, tokens, cost (None: re-aggregated)


def match(answers_a: Sequence[AnswerRow], answers_b: Sequence[AnswerRow],
          limit: int | None = None) -> tuple[list[Pair], list[Mismatch]]:
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
        if b is None:
            mismatches.append(Mismatch(a.testset, a.question_id, f"only in the answers of {a.model} ({a.source})"))
            continue
        if norm_text(a.question) != norm_text(b.question):
            mismatches.append(_text_mismatch(a, b))
            continue
        if limit is not None and per_set[a.testset] >= limit:
            continue
        per_set[a.testset] += 1
        pairs.append(Pair(a.testset, a.question_id, a.question, a.answer, b.answer, a.skill or b.skill))
    for b in answers_b:
        if b.key not in seen:
            mismatches.append(Mismatch(b.testset, b.question_id, f"only in the answers of {b.model} ({b.source})"))
    return pairs, mismatches


def _text_mismatch(x: AnswerRow | ReviewRow, y: AnswerRow | ReviewRow) -> Mismatch:
    """The same question id with different texts in two files: reported, not judged."""
    return Mismatch(x.testset, x.question_id, f"different question texts: {x.source} has "
                                              f"{_short(x.question)!r}, {y.source} has {_short(y.question)!r}")


def _short(text: str, n: int = 60) -> str:
    t = norm_text(text)
    return t if len(t) <= n else t[:n - 3] + "..."


# ---- judging ----------------------------------------------------------------------------------------------
def plan(pairs: Sequence[Pair], template: Template, store: Store, judge_id: str, orders: Sequence[str] = ORDERS,
         retry_unparsed: bool = False, max_tokens: int = 256) -> tuple[list[Item], int]:
    """The judge requests still to send (one per distinct prompt) and how many are in the store already."""
    items: dict[str, Item] = {}
    for p in pairs:
        for order in orders:
            key = p.item_id(order)
            if key not in items:
                a1, a2 = p.answers(order)
                user = template.render({"question": p.question, "answer_1": a1, "answer_2": a2})
                items[key] = Item(key, Request(key=key, system=template.system, user=user, max_tokens=max_tokens))
    final = tuple(s for s in FINAL if not (retry_unparsed and s == "unparsed"))
    done = store.done_ids(judge_id, template.version, items, final=final)
    return [it for k, it in items.items() if k not in done], len(done)


def judge_pairs(pairs: Sequence[Pair], judge: Judge, store: Store, template: Template,
                options: RateOptions | None = None, orders: Sequence[str] = ORDERS,
                progress: Callable[[RateSummary], None] | None = None) -> RateSummary:
    """Send every judgment not yet in the store; each reply is committed as it settles. The judge is loaded
    only when something is left to ask."""
    opts = options or RateOptions()
    if judge.mode != "generate":
        raise JudgeError(f"{judge.id}: pairwise judging needs a judge that writes its review (mode generate)")
    s = RateSummary(judge=judge.id, prompt_version=template.version)
    todo, s.already_rated = plan(pairs, template, store, judge.id, orders, opts.retry_unparsed, opts.max_tokens)
    s.unique = s.to_rate = len(todo)
    s.unique += s.already_rated
    if not todo:
        return s
    judge.load()
    todo = reject_too_long(todo, judge, store, s, template.version)
    parse = lambda text: parse_pair_reply(text, *template.scale)  # noqa: E731
    return run_sync(run_requests(todo, judge, store, template.version, parse, template.scale, opts, s, progress), judge)


def collect(pairs: Sequence[Pair], store: Store, judge_id: str, prompt_version: str,
            orders: Sequence[str] = ORDERS) -> list[Judgment]:
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
            out.append(Judgment(p.testset, p.question_id, order, r.score, s2, r.status,
                                r.raw if r.raw is not None else r.explanation, judge_id))
    return out


def compare(answers_a: Sequence[AnswerRow], answers_b: Sequence[AnswerRow], judge: Judge, store: Store,
            template: Template | None = None, options: RateOptions | None = None, limit: int | None = None,
            progress: Callable[[RateSummary], None] | None = None) -> CompareResult:
    """Match the two models' answers, judge every question in both orders, aggregate. The caller holds the
    store (`with store.exclusive(): ...`) when other runs may share it."""
    template = template or load_template("pairwise")
    pairs, mismatches = match(answers_a, answers_b, limit)
    run = judge_pairs(pairs, judge, store, template, options, ORDERS, progress)
    judgments = collect(pairs, store, judge.id, template.version)
    model_a = answers_a[0].model if answers_a else "A"
    model_b = answers_b[0].model if answers_b else "B"
    return CompareResult(model_a, model_b, judge.id, template.version, pairs, judgments,
                         aggregate(judgments, pairs), mismatches, run)


def reaggregate(reviews_ab: Sequence[ReviewRow], reviews_ba: Sequence[ReviewRow], model_a: str, model_b: str,
                judge: str = "external", scale: tuple[float, float] = (1, 10)) -> CompareResult:
    """Win/tie/lose from reviews made elsewhere (the official AlpaGasus format): in `reviews_ab` model A was
    Assistant 1, in `reviews_ba` model B. Scores are parsed from each raw review."""
    by_key = {r.key: r for r in reviews_ba}
    pairs: list[Pair] = []
    judgments: list[Judgment] = []
    mismatches: list[Mismatch] = []
    for ab in reviews_ab:
        ba = by_key.pop(ab.key, None)
        if ba is None:
            mismatches.append(Mismatch(ab.testset, ab.question_id, f"no review with {model_b} first ({ab.source})"))
            continue
        if norm_text(ab.question) != norm_text(ba.question):
            mismatches.append(_text_mismatch(ab, ba))
            continue
        pairs.append(Pair(ab.testset, ab.question_id, ab.question, ab.answer_1, ab.answer_2))
        for order, rev in (("ab", ab), ("ba", ba)):
            scores, reason = parse_pair(rev.review, *scale)
            status = "ok" if scores else "unparsed"
            judgments.append(Judgment(ab.testset, ab.question_id, order, scores[0] if scores else None,
                                      scores[1] if scores else None, status, rev.review, judge))
    for ba in by_key.values():
        mismatches.append(Mismatch(ba.testset, ba.question_id, f"no review with {model_a} first ({ba.source})"))
    return CompareResult(model_a, model_b, judge, "external", pairs, judgments, aggregate(judgments, pairs),
                         mismatches)


# ---- aggregation ------------------------------------------------------------------------------------------
def order_result(j: Judgment) -> str | None:
    """win / tie / lose for model A in one order; None when the order has no verdict."""
    if j.status != "ok" or j.score_1 is None or j.score_2 is None:
        return None
    a, b = (j.score_1, j.score_2) if j.order == "ab" else (j.score_2, j.score_1)
    return "win" if a > b else "lose" if a < b else "tie"


def combine(result_ab: str, result_ba: str) -> str:
    """The paper's rule: both orders' points (win 1, tie 0, lose -1) summed; the sign decides."""
    total = POINTS[result_ab] + POINTS[result_ba]
    return "win" if total > 0 else "lose" if total < 0 else "tie"


def question_outcome(by_order: dict[str, Judgment]) -> tuple[str | None, str]:
    """(outcome, status): outcome win/tie/lose when both orders have a verdict; else None with the reason
    (`unparsed` when an order's reply had no scores, `failed` for errors, too-long prompts, missing replies)."""
    results = {o: order_result(by_order[o]) if o in by_order else None for o in ORDERS}
    if results["ab"] is not None and results["ba"] is not None:
        return combine(results["ab"], results["ba"]), "ok"
    statuses = {by_order[o].status for o in ORDERS if o in by_order}
    return None, "unparsed" if "unparsed" in statuses else "failed"


def aggregate(judgments: Iterable[Judgment], pairs: Sequence[Pair] | None = None) -> dict:
    """Counts and rates per test set and for "all". With `pairs`, answer lengths and the length bias too."""
    grouped: dict[tuple[str, str], dict[str, Judgment]] = defaultdict(dict)
    for j in judgments:
        grouped[(j.testset, j.question_id)][j.order] = j
    keys = [(p.testset, p.question_id) for p in pairs] if pairs is not None else list(grouped)
    pair_of = {(p.testset, p.question_id): p for p in pairs or ()}
    groups: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for k in keys:
        groups[k[0]].append(k)
    out = {ts: _stats(ks, grouped, pair_of) for ts, ks in groups.items()}
    out["all"] = _stats(keys, grouped, pair_of)
    return out


def _stats(keys: list[tuple[str, str]], grouped: dict, pair_of: dict[tuple[str, str], Pair]) -> dict:
    c = {"win": 0, "tie": 0, "lose": 0, "unparsed": 0, "failed": 0}
    disagree = first_wins = decisive = longer_wins = length_decisive = 0
    for k in keys:
        by_order = grouped.get(k, {})
        outcome, status = question_outcome(by_order)
        c[outcome or status] += 1
        if outcome is not None:
            disagree += order_result(by_order["ab"]) != order_result(by_order["ba"])
        for j in by_order.values():
            res = order_result(j)
            if res in ("win", "lose"):
                decisive += 1
                first_wins += (res == "win") == (j.order == "ab")  # Assistant 1 won this order
                p = pair_of.get(k)
                if p is not None and len(p.answer_a) != len(p.answer_b):
                    length_decisive += 1
                    longer_wins += (res == "win") == (len(p.answer_a) > len(p.answer_b))
    judged = c["win"] + c["tie"] + c["lose"]
    stats: dict = {"questions": len(keys), "judged": judged, **c,
                   "winning_score": (c["win"] - c["lose"]) / judged + 1 if judged else None,
                   "disagreement": disagree / judged if judged else None,
                   "assistant_1_wins": first_wins / decisive if decisive else None}
    pairs = [pair_of[k] for k in keys if k in pair_of]
    if pairs:
        stats.update({"longer_answer_wins": longer_wins / length_decisive if length_decisive else None,
                      "mean_chars_a": _mean(len(p.answer_a) for p in pairs),
                      "mean_chars_b": _mean(len(p.answer_b) for p in pairs),
                      "mean_words_a": _mean(len(p.answer_a.split()) for p in pairs),
                      "mean_words_b": _mean(len(p.answer_b.split()) for p in pairs)})
    return stats


def _mean(values: Iterable[int]) -> float | None:
    v = list(values)
    return round(sum(v) / len(v), 1) if v else None


def outcome_rows(result: CompareResult) -> Iterable[dict]:
    """outcomes.jsonl: one row per question and order, with both scores, the raw review and the outcome."""
    by_q: dict[tuple[str, str], dict[str, Judgment]] = defaultdict(dict)
    for j in result.judgments:
        by_q[(j.testset, j.question_id)][j.order] = j
    for p in result.pairs:
        by_order = by_q.get((p.testset, p.question_id), {})
        outcome, status = question_outcome(by_order)
        for order in ORDERS:
            j = by_order.get(order)
            names = (result.model_a, result.model_b) if order == "ab" else (result.model_b, result.model_a)
            s1, s2 = (j.score_1, j.score_2) if j else (None, None)
            yield {"testset": p.testset, "question_id": p.question_id, "order": order,
                   "assistant_1": names[0], "assistant_2": names[1], "score_1": s1, "score_2": s2,
                   "score_a": s1 if order == "ab" else s2, "score_b": s2 if order == "ab" else s1,
                   "order_result": order_result(j) if j else None, "status": j.status if j else "missing",
                   "outcome": outcome, "question_status": status, "skill": p.skill,
                   "item_id": p.item_id(order), "review": j.raw if j else None}


def run_json(run: RateSummary | None) -> dict | None:
    """What a judging run cost: requests found in the store, sent, settled by status, tokens, seconds."""
    if run is None:
        return None
    return {"already_in_store": run.already_rated, "sent": run.requests_sent, "ok": run.ok,
            "unparsed": run.unparsed, "invalid_input": run.invalid_input, "error": run.error,
            "tokens_in": run.tokens_in, "tokens_out": run.tokens_out, "cost": run.cost,
            "seconds": round(run.elapsed_s, 2)}


def summary_json(result: CompareResult, inputs: dict | None = None) -> dict:
    """summary.json: the models, the judge and prompt version, results per test set and "all"."""
    return {"model_a": result.model_a, "model_b": result.model_b, "judge": result.judge,
            "prompt_version": result.prompt_version, "orders": list(ORDERS), "inputs": inputs or {},
            "results": result.summary, "mismatches": [str(m) for m in result.mismatches],
            "requests": run_json(result.run)}
