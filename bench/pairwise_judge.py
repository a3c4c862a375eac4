"""The free pairwise judge (`pairwise:alpacaeval-gpt4`, judges/pairwise_model.py) measured on what it was not
trained on, beside the trivial judges and today's offline default, and timed on the AlpaGasus answers.

    python bench/pairwise_judge.py [--retrain --cache /tmp/pairwise_cache] [--default-n 400] [--skip-timing]
        [--reviews-ab F... --reviews-ba F...]

1. Held-out figures, GPT-4's AlpacaEval dev verdicts: (a) cross-fitted over 4 folds, each pair predicted by
   trees that saw neither its judged model nor its question (36 models); (b) the shipped judge on the cell it
   never saw (fold 0's models AND questions). From the shipped card, or recomputed (`--retrain`: trains again
   into a temporary folder, about 20 CPU-minutes with the embedding cache). Beside them: longer wins, shorter
   wins, always first, coin on the same pairs.
2. Today's default (`pointwise:alpaca-chatgpt-helpfulness`) and the shipped judge on the same `--default-n`
   pairs of that cell (seeded), so the two are compared on the same items.
3. AlpaGasus2 vs Alpaca2 (../shared/data/responses, 512 questions, both orders): `compare` with the judge on a
   fresh store, wall and CPU seconds, win/tie/lose, agreement with the longer-answer rule. GPT-4's reviews of
   these answers are not in the shared data; give them with --reviews-ab/--reviews-ba (official AlpaGasus
   review files, one per test set, in the same order) to measure agreement at each of --tie-bands.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ALPAGASUS_SHARED_DATA", REPO.parent / "shared" / "data"))
GPT4 = SHARED / "preferences" / "alpaca_eval_alpaca_eval_gpt4_dev.jsonl.gz"
RESPONSES = [SHARED / "responses" / f"{t}_alpagasus2_vs_alpaca2.json" for t in ("vicuna", "koala", "sinstruct")]
JUDGE, DEFAULT = "pairwise:alpacaeval-gpt4", "pointwise:alpaca-chatgpt-helpfulness"
COLS = ("agreement", "agreement_decided", "ties", "prefers_longer", "spearman", "kendall")


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def row(name: str, f: dict) -> str:
    cells = " | ".join("-" if f.get(k) is None else f"{f[k]:.3f}" for k in COLS)
    return f"| {name} | {cells} |"


def table(title: str, figs: dict) -> None:
    print(
        f"\n{title}\n| judge | agree | agree dec. | ties | P(longer) | Spearman | Kendall |\n|---|---|---|---|---|---|---|"
    )
    print(row(f"{JUDGE} (tie band)", figs["judge"]))
    print(row(f"{JUDGE} (no ties)", figs["judge_no_ties"]))
    for name, f in figs["baselines"].items():
        print(row(name, f))
    print(f"Spearman of the mean P(answer 2) per model: {figs['spearman_soft']:.3f}")


def heldout_figures(retrain: bool, cache: str | None) -> dict:
    from alpagasus.judges.pairwise_model import PairModel

    if not retrain:
        return PairModel.load("alpacaeval-gpt4").card["figures"]
    from alpagasus.distill.pairwise import distill_pairwise

    with tempfile.TemporaryDirectory() as tmp:
        _, card = distill_pairwise([GPT4], Path(tmp) / "pairwise-alpacaeval-gpt4", cache=cache, log=print)
    return card["figures"]


def same_items(n: int, seed: int = 0) -> None:
    """Today's default and the shipped judge on the same n pairs of the held-out cell."""
    from alpagasus import judges
    from alpagasus.distill.pairwise import heldout_items, verdicts
    from alpagasus.judgecheck.metrics import pairwise_figures
    from alpagasus.judges.base import LocalJudge
    from alpagasus.judges.pairwise_model import PairModel, PairwiseModelJudge
    from alpagasus.records import Request

    sp = PairModel.load("alpacaeval-gpt4").card["split"]
    items = heldout_items([GPT4], sp["folds"], sp["seed"], sp["holdout_fold"])
    items = random.Random(seed).sample(items, min(n, len(items)))
    reqs = [
        Request(
            key=it.key,
            system="",
            user="",
            fields={"question": it.question, "answer_1": it.answer_1, "answer_2": it.answer_2},
        )
        for it in items
    ]
    mine = judges.get(JUDGE)
    assert isinstance(mine, PairwiseModelJudge)
    print(f"\nthe same {len(items)} held-out pairs (seed {seed}):")
    for name, judge in ((JUDGE, mine), (DEFAULT, judges.get(DEFAULT))):
        assert isinstance(judge, LocalJudge)
        t0 = time.perf_counter()
        pairs = [r.pair for r in judge.score_sync(reqs)]
        v = {
            it.key: "tie" if p is None or p.score_1 == p.score_2 else "1" if p.score_1 > p.score_2 else "2"
            for it, p in zip(items, pairs)
        }
        f = pairwise_figures(items, v)
        print(row(name, {k: getattr(f, k) for k in COLS}), f"({time.perf_counter() - t0:.0f} s)")
    no_ties = pairwise_figures(
        items, verdicts(items, mine.probabilities([(i.question, i.answer_1, i.answer_2) for i in items]), 0.0)
    )
    print(row(f"{JUDGE} (no ties)", {k: getattr(no_ties, k) for k in COLS}))


def timing(reviews_ab: list[str], reviews_ba: list[str], bands: list[float]) -> None:
    from alpagasus.compare.files import CompareReport, compare_files

    with tempfile.TemporaryDirectory() as tmp:
        t0, c0 = time.perf_counter(), cpu_s()
        rep = compare_files(
            RESPONSES,
            Path(tmp) / "cmp",
            judge=JUDGE,
            model_a="alpagasus2",
            model_b="alpaca2",
            store_path=Path(tmp) / "s.db",
        )
        wall, cpu = time.perf_counter() - t0, cpu_s() - c0
        assert isinstance(rep, CompareReport)
        rows = [json.loads(x) for x in (Path(tmp) / "cmp" / "outcomes.jsonl").read_text().splitlines()]
    mine = {(r["testset"], r["question_id"]): r["outcome"] for r in rows if r["order"] == "ab"}
    longer = {
        (p.testset, p.question_id): "win"
        if len(p.answer_a) > len(p.answer_b)
        else "lose"
        if len(p.answer_a) < len(p.answer_b)
        else "tie"
        for p in rep.result.pairs
    }
    res = rep.summary["results"]["all"]
    n = res["questions"]
    print(
        f"\nAlpaGasus2 vs Alpaca2, {n} questions in both orders with {rep.summary['judge']}: {wall:.0f} s wall, "
        f"{cpu:.0f} s CPU (load average {os.getloadavg()[0]:.1f}; encoder load included)"
    )
    print(
        f"  win {res['win'] / n:.1%} tie {res['tie'] / n:.1%} lose {res['lose'] / n:.1%} (for alpagasus2); "
        f"winning score {res['winning_score']:.3f}; same outcome as 'the longer answer wins' on "
        f"{sum(mine[k] == longer[k] for k in mine) / len(mine):.1%}"
    )
    if reviews_ab:
        against_reviews(reviews_ab, reviews_ba, bands)


def against_reviews(reviews_ab: list[str], reviews_ba: list[str], bands: list[float]) -> None:
    """Agreement with the reviews' judge (GPT-4) on the AlpaGasus answers, at each tie band (judge-check)."""
    from alpagasus.judgecheck import JudgeCard, ReferenceSpec, judge_check

    spec = ReferenceSpec(reviews_ab=reviews_ab, reviews_ba=reviews_ba, model_a="alpagasus2", model_b="alpaca2")
    print("  against the reviews (judge-check):")
    for i, band in enumerate(bands):
        with tempfile.TemporaryDirectory() as tmp:
            card = judge_check(JUDGE, spec, store_path=Path(tmp) / "s.db", judge_options={"tie_band": band})
        assert isinstance(card, JudgeCard)
        print(row(f"{JUDGE} tie band {band:g}", card.figures.__dict__))
        if i == 0:
            for name, f in card.baselines.items():
                print(row(name, f.__dict__))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--retrain", action="store_true", help="recompute the held-out figures by training again")
    ap.add_argument("--cache", default=None, help="embedding cache folder for --retrain (emb_*.npz)")
    ap.add_argument("--default-n", type=int, default=400, help="held-out pairs for today's default (0: skip)")
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--reviews-ab", nargs="*", default=[])
    ap.add_argument("--reviews-ba", nargs="*", default=[])
    ap.add_argument("--tie-bands", default="0,0.1,0.2,0.3", help="with --reviews-ab/ba: the tie bands to measure")
    args = ap.parse_args()
    figs = heldout_figures(args.retrain, args.cache)
    table("cross-fitted (4 folds; models AND questions unseen), GPT-4 AlpacaEval dev:", figs["cross_fitted"])
    if "heldout_cell" in figs:
        table("the shipped judge on the fold it never saw (its models AND questions):", figs["heldout_cell"])
    if args.default_n:
        same_items(args.default_n)
    if not args.skip_timing:
        timing(args.reviews_ab, args.reviews_ba, [float(b) for b in args.tie_bands.split(",")])
    sys.stdout.flush()


if __name__ == "__main__":
    main()
