"""What a strong judge costs: the cascade against replayed real decisions, and the price of rating Alpaca 52k.

    python bench/cost.py [--part cascade|price|all] [--samples 600,1000,1500] [--seeds 0,1,2]
                         [--features CACHE.npz]

1. cascade: the published Claude-accuracy and ChatGPT-helpfulness >= 4.5 decisions of the 6,000 uniformly drawn
   Alpaca rows of ../shared/data/labels/alpaca_llm_labels.jsonl are the strong judge (kept = 5.0, else 3.0).
   For each sample size and seed, the cascade's own code (alpagasus.rate.cascade: fit_band, estimates,
   interval) draws the sample, distils the predictor, sets the band for 0.95 / 0.95, and decides the other rows;
   the final kept set is then scored against the recorded decisions of all 6,000 rows (the rows outside the
   sample are the further held-out check). Same arithmetic as `rate --cascade --judge replay:FILE`, without
   encoding each row again per configuration (features are computed once and cached in --features).
2. price: input tokens of the paper's accuracy prompt over the bundled 300-row Alpaca sample, counted with the
   embedded SmolLM2 tokenizer (a GPT-style BPE; no tiktoken here), scaled to Alpaca's 52,002 rows at
   gpt-4o-mini's prices: generate (the paper's way: score + explanation), logprob (one output token), each
   with the Batch API discount, and the cascade at the strong-judge fraction measured in part 1.
The last line is one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ALPAGASUS_SHARED_DATA", REPO.parent / "shared" / "data"))
DECISIONS = {"claude": "claude_accuracy_ge_4_5", "chatgpt": "chatgpt_helpfulness_ge_4_5"}
ALPACA_ROWS = 52002
# gpt-4o-mini, USD per million tokens, OpenAI's published standard prices; the Batch API halves both.
PRICE_IN, PRICE_OUT, BATCH_DISCOUNT = 0.15, 0.60, 0.5
GENERATE_OUT_TOKENS = 120  # the score line + the explanation the paper asks for (rate --dry-run's estimate)
CHAT_OVERHEAD = 7          # tokens the chat format adds around a system + user message


def uniform_rows() -> tuple[list, dict]:
    from alpagasus.records import Example

    seen, examples, truth = set(), [], {k: [] for k in DECISIONS}
    for line in (SHARED / "labels" / "alpaca_llm_labels.jsonl").open(encoding="utf-8"):
        r = json.loads(line)
        e = Example(r["instruction"], r["input"], r["output"])
        if not r["from_random_sample"] or e.id in seen or e.empty_field:
            continue  # the rate pipeline's rows: unique, not empty
        seen.add(e.id)
        examples.append(e)
        for k, col in DECISIONS.items():
            truth[k].append(bool(r[col]))
    return examples, truth


def run_cascade(examples: list, x, truth, k: int, seed: int, feature_set: str = "embeddings") -> dict:
    import numpy as np

    from alpagasus.rate.cascade import CascadeOptions, estimates, fit_band, interval, predicted_scores

    y = np.asarray(truth, dtype=bool)
    n = len(examples)
    opts = CascadeOptions(seed=seed, feature_set=feature_set)
    idx = np.array(sorted(random.Random(seed).sample(range(n), k)))  # as rate_cascade draws it
    rest = np.setdiff1d(np.arange(n), idx)
    t0 = time.process_time()
    pred, oof, keep, lo, hi = fit_band([examples[i] for i in idx], [5.0 if y[i] else 3.0 for i in idx],
                                       len(rest), opts, x=x[idx])
    est_r, est_p = estimates(oof, keep, lo, hi, len(rest))
    ci = interval(oof, keep, lo, hi, len(rest), opts.bootstrap, seed)
    s = predicted_scores(pred, x[rest], [examples[i] for i in rest])
    band = (s >= lo) & (s < hi)
    kept = y.copy()  # sample rows: the strong judge's own decision
    kept[rest] = (s >= hi) | (band & y[rest])  # band rows: the strong judge's; the others: the predictor's
    tp = int((kept & y).sum())
    return {"sample": k, "seed": seed, "band_rows": int(band.sum()),
            "strong_fraction": round((k + int(band.sum())) / n, 4),
            "recall": round(tp / y.sum(), 4), "precision": round(tp / max(1, kept.sum()), 4),
            "est_recall": round(float(est_r), 4), "est_precision": round(float(est_p), 4),
            "ci_recall": [round(v, 3) for v in ci["recall"]], "ci_precision": [round(v, 3) for v in ci["precision"]],
            "band_rest_fraction": round(float(band.mean()), 4), "lo": round(lo, 4), "hi": round(hi, 4),
            "fit_cpu_s": round(time.process_time() - t0, 1)}


def cascade_part(samples: list[int], seeds: list[int], cache: str, feature_set: str = "embeddings") -> dict:
    from alpagasus.distill import cached_features

    examples, truth = uniform_rows()
    x = cached_features(examples, cache, None, lambda m: print(m, file=sys.stderr))
    out: dict = {"rows": len(examples)}
    for name, y in truth.items():
        print(f"\n{name}: {sum(y)} of {len(y)} rows kept by the recorded decision", file=sys.stderr)
        print("sample seed  strong%  recall  precision  est.recall [95% CI]      est.precision [95% CI]  "
              "band(rest)", file=sys.stderr)
        runs = []
        for k in samples:
            for seed in seeds:
                r = run_cascade(examples, x, y, k, seed, feature_set)
                runs.append(r)
                print(f"{k:6d} {seed:4d}  {100 * r['strong_fraction']:6.1f}  {r['recall']:.3f}   {r['precision']:.3f}"
                      f"      {r['est_recall']:.3f} {r['ci_recall']}   {r['est_precision']:.3f} {r['ci_precision']}"
                      f"   {100 * r['band_rest_fraction']:.1f}%", file=sys.stderr)
        out[name] = {"kept": int(sum(y)), "runs": runs}
    return out


def price_part(cascade: dict | None) -> dict:
    from transformers import AutoTokenizer

    from alpagasus.data import bundled_sample, stream_examples
    from alpagasus.models import loadable
    from alpagasus.prompts.template import load_template

    tok = AutoTokenizer.from_pretrained(loadable("embedded:smollm2"))
    t = load_template("accuracy")
    rows = list(stream_examples(bundled_sample("alpaca_300"), None, True, None, allow_empty=True))

    def count(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    tin = sum(count(t.system) + count(t.render(e.fields())) + CHAT_OVERHEAD for e in rows) / len(rows)
    prefix = count(t.logprob_prefix) + 4  # the primed assistant turn of logprob mode
    per_million = 1e-6 * ALPACA_ROWS
    ways = {"generate (the paper's way)": (tin, GENERATE_OUT_TOKENS, 1.0), "logprob": (tin + prefix, 1, 1.0)}
    table = []
    for name, (i, o, f) in ways.items():
        for batch in (False, True):
            d = BATCH_DISCOUNT if batch else 1.0
            cost = per_million * f * d * (i * PRICE_IN + o * PRICE_OUT)
            table.append({"way": name + (" + Batch API" if batch else ""), "tokens_in": round(i, 1),
                          "tokens_out": o, "strong_fraction": f, "usd": round(cost, 2)})
    for name, frac in _cascade_fractions(cascade).items():
        i, o = tin + prefix, 1
        table.append({"way": f"cascade ({name}) + logprob + Batch API", "tokens_in": round(i, 1), "tokens_out": o,
                      "strong_fraction": frac, "usd": round(per_million * frac * BATCH_DISCOUNT *
                                                            (i * PRICE_IN + o * PRICE_OUT), 2)})
    print(f"\nAlpaca 52k ({ALPACA_ROWS} rows) at gpt-4o-mini ${PRICE_IN}/M in, ${PRICE_OUT}/M out, Batch API "
          f"-{int(100 * BATCH_DISCOUNT)}%; tokens/row measured on {len(rows)} bundled rows (SmolLM2 tokenizer)",
          file=sys.stderr)
    for r in table:
        print(f"  {r['way']:52s} in {r['tokens_in']:6.1f}  out {r['tokens_out']:4d}  x{r['strong_fraction']:.3f}"
              f"  ${r['usd']:.2f}", file=sys.stderr)
    return {"rows_measured": len(rows), "tokenizer": "SmolLM2-135M-Instruct (embedded)", "table": table}


def _cascade_fractions(cascade: dict | None) -> dict[str, float]:
    """Strong-judge fraction at 52k: the 5000-row sample + the band's share of the other rows, that share taken
    from the largest sample measured in part 1 (a predictor trained on fewer rows: conservative)."""
    if not cascade:
        return {}
    out = {}
    for name in DECISIONS:
        runs = cascade[name]["runs"]
        big = max(r["sample"] for r in runs)
        band = sum(r["band_rest_fraction"] for r in runs if r["sample"] == big) / sum(
            1 for r in runs if r["sample"] == big)
        out[name] = round((5000 + band * (ALPACA_ROWS - 5000)) / ALPACA_ROWS, 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("cascade", "price", "all"), default="all")
    ap.add_argument("--samples", default="600,1000,1500")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--feature-set", default="embeddings", help="the predictor's features: embeddings or rich")
    ap.add_argument("--features", default=str(Path.home() / ".cache" / "alpagasus" / "bench_uniform_features.npz"))
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)  # a shared machine
    res: dict = {}
    if a.part in ("cascade", "all"):
        res["cascade"] = cascade_part([int(v) for v in a.samples.split(",")], [int(v) for v in a.seeds.split(",")],
                                      a.features, a.feature_set)
    if a.part in ("price", "all"):
        res["price"] = price_part(res.get("cascade"))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
