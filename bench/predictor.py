"""Predictor judges: CPU speed and held-out quality, side by side with response length and the embedded LLM judge.

    python bench/predictor.py [--quick] [--rows N] [--llm-rows N]

1. rows/second of `predictor:alpaca-claude-accuracy` scoring real Alpaca rows in batches (encoder included);
2. on the held-out uniform rows of the shipped predictors' label file (the rows neither predictor trained or
   calibrated on): ROC-AUC, precision at the kept fraction, Brier, ECE, kept fraction at --threshold 4.5;
3. on the first --llm-rows of those rows: ROC-AUC of each predictor, of output length alone and of the
   embedded LLM judge (SmolLM2-135M, logprob mode, the paper's accuracy prompt primed with "Score: ").
The last line is one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ALPAGASUS_SHARED_DATA", REPO.parent / "shared" / "data"))
PREDICTORS = ("alpaca-claude-accuracy", "alpaca-chatgpt-helpfulness")


def speed(rows: list[dict], batch: int = 256) -> dict:
    from alpagasus.judges import get
    from alpagasus.records import Example, Request

    judge = get(f"predictor:{PREDICTORS[0]}")
    t0 = time.perf_counter()
    judge.load()
    load_s = time.perf_counter() - t0
    reqs = [Request(key=str(i), system="", user="", example=Example(r["instruction"], r["input"], r["output"]))
            for i, r in enumerate(rows)]
    t0, c0, load0 = time.perf_counter(), time.process_time(), os.getloadavg()[0]
    for i in range(0, len(reqs), batch):
        judge.score_sync(reqs[i : i + batch])
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    # the machine is shared: CPU seconds (all threads of this process) say more than wall time under load
    return {"rows": len(reqs), "batch": batch, "load_s": round(load_s, 2), "seconds": round(secs, 2),
            "rows_per_s": round(len(reqs) / secs, 1), "cpu_s": round(cpu, 2),
            "rows_per_cpu_s": round(len(reqs) / cpu, 1), "threads": _threads(),
            "loadavg_1min": [round(load0, 2), round(os.getloadavg()[0], 2)], "cores": os.cpu_count()}


def length_dependence(preds: dict) -> dict:
    """Spearman of each predictor's score with the output's length (characters) on the bundled 300-row sample:
    what a selection by that score does to the length of what is kept."""
    from scipy.stats import spearmanr

    from alpagasus.records import Example

    rows = json.loads((REPO / "src" / "alpagasus" / "samples" / "alpaca_300.json").read_text())
    exs = [Example(r["instruction"], r.get("input", ""), r["output"]) for r in rows]
    out = {}
    for n, p in preds.items():
        score = p.predict(exs)[0]
        out[n] = round(float(spearmanr(score, [len(e.output) for e in exs]).statistic), 3)
    return out


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def llm_scores(examples: list) -> list[float]:
    """Expected 0-5 score of the embedded judge (the lead's hf judge, logprob mode)."""
    from alpagasus.judges import get
    from alpagasus.prompts import load_template
    from alpagasus.records import Request

    t = load_template("accuracy")
    judge = get(None, mode="logprob")
    judge.load()
    reqs = [Request(key=e.id, system=t.system, user=t.render(e.fields()), assistant_prefix=t.logprob_prefix,
                    labels=t.labels, example=e) for e in examples]
    out: list[float] = []
    for i in range(0, len(reqs), judge.batch_size):
        out += [r.score if r.score is not None else 2.5 for r in judge.score_sync(reqs[i : i + judge.batch_size])]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rows, no LLM column")
    ap.add_argument("--rows", type=int, help="held-out rows to measure (default all, --quick 300)")
    ap.add_argument("--llm-rows", type=int, help="held-out rows for the LLM column (default 400, --quick 0)")
    args = ap.parse_args()
    import numpy as np

    from alpagasus.distill import load_labels, metrics, split_holdout
    from alpagasus.predictors import Predictor, featurize, shared_encoder, with_hand

    figures: dict = {}
    alpaca = json.loads((SHARED / "alpaca" / "alpaca_random_9k.json").read_text())
    figures["speed"] = speed(alpaca[: 256 if args.quick else 1024])
    print(f"speed: {figures['speed']}", flush=True)

    preds = {n: Predictor.load(n) for n in PREDICTORS}
    figures["length_dependence"] = length_dependence(preds)
    print(f"Spearman of score with output length on the bundled sample: {figures['length_dependence']}", flush=True)
    td = preds[PREDICTORS[0]].card["training_data"]
    sets = {n: load_labels(SHARED / "labels" / td["file"], p.card["training_data"]["label"],
                           uniform_column=td["uniform_column"]) for n, p in preds.items()}
    masks = {n: split_holdout(ls, td["holdout_fraction"], td["seed"]) for n, ls in sets.items()}
    assert all(np.array_equal(m, masks[PREDICTORS[0]]) for m in masks.values()), "held-out rows differ"
    held = np.where(masks[PREDICTORS[0]])[0]
    n_rows = args.rows or (300 if args.quick else len(held))
    held = held[:n_rows]
    examples = [sets[PREDICTORS[0]].examples[i] for i in held]
    t0 = time.perf_counter()
    x = featurize(examples, shared_encoder())
    print(f"encoded {len(held)} held-out rows in {time.perf_counter() - t0:.0f} s", flush=True)
    length = np.array([len(e.output) for e in examples], dtype=float)

    figures["holdout"] = {}
    print(f"\n## held-out uniform rows: {len(held)}\n")
    print("| predictor | label positive rate | ROC-AUC | length-only ROC-AUC | precision at kept fraction | "
          "Brier | ECE | kept at score >= 4.5 | precision at 4.5 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for n, p in preds.items():
        keep = sets[n].keep[held]
        raw = p.raw(with_hand(x, examples, p.feature_set), examples)
        m = metrics(keep, raw, p.p_keep(raw), score=p.score(raw), threshold=4.5)
        m["length_roc_auc"] = metrics(keep, length)["roc_auc"]
        figures["holdout"][n] = m
        print(f"| {n} | {m['positive_rate']:.3f} | {m['roc_auc']:.3f} | {m['length_roc_auc']:.3f} | "
              f"{m['precision_at_kept_fraction']:.3f} | {m['brier']:.4f} | {m['ece']:.4f} | "
              f"{m['kept_fraction_at_threshold']:.3f} | {m['precision_at_threshold']:.3f} |")

    k = args.llm_rows if args.llm_rows is not None else (0 if args.quick else 400)
    if k:
        k = min(k, len(held))
        t0 = time.perf_counter()
        llm = np.array(llm_scores(examples[:k]))
        llm_s = time.perf_counter() - t0
        figures["llm"] = {"rows": k, "seconds": round(llm_s, 1), "rows_per_s": round(k / llm_s, 2)}
        print(f"\n## same {k} held-out rows: ROC-AUC against each strong judge's decision "
              f"(SmolLM2 {k / llm_s:.2f} rows/s)\n")
        print("| strong judge's decision | positives | predictor | output length | SmolLM2-135M logprob |")
        print("| --- | --- | --- | --- | --- |")
        for n, p in preds.items():
            keep = sets[n].keep[held][:k]
            row = {"positives": int(keep.sum()), "predictor": metrics(keep, p.raw(with_hand(x[:k], examples[:k], p.feature_set),
                                                                   examples[:k]))["roc_auc"],
                   "length": metrics(keep, length[:k])["roc_auc"], "smollm2": metrics(keep, llm)["roc_auc"]}
            figures["llm"][n] = row
            print(f"| {sets[n].label} | {row['positives']} | {row['predictor']:.3f} | {row['length']:.3f} | "
                  f"{row['smollm2']:.3f} |")
    print(json.dumps(figures))


if __name__ == "__main__":
    sys.exit(main())
