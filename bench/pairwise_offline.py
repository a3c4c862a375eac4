"""The offline pairwise judge (`compare` with no --judge) on real answers: AlpaGasus2 vs Alpaca2 on Vicuna,
Koala and Self-Instruct (512 questions, both orders).

    python bench/pairwise_offline.py [--limit N] [--other pointwise:alpaca-claude-accuracy]

Prints: wall and CPU seconds of judging (the encoder's load included), the verdict distribution per test set,
the winning score with its 95% bootstrap interval, the agreement of the two orders, and agreement with other
offline signals on the same questions (the other predictor as a pointwise judge with the same tie rule;
"the longer answer wins"). GPT-4's reviews of these answers are not in the data: agreement with GPT-4 cannot be
measured here. The last line is one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ALPAGASUS_SHARED_DATA", REPO.parent / "shared" / "data"))
FILES = [SHARED / "responses" / f"{t}_alpagasus2_vs_alpaca2.json" for t in ("vicuna", "koala", "sinstruct")]


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run(judge: str | None, limit: int | None, out: Path) -> tuple[dict, dict, float, float]:
    """compare_files as the CLI calls it; (summary, outcome per question, wall s, CPU s)."""
    from alpagasus.compare.files import compare_files

    t0, c0 = time.perf_counter(), cpu_s()
    rep = compare_files(FILES, out, judge=judge, model_a="alpagasus2", model_b="alpaca2",
                        store_path=out.parent / f"{out.name}.db", limit=limit)
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    rows = [json.loads(line) for line in (out / "outcomes.jsonl").read_text().splitlines()]
    per_q = {(r["testset"], r["question_id"]): r["outcome"] for r in rows if r["order"] == "ab"}
    rep.summary["orders_agree"] = _orders_agree(rows)
    return rep.summary, per_q, wall, cpu


def _orders_agree(rows: list[dict]) -> float:
    by_q: dict = {}
    for r in rows:
        by_q.setdefault((r["testset"], r["question_id"]), {})[r["order"]] = r["order_result"]
    return sum(q.get("ab") == q.get("ba") for q in by_q.values()) / len(by_q)


def longer_wins(limit: int | None) -> dict:
    """Outcome per question when the longer answer (in characters) wins; equal lengths tie."""
    from alpagasus.compare.files import load_answers
    from alpagasus.compare.pairwise import match

    pairs, _ = match(*load_answers(FILES, "alpagasus2", "alpaca2"), limit)
    return {(p.testset, p.question_id): "win" if len(p.answer_a) > len(p.answer_b) else
            "lose" if len(p.answer_a) < len(p.answer_b) else "tie" for p in pairs}


def agreement(a: dict, b: dict) -> dict:
    keys = [k for k in a if a[k] is not None and b.get(k) is not None]
    decided = [k for k in keys if b[k] != "tie"]
    both = [k for k in decided if a[k] != "tie"]
    share = lambda ks: round(sum(a[k] == b[k] for k in ks) / len(ks), 3) if ks else None  # noqa: E731
    return {"questions": len(keys), "three_way": share(keys), "on_decided_by_other": share(decided),
            "both_decided": len(both), "same_winner_where_both_decided": share(both)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=None, help="questions per test set (default: all 512)")
    ap.add_argument("--other", default="pointwise:alpaca-claude-accuracy", help="another offline judge to compare")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        summary, mine, wall, cpu = run(None, args.limit, Path(tmp) / "default")
        other_summary, other, *_ = run(args.other, args.limit, Path(tmp) / "other")
    res = summary["results"]
    print(f"judge {summary['judge']}: {len(mine)} questions, {summary['requests']['sent']} judgments, "
          f"{wall:.0f} s wall, {cpu:.0f} s CPU (load average {os.getloadavg()[0]:.1f}); "
          f"orders agree on {summary['orders_agree']:.0%}")
    for ts, r in res.items():
        n = r["questions"]
        print(f"  {ts:10s} n={n:3d} win {r['win'] / n:.0%} tie {r['tie'] / n:.0%} lose {r['lose'] / n:.0%} "
              f"unparsed {r['unparsed']}  WS {r['winning_score']:.3f} [{r['winning_score_ci'][0]:.3f}, "
              f"{r['winning_score_ci'][1]:.3f}]")
    figures = {"judge": summary["judge"], "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
               "load_average": round(os.getloadavg()[0], 1), "orders_agree": summary["orders_agree"],
               "results": {ts: {k: r[k] for k in ("questions", "win", "tie", "lose", "unparsed", "winning_score",
                                                   "winning_score_ci", "longer_answer_wins")}
                           for ts, r in res.items()},
               "agreement": {other_summary["judge"]: agreement(mine, other),
                             "longer answer wins": agreement(mine, longer_wins(args.limit))},
               "other_results_all": {k: other_summary["results"]["all"][k] for k in ("win", "tie", "lose")}}
    for name, a in figures["agreement"].items():
        print(f"  agreement with {name}: {a['three_way']:.0%} three-way, {a['on_decided_by_other']:.0%} where it "
              f"decided, the same winner on {a['same_winner_where_both_decided']:.0%} of the {a['both_decided']} "
              "questions both decided")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
