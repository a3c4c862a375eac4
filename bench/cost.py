"""What a strong judge costs: the cascade's guarantee against replayed real decisions, and the price of Alpaca 52k.

    python bench/cost.py [--part cascade|price|all] [--samples 600,1500,3000] [--seeds 0-29]
                         [--targets 0.95,0.9] [--start auto|shipped] [--log runs.jsonl] [--reuse-log]

1. cascade: the published Claude-accuracy and ChatGPT-helpfulness >= 4.5 decisions of the 5,998 uniformly
   drawn Alpaca rows of ../shared/data/labels/alpaca_llm_labels.jsonl are the strong judge. For each sample
   size, seed and target (recall = precision), the cascade's own code (alpagasus.rate.plan: precheck,
   certify_start; rate.start: split_sample, distil) draws the sample as rate_cascade does, splits it, chooses
   the start, certifies a band, and decides the other rows; the kept set is then scored against the recorded
   decisions of all rows. Reported: the runs with a certified band (at any saving) and their coverage (share
   whose true recall and precision meet the target), the runs the default settings do not give up on
   (--cascade-min-saving 0.2), the strong-judge share. The "shipped" start is leak-free: the shipped heads
   saw most of these rows in training, so each half of them is scored by the same recipe (rich features,
   ensemble-0.001-0.1-0.3) fitted on every other labelled row (shipped_like; cached). The MiniLM features of
   the rows are computed once and cached (~/.cache/alpagasus/bench_label_features.npz); no HTTP layer: the
   replay judge's arithmetic is the recorded decision itself. One JSON line per run goes to --log.
2. price: input tokens of the paper's accuracy prompt over the bundled 300-row Alpaca sample, counted with the
   embedded SmolLM2 tokenizer (a GPT-style BPE; no tiktoken here), scaled to Alpaca's 52,002 rows at
   gpt-4o-mini's prices: generate (the paper's way: score + explanation), logprob (one output token), each
   with the Batch API discount, and the cascade at the strong-judge fraction measured in part 1.
The last line is one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import dataclasses
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
CACHE = Path.home() / ".cache" / "alpagasus"
FEATURES = CACHE / "bench_label_features.npz"    # MiniLM features of every labelled row, computed once
SHIPPED_CACHE = CACHE / "bench_shipped_like.npz"  # leak-free shipped-recipe scores of the uniform rows
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


def shipped_like(examples: list, x, name: str, cache: Path):
    """Leak-free scores of the shipped predictor's recipe on the uniform rows: the shipped head saw about 4,500
    of them in training, so each half of the uniform rows is scored by the same head (rich features,
    ensemble-0.001-0.1-0.3) fitted on every other labelled row (the other half + the added rows)."""
    import numpy as np

    from alpagasus.distill import cached_features
    from alpagasus.distill.heads import HEADS, fit_head
    from alpagasus.predictors import Predictor, with_hand
    from alpagasus.records import Example

    key = f"{name}_z"
    if Path(cache).exists():
        with np.load(cache) as z:
            if key in z.files:
                return z[key]
    others, labels, seen = [], [], {e.id for e in examples}
    for line in (SHARED / "labels" / "alpaca_llm_labels.jsonl").open(encoding="utf-8"):
        r = json.loads(line)
        e = Example(r["instruction"], r["input"], r["output"])
        if not r["from_random_sample"] and e.id not in seen and not e.empty_field:
            seen.add(e.id)
            others.append(e)
            labels.append(bool(r[DECISIONS[name]]))
    xo = cached_features(others, FEATURES, None, lambda m: print(m, file=sys.stderr))
    _, truth = uniform_rows()
    y, yo = np.asarray(truth[name]), np.asarray(labels)
    half = np.random.default_rng(0).permutation(len(examples)) % 2 == 0
    z = np.zeros(len(examples))
    for part in (half, ~half):
        tr = [e for e, m in zip(examples, ~part) if m] + others
        xt = np.vstack([with_hand(x[~part], [e for e, m in zip(examples, ~part) if m], "rich"),
                        with_hand(xo, others, "rich")])
        yt = np.concatenate([y[~part], yo]).astype(np.int64)
        head = Predictor(fit_head(HEADS["ensemble-0.001-0.1-0.3"], xt, yt, np.ones(len(yt)), 0, tr))
        ev = [e for e, m in zip(examples, part) if m]
        z[part] = head.raw(with_hand(x[part], ev, "rich"), ev)
        print(f"{name}: shipped recipe fitted on {len(yt)} rows, scored {int(part.sum())}", file=sys.stderr)
    old = dict(np.load(cache)) if Path(cache).exists() else {}
    np.savez(cache, **old, **{key: z})
    return z


def run_cascade(examples: list, x, truth, zship, k: int, seed: int, targets: list[float],
                start: str = "auto") -> list[dict]:
    """One sample of k rows: the cascade's own plan (split, precheck, candidates, path, certificate) at each
    target, then the kept set's true recall and precision over all rows."""
    import numpy as np

    from alpagasus.distill import DistillError
    from alpagasus.rate.plan import CascadeOptions, certify_start, precheck
    from alpagasus.rate.start import distil, predicted_scores, split_sample

    y = np.asarray(truth, dtype=bool)
    n = len(examples)
    idx = np.array(sorted(random.Random(seed).sample(range(n), k)))  # as rate_cascade draws it
    rest = np.setdiff1d(np.arange(n), idx)
    ys = y[idx]
    split = split_sample(ys, CascadeOptions().certify, seed)
    ship = 5.0 / (1.0 + np.exp(-zship))  # a 0-5 score whose logit(score / 5) is the head's raw value
    scores = {"shipped": ship}
    distilled, t0, out = (False if start == "shipped" else None), time.process_time(), []
    for target in targets:
        # min_saving 0: the certificate whatever it saves (the guarantee measured wherever a band is certified);
        # the default run gives up where that band saves less than CascadeOptions().min_saving
        opts = CascadeOptions(recall=target, precision=target, seed=seed, min_saving=0.0)
        r = {"sample": k, "seed": seed, "target": target, "start": "", "certified": False, "gave_up": True,
             "at": "precheck", "recall_bound": 1.0, "precision_bound": 1.0, "band_rest_fraction": 1.0,
             "recall": 1.0, "precision": 1.0}
        if not precheck(ys, split, dataclasses.replace(opts, min_saving=CascadeOptions().min_saving)):
            if distilled is None:
                try:
                    tr = idx[split.train]
                    pred = distil([examples[i] for i in tr], np.where(y[tr], 5.0, 3.0), 4.5, seed, "embeddings",
                                  x[tr], "bench")
                    scores["distilled"] = predicted_scores(pred, x, examples)
                    distilled = ("distilled", scores["distilled"][idx])
                except DistillError:
                    distilled = False
            st, cert, reason = certify_start(ys, split, ("shipped", ship[idx]), distilled or None, opts)
            r.update(start=st.scorer.start, auc={a: round(v, 3) for a, v in st.auc.items()}, at="certify",
                     certified=not reason, est_saving=round(cert.saving, 4),
                     gave_up=bool(reason) or cert.saving < CascadeOptions().min_saving)
            if not reason:
                z = st.scorer.combine([scores[p][rest] for p in st.scorer.predictors])
                band = (z >= cert.lo) & (z < cert.hi)
                kept = y.copy()  # sample rows: the strong judge's own decision
                kept[rest] = (z >= cert.hi) | (band & y[rest])  # band rows: the judge's; the others: the predictor's
                tp = int((kept & y).sum())
                r.update(recall_bound=round(cert.recall_bound, 4), precision_bound=round(cert.precision_bound, 4),
                         band_rest_fraction=round(float(band.mean()), 4),
                         recall=round(tp / int(y.sum()), 4), precision=round(tp / max(1, int(kept.sum())), 4))
        r["met"] = bool(r["recall"] >= target and r["precision"] >= target)
        # the default run: a band only where it saves enough; else the strong judge rates every row (exact)
        r["strong_fraction"] = 1.0 if r["gave_up"] else round((k + r["band_rest_fraction"] * len(rest)) / n, 4)
        r["strong_fraction_any"] = round((k + r["band_rest_fraction"] * len(rest)) / n, 4)
        out.append(r)
    out[-1]["fit_cpu_s"] = round(time.process_time() - t0, 1)
    return out


def summarise(runs: list[dict]) -> list[dict]:
    """Per sample size and target: runs; runs with a certified band (any saving) and their coverage (share whose
    true recall and precision meet the target); runs the default settings do not give up on; strong-judge share
    at the default settings, and with any certified band."""
    import numpy as np

    rows = []
    for k in sorted({r["sample"] for r in runs}):
        for target in sorted({r["target"] for r in runs}):
            rs = [r for r in runs if r["sample"] == k and r["target"] == target]
            cert = [r for r in rs if r["certified"]]
            rows.append({"sample": k, "target": target, "runs": len(rs), "certified": len(cert),
                         "coverage_certified": round(float(np.mean([r["met"] for r in cert])), 3) if cert else None,
                         "coverage_all": round(float(np.mean([r["met"] for r in rs])), 3),
                         "saving_runs": sum(not r["gave_up"] for r in rs),
                         "strong_fraction": round(float(np.mean([r["strong_fraction"] for r in rs])), 4),
                         "strong_fraction_any": round(float(np.mean([r["strong_fraction_any"] for r in rs])), 4),
                         "min_true_recall": min(r["recall"] for r in rs),
                         "min_true_precision": min(r["precision"] for r in rs),
                         "starts": {s: sum(r["start"] == s for r in cert) for s in sorted({r["start"] for r in cert})}})
    return rows


def cascade_part(samples: list[int], seeds: list[int], targets: list[float], log: str, start: str = "auto") -> dict:
    from alpagasus.distill import cached_features

    examples, truth = uniform_rows()
    x = cached_features(examples, FEATURES, None, lambda m: print(m, file=sys.stderr))
    out: dict = {"rows": len(examples)}
    for name, y in truth.items():
        zship = shipped_like(examples, x, name, SHIPPED_CACHE)
        print(f"\n{name}: {sum(y)} of {len(y)} rows kept by the recorded decision", file=sys.stderr)
        runs = []
        for k in samples:
            for seed in seeds:
                for r in run_cascade(examples, x, y, zship, k, seed, targets, start):
                    runs.append(r)
                    with open(log, "a", encoding="utf-8") as f:
                        f.write(json.dumps({"decisions": name, **r}) + "\n")
        out[name] = {"kept": int(sum(y)), "summary": summarise(runs)}
        for s in out[name]["summary"]:
            print(json.dumps(s), file=sys.stderr)
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
    """Strong-judge share at 52k at the default settings: the 5000-row sample + the band's share of the other
    rows, that share (1.0 in a run that gave up) taken from the largest sample measured in part 1 (a smaller sample than 52k's 5000:
    conservative), for each decision set and target."""
    if not cascade:
        return {}
    out = {}
    for name in DECISIONS:
        runs = [json.loads(line) for line in Path(cascade["log"]).open(encoding="utf-8")]
        runs = [r for r in runs if r["decisions"] == name]
        big = max(r["sample"] for r in runs)
        for target in sorted({r["target"] for r in runs}):
            rs = [r for r in runs if r["sample"] == big and r["target"] == target]
            band = sum(1.0 if r["gave_up"] else r["band_rest_fraction"] for r in rs) / len(rs)
            out[f"{name}, recall/precision {target}"] = round((5000 + band * (ALPACA_ROWS - 5000)) / ALPACA_ROWS, 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("cascade", "price", "all"), default="all")
    ap.add_argument("--samples", default="600,1500,3000")
    ap.add_argument("--seeds", default="0-29", help="FIRST-LAST or a comma list")
    ap.add_argument("--targets", default="0.95,0.9", help="recall = precision targets")
    ap.add_argument("--log", default="bench_cost_runs.jsonl", help="one JSON line per run (appended)")
    ap.add_argument("--start", choices=("auto", "shipped"), default="auto",
                    help="the cascade's start: auto (shipped, distilled or combined: fits a predictor per run) "
                    "or shipped (no fit: fast)")
    ap.add_argument("--reuse-log", action="store_true", help="summarise the runs of --log; run nothing")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)  # a shared machine
    res: dict = {}
    if a.part in ("cascade", "all"):
        first, _, last = a.seeds.partition("-")
        seeds = list(range(int(first), int(last) + 1)) if last else [int(v) for v in a.seeds.split(",")]
        if a.reuse_log:
            runs = [json.loads(line) for line in Path(a.log).open(encoding="utf-8")]
            res["cascade"] = {name: {"summary": summarise([r for r in runs if r["decisions"] == name])}
                              for name in DECISIONS}
        else:
            res["cascade"] = cascade_part([int(v) for v in a.samples.split(",")], seeds,
                                          [float(v) for v in a.targets.split(",")], a.log, a.start)
        res["cascade"]["log"] = a.log
    if a.part in ("price", "all"):
        res["price"] = price_part(res.get("cascade"))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
