"""From judgments to outcomes, as the AlpaGasus paper combines them: per order the higher score wins (equal:
tie); from model A's side, win = won both orders or won one and tied one; tie = tied both or won one and lost
one; lose = the mirror of win. Winning score = (#win - #lose) / #judged + 1, so 1.0 is even. A question with
an unparsable (or failed) order has no outcome: it is counted in `unparsed` (or `failed`), never as a silent
tie, and left out of the winning score. Also the rows and summary written to files."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict
from typing import Iterable, Sequence

from alpagasus.compare.interval import LEVEL, RESAMPLES, SEED, bootstrap_interval, noise_sentence, winning_score
from alpagasus.compare.types import ORDERS, CompareResult, Judging, Pair
from alpagasus.records import Judgment

POINTS = {"win": 1, "tie": 0, "lose": -1}
POSITION_BIAS_NOTE = (
    "not measurable with this judge: its verdict cannot depend on the order (it scores each answer alone, "
    "or averages both orders), so both orders give the same verdict (disagreement 0 and Assistant 1's win "
    "rate say nothing about position)"
)
LEVEL_PCT = round(LEVEL * 100)


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
    points: list[int] = []  # per judged question, for the bootstrap interval (interval.py)
    lengths: list[tuple[int, int]] = []  # the judged questions' answer lengths, for the length control (lc.py)
    for k in keys:
        by_order = grouped.get(k, {})
        outcome, status = question_outcome(by_order)
        c[outcome or status] += 1
        if outcome is not None:
            points.append(POINTS[outcome])
            if k in pair_of:
                lengths.append((len(pair_of[k].answer_a), len(pair_of[k].answer_b)))
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
    stats: dict = {
        "questions": len(keys),
        "judged": judged,
        **c,
        "winning_score": winning_score(points),  # the judged questions' points: win 1, tie 0, lose -1
        "disagreement": disagree / judged if judged else None,
        "assistant_1_wins": first_wins / decisive if decisive else None,
    }
    ci = bootstrap_interval(points)
    stats.update(
        {"winning_score_ci": list(ci) if ci else None, "noise": noise_sentence(stats["winning_score"], ci, n=judged)}
    )
    pairs = [pair_of[k] for k in keys if k in pair_of]
    if pairs:
        stats.update(
            {
                "longer_answer_wins": longer_wins / length_decisive if length_decisive else None,
                "mean_chars_a": _mean(len(p.answer_a) for p in pairs),
                "mean_chars_b": _mean(len(p.answer_b) for p in pairs),
                "mean_words_a": _mean(len(p.answer_a.split()) for p in pairs),
                "mean_words_b": _mean(len(p.answer_b.split()) for p in pairs),
                "length_controlled": length_controlled(points, lengths),
            }
        )
    return stats


def length_controlled(points: Sequence[int], lengths: Sequence[tuple[int, int]]) -> dict | None:
    """The winning score at zero length difference and its interval (compare/lc.py) as summary.json holds it;
    None without numpy (the `lc` extra) or without the judged questions' answers."""
    if len(lengths) != len(points):
        return None
    from alpagasus.compare.lc import lc_winning_score, points_to_outcomes

    try:
        lc = lc_winning_score(points_to_outcomes(points), [a for a, _ in lengths], [b for _, b in lengths])
    except ImportError:  # numpy is not in the core install (the `lc` extra)
        return None
    return asdict(lc)


def _mean(values: Iterable[int]) -> float | None:
    v = list(values)
    return round(sum(v) / len(v), 1) if v else None


def outcome_rows(result: CompareResult) -> Iterable[dict]:
    """outcomes.jsonl: one row per question and order, with both scores, the raw review and the outcome."""
    by_q: dict[tuple[str, str], dict[str, Judgment]] = defaultdict(dict)
    for judged in result.judgments:
        by_q[(judged.testset, judged.question_id)][judged.order] = judged
    for p in result.pairs:
        by_order = by_q.get((p.testset, p.question_id), {})
        outcome, status = question_outcome(by_order)
        for order in ORDERS:
            j = by_order.get(order)
            names = (result.model_a, result.model_b) if order == "ab" else (result.model_b, result.model_a)
            s1, s2 = (j.score_1, j.score_2) if j else (None, None)
            yield {
                "testset": p.testset,
                "question_id": p.question_id,
                "order": order,
                "assistant_1": names[0],
                "assistant_2": names[1],
                "score_1": s1,
                "score_2": s2,
                "score_a": s1 if order == "ab" else s2,
                "score_b": s2 if order == "ab" else s1,
                "order_result": order_result(j) if j else None,
                "status": j.status if j else "missing",
                "outcome": outcome,
                "question_status": status,
                "skill": p.skill,
                "item_id": p.item_id(order),
                "review": j.raw if j else None,
            }


def judging_json(judging: Judging | None) -> dict | None:
    """What a judging run cost: requests found in the store, sent, settled by status, tokens, seconds."""
    if judging is None:
        return None
    run = judging.run
    return {
        "already_in_store": judging.already_in_store,
        "sent": run.requests_sent,
        "ok": run.ok,
        "unparsed": run.unparsed,
        "invalid_input": run.invalid_input,
        "error": run.error,
        "tokens_in": run.tokens_in,
        "tokens_out": run.tokens_out,
        "cost": run.cost,
        "seconds": round(run.elapsed_s, 2),
    }


def _named(result: CompareResult) -> dict:
    """The summary's results with the noise sentences naming the two models instead of A and B."""
    return {
        ts: {
            **r,
            "noise": noise_sentence(
                r.get("winning_score"), r.get("winning_score_ci"), result.model_a, result.model_b, r.get("judged")
            ),
        }
        if "noise" in r
        else r
        for ts, r in result.summary.items()
    }


def summary_json(result: CompareResult, inputs: dict | None = None) -> dict:
    """summary.json: the models, the judge and prompt version, results per test set and "all"."""
    return {
        "model_a": result.model_a,
        "model_b": result.model_b,
        "judge": result.judge,
        "prompt_version": result.prompt_version,
        "orders": list(ORDERS),
        "inputs": inputs or {},
        "results": _named(result),
        "mismatches": [str(m) for m in result.mismatches],
        "requests": judging_json(result.judging),
        **({"position_bias": POSITION_BIAS_NOTE} if result.order_blind else {}),
        "interval": f"winning_score_ci: {LEVEL_PCT}% percentile bootstrap over judged questions "
        f"({RESAMPLES} resamples, seed {SEED}); docs/compare.md",
    }
