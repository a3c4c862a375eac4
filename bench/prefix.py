"""Benchmark 5, prefix sharing: the paper's prompt layout vs the prefix-first one (rubric first, data last).

    python bench/prefix.py            # 200 real Alpaca rows (~15 min on 2 busy cores)
    python bench/prefix.py --quick    # 48 rows

The embedded judge (SmolLM2-135M-Instruct, transformers, logprob mode) rates the same rows through the real
`rate` pipeline (rows sorted by length, batches of --batch-size) in four set-ups:
  paper_plain    the paper's layout (--dimension accuracy), whole prompts (prefix reuse off)
  paper_reuse    the paper's layout, the judge's shared-prefix KV reuse on (the tool's default)
  prefix_reuse   the prefix-first layout (--dimension accuracy-prefix), reuse on
  prefix_plain   the prefix-first layout, reuse off (what a server without prefix caching gets)
To compare set-ups under the same load on a shared machine, the rows go in chunks and every chunk is rated
by all four set-ups in a rotating order; a set-up's rate is its rows over the sum of its rating times.
speedup = prefix_reuse / paper_reuse (both with prefix caching: what the layout itself buys on a caching server).
spearman = rank correlation of the two layouts' scores (paper_reuse vs prefix_reuse) on the same rows.
--labels N also rates the first N uniform rows of the published-label file with both layouts and reports each
layout's ROC-AUC against Claude's accuracy decision (which layout ranks rows more like a strong judge).
--threads N sets torch's threads (on a shared 2-core machine, 1 thread can beat 2: see docs/prefix_layout.md).
Last line: {"speedup", "spearman", ...}.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ALPAGASUS_SHARED_DATA", REPO.parent / "shared" / "data")) / "alpaca" / "alpaca_random_9k.json"
SETUPS = {"paper_plain": ("accuracy", False), "paper_reuse": ("accuracy", True),
          "prefix_reuse": ("accuracy-prefix", True), "prefix_plain": ("accuracy-prefix", False)}


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rho with average ranks for ties (the report's own)."""
    from alpagasus.report.stats import spearman as rho

    return float(rho(a, b))


def top_overlap(a: list[float], b: list[float], frac: float = 0.25) -> float:
    """Share of the top `frac` rows by `a` that are also in the top `frac` by `b` (what a selection keeps)."""
    k = max(1, round(len(a) * frac))
    top = lambda x: set(sorted(range(len(x)), key=lambda i: -x[i])[:k])  # noqa: E731
    return len(top(a) & top(b)) / k


def label_auc(rows: int, js: dict, load_template) -> dict:
    """ROC-AUC of each layout's scores against Claude's published accuracy decision (score >= 4.5)."""
    from sklearn.metrics import roc_auc_score

    from alpagasus.rate import build_request
    from alpagasus.records import Example

    labelled = [json.loads(line) for line in open(DATA.parents[1] / "labels" / "alpaca_llm_labels.jsonl")]
    labelled = [r for r in labelled if r["from_random_sample"]][:rows]
    y = [bool(r["claude_accuracy_ge_4_5"]) for r in labelled]
    out = {"rows": len(y), "positives": sum(y)}
    for lay, name in (("paper", "paper_reuse"), ("prefix", "prefix_reuse")):
        t = load_template(SETUPS[name][0])
        reqs = [build_request(Example(r["instruction"], r["input"], r["output"]), t, "logprob") for r in labelled]
        order = sorted(range(len(reqs)), key=lambda i: len(reqs[i].user))
        score = [0.0] * len(reqs)
        bs = js[name].batch_size
        for k in range(0, len(order), bs):
            idx = order[k:k + bs]
            for i, rep in zip(idx, js[name].score_sync([reqs[i] for i in idx])):
                score[i] = rep.score
        out[lay] = round(float(roc_auc_score(y, score)), 4)
        out[f"{lay}_scores"] = score
    out["spearman"] = round(spearman(out.pop("paper_scores"), out.pop("prefix_scores")), 4)
    print(f"labelled rows: ROC-AUC vs Claude's accuracy decision: paper {out['paper']}, prefix {out['prefix']}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rows", type=int)
    ap.add_argument("--judge", default="embedded:smollm2")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--chunk", type=int, help="rows per chunk (default: 4 batches)")
    ap.add_argument("--labels", type=int, default=0, help="also: ROC-AUC of both layouts on N labelled rows")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    a = ap.parse_args()
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)

    from alpagasus import judges
    from alpagasus.data import read_examples
    from alpagasus.prompts import load_template
    from alpagasus.engine import RunOptions
    from alpagasus.rate import rate
    from alpagasus.store import Store

    n = a.rows or (48 if a.quick else 200)
    examples = read_examples(DATA, skip_invalid=True).examples[:n]
    base = judges.get(a.judge, mode="logprob", batch_size=a.batch_size)
    t0 = time.perf_counter()
    base.load()
    load_s = time.perf_counter() - t0
    js = {}
    for name, (_, reuse) in SETUPS.items():  # one judge per set-up (its own prefix cache), one model in memory
        j = judges.get(a.judge, mode="logprob", batch_size=a.batch_size, prefix_cache=reuse)
        j.model, j.tok = base.model, base.tok
        js[name] = j
    chunk = a.chunk or 4 * a.batch_size
    secs = dict.fromkeys(SETUPS, 0.0)
    cpu = dict.fromkeys(SETUPS, 0.0)
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as d:
        stores = {name: Store(Path(d) / f"{name}.sqlite") for name in SETUPS}
        names = list(SETUPS)
        for c, start in enumerate(range(0, n, chunk)):
            part = examples[start:start + chunk]
            for name in names[c % len(names):] + names[:c % len(names)]:  # rotate who runs first
                c0 = time.process_time()
                s = rate(part, js[name], load_template(SETUPS[name][0]), stores[name], RunOptions(max_reasks=0))
                secs[name] += s.run.elapsed_s
                cpu[name] += time.process_time() - c0
                assert s.run.ok == len(part), (name, s)
            print(f"chunk {c + 1}: {start + len(part)}/{n} rows, load {os.getloadavg()[0]:.1f}", flush=True)
        got = {}
        for name, st in stores.items():
            ratings = st.get_many([e.id for e in examples], js[name].id, load_template(SETUPS[name][0]).version)
            got[name] = [ratings[e.id] for e in examples]
            st.close()
    load1 = os.getloadavg()
    score = {k: [r.score for r in v] for k, v in got.items()}
    mass = {k: sum(r.extra["label_mass"] for r in v) / len(v) for k, v in got.items()}
    per_s = {k: n / secs[k] for k in SETUPS}
    for k in SETUPS:
        st = js[k].stats
        print(f"{k:13s} {per_s[k]:6.3f} rows/s  {cpu[k] / n:6.3f} CPU s/row  tokens run {st['tokens'] - st['tokens_reused']:6d}"
              f" of {st['tokens']}  label mass {mass[k]:.3f}")
    same = {lay: max(abs(x - y) for x, y in zip(score[f"{lay}_plain"], score[f"{lay}_reuse"])) for lay in ("paper", "prefix")}
    out = {
        "speedup": round(per_s["prefix_reuse"] / per_s["paper_reuse"], 3),
        "spearman": round(spearman(score["paper_reuse"], score["prefix_reuse"]), 4),
        "speedup_cpu": round(cpu["paper_reuse"] / cpu["prefix_reuse"], 3),  # CPU time: what other tenants' load does not move (with --threads 1)
        "speedup_vs_paper_plain": round(per_s["prefix_reuse"] / per_s["paper_plain"], 3),
        "reuse_gain_paper_layout": round(per_s["paper_reuse"] / per_s["paper_plain"], 3),
        "layout_gain_without_reuse": round(per_s["prefix_plain"] / per_s["paper_plain"], 3),
        "per_s": {k: round(v, 3) for k, v in per_s.items()},
        "cpu_s_per_row": {k: round(cpu[k] / n, 3) for k, v in cpu.items()},
        "tokens_run_fraction": {k: round(1 - js[k].stats["tokens_reused"] / js[k].stats["tokens"], 3) for k in SETUPS},
        "top25_overlap": round(top_overlap(score["paper_reuse"], score["prefix_reuse"]), 3),
        "mean_score": {lay: round(sum(score[f"{lay}_reuse"]) / n, 3) for lay in ("paper", "prefix")},
        "label_mass": {lay: round(mass[f"{lay}_reuse"], 3) for lay in ("paper", "prefix")},
        "reuse_vs_plain_max_abs_diff": {k: float(f"{v:.2g}") for k, v in same.items()},
        "rows": n, "batch_size": a.batch_size, "judge": a.judge, "load_s": round(load_s, 1),
        "loadavg_start": [round(x, 2) for x in load0], "loadavg_end": [round(x, 2) for x in load1],
        "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
    }
    if a.labels:
        out["roc_auc_vs_claude_accuracy"] = label_auc(a.labels, js, load_template)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
