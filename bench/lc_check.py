"""Length-controlled win rates (compare/lc.py) from AlpacaEval's published verdicts, against its leaderboards.

    python bench/lc_check.py [--models]

For both shared preference files (`../shared/data/preferences/`: GPT-4, AlpacaEval 1, 36 judged models; GPT-4-turbo,
AlpacaEval 2, 46 models), on the development part (585 of the 805 instructions):
- our raw win rate and our length-controlled (LC) win rate per model, recomputed from the verdicts, against the
  leaderboard CSV's `win_rate` and `length_controlled_winrate` (computed by AlpacaEval on all 805 instructions,
  so neither is expected to match exactly): how many models are within 3 points, and the distribution of the
  differences (ours - leaderboard);
- the rank correlation (Spearman) across models between win rate and average answer length, raw and LC (ours
  and the leaderboard's): length control should lower it;
- seconds to read the file and to fit.
A third run computes GPT-4's LC with the instruction difficulty and pooled length slope of the GPT-4-turbo file
(`compare --lc-calibration`), as AlpacaEval computes every judge's LC with its GPT-4-turbo leaderboard's.
The models compared are those with a leaderboard LC figure, less the reference judged against itself (50 by
construction in both). `--models` prints the per-model table too. The last line is one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ALPAGASUS_SHARED_DATA", REPO.parent / "shared" / "data"))
PREFS = SHARED / "preferences"
SETS = {"alpaca_eval_gpt4": ("alpaca_eval_alpaca_eval_gpt4_dev.jsonl.gz", "alpaca_eval_gpt4_leaderboard.csv"),
        "weighted_alpaca_eval_gpt4_turbo": ("alpaca_eval_weighted_alpaca_eval_gpt4_turbo_dev.jsonl.gz",
                                            "weighted_alpaca_eval_gpt4_turbo_leaderboard.csv")}


def check(name: str, show_models: bool, calibration: str | None = None) -> dict:
    import numpy as np
    from scipy.stats import spearmanr

    from alpagasus.compare.alpacaeval import read_annotations, win_rates
    from alpagasus.compare.lc import alpaca_eval_lc

    data, board_file = SETS[name]
    t0 = time.perf_counter()
    verdicts = read_annotations(PREFS / data)
    cal = read_annotations(PREFS / SETS[calibration][0]) if calibration else None
    t1 = time.perf_counter()
    rates = win_rates(verdicts)
    lc = alpaca_eval_lc(verdicts, cal)
    t2 = time.perf_counter()
    with (PREFS / board_file).open() as f:
        board = {row[""]: row for row in csv.DictReader(f)}
    reference = {v.generator_1 for v in verdicts}
    models = [m for m in rates if m in board and board[m]["length_controlled_winrate"] and m not in reference]
    ours_lc = np.array([lc[m] for m in models])
    ours_raw = np.array([rates[m].win_rate for m in models])
    lb_lc = np.array([float(board[m]["length_controlled_winrate"]) for m in models])
    lb_raw = np.array([float(board[m]["win_rate"]) for m in models])
    length = np.array([rates[m].avg_length for m in models])
    d_lc, d_raw = ours_lc - lb_lc, ours_raw - lb_raw
    if show_models:
        print(f"{'model':42s} {'raw':>7s} {'lb raw':>7s} {'LC':>7s} {'lb LC':>7s} {'LC diff':>8s} {'chars':>6s}")
        for i in np.argsort(-ours_lc):
            print(f"{models[i]:42s} {ours_raw[i]:7.2f} {lb_raw[i]:7.2f} {ours_lc[i]:7.2f} {lb_lc[i]:7.2f} "
                  f"{d_lc[i]:+8.2f} {length[i]:6.0f}")

    def dist(d: "np.ndarray") -> dict:
        q = np.percentile(d, [0, 25, 50, 75, 100])
        return {"mean": round(float(d.mean()), 2), "mean_abs": round(float(np.abs(d).mean()), 2),
                "min": round(float(q[0]), 2), "q1": round(float(q[1]), 2), "median": round(float(q[2]), 2),
                "q3": round(float(q[3]), 2), "max": round(float(q[4]), 2)}

    out = {"annotator": name, "lc_calibration": calibration, "judged_models": len(rates), "compared": len(models),
           "instructions": len({v.instruction for v in verdicts}), "verdicts": len(verdicts),
           "lc_within_3": int((np.abs(d_lc) <= 3).sum()), "lc_within_1": int((np.abs(d_lc) <= 1).sum()),
           "lc_diff": dist(d_lc), "raw_within_3": int((np.abs(d_raw) <= 3).sum()), "raw_diff": dist(d_raw),
           "spearman_length_raw": round(float(spearmanr(ours_raw, length).statistic), 3),
           "spearman_length_lc": round(float(spearmanr(ours_lc, length).statistic), 3),
           "spearman_length_leaderboard_lc": round(float(spearmanr(lb_lc, length).statistic), 3),
           "spearman_lc_vs_leaderboard_lc": round(float(spearmanr(ours_lc, lb_lc).statistic), 3),
           "read_s": round(t1 - t0, 2), "fit_s": round(t2 - t1, 2)}
    print(f"{name}{f' (LC calibrated by {calibration})' if calibration else ''}: {out['verdicts']} verdicts, {out['judged_models']} judged models on {out['instructions']} "
          f"instructions; {out['compared']} compared with the leaderboard")
    print(f"  LC within 3 points of the leaderboard: {out['lc_within_3']}/{len(models)} (within 1: "
          f"{out['lc_within_1']}); ours - leaderboard: {out['lc_diff']}")
    print(f"  raw within 3 points: {out['raw_within_3']}/{len(models)}; ours - leaderboard: {out['raw_diff']}")
    print(f"  Spearman(win rate, avg length): raw {out['spearman_length_raw']}, LC {out['spearman_length_lc']} "
          f"(leaderboard LC {out['spearman_length_leaderboard_lc']}); Spearman(our LC, leaderboard LC) "
          f"{out['spearman_lc_vs_leaderboard_lc']}")
    print(f"  read {out['read_s']} s, fit {out['fit_s']} s")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", action="store_true", help="print the per-model table")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    results = [check(name, args.models) for name in SETS]
    # AlpacaEval computes every judge's LC with the instruction difficulty of its GPT-4-turbo leaderboard
    results.append(check("alpaca_eval_gpt4", args.models, calibration="weighted_alpaca_eval_gpt4_turbo"))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
