"""Benchmark 1, judge modes: examples/second of `logprob` vs `generate` with the embedded judge on real Alpaca rows.

    python bench/judge_modes.py            # 200 rows per run (slow: ~1 hour on 2 shared cores, mostly generate)
    python bench/judge_modes.py --quick    # 64 rows logprob, 16 rows generate

Both modes rate through the real `rate` pipeline (fresh store, rows sorted by length, the paper's accuracy
prompt), each run in its own process (so peak RSS is that run's); model loading is excluded from the rate.
logprob: one forward pass per row (the judge's shared-prefix KV reuse on), at batch sizes 8, 16 and 32, plus
one run at batch 16 with the reuse off for reference. generate: the paper's reply (a score line, then an
explanation), greedy, with the tool's default reply cap (RunOptions.max_tokens, 256 tokens: the explanation the
paper asks for needs room), at batch sizes 8, 16 and 32; one attempt per row (no re-asks), so an unparsable reply
costs generate nothing extra here. `ratio` = logprob at its best batch / generate at its best batch;
`ratio_default_batches` compares the judge's default batch sizes (16 for both). One more logprob run with the
opt-in prefix-first layout (docs/prefix_layout.md) is reported for reference, outside the ratio.
Last line: {"logprob_per_s", "generate_per_s", "ratio", ...}.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ALPAGASUS_SHARED_DATA", REPO.parent / "shared" / "data")) / "alpaca" / "alpaca_random_9k.json"
BATCHES = (8, 16, 32)
GENERATE_BATCHES = (8, 16, 32)


def one(mode: str, rows: int, judge: str, batch: int | None, max_tokens: int, reuse: bool, prompt: str) -> dict:
    import torch

    from alpagasus import judges
    from alpagasus.data import read_examples
    from alpagasus.prompts import load_template
    from alpagasus.engine import RunOptions
    from alpagasus.rate import rate
    from alpagasus.store import Store

    examples = read_examples(DATA, skip_invalid=True).examples[:rows]
    opts = {"batch_size": batch} if batch else {}
    j = judges.get(judge or None, mode=mode, prefix_cache=reuse, **opts)
    t0 = time.perf_counter()
    j.load()
    load_s = time.perf_counter() - t0
    load0, c0 = os.getloadavg()[0], time.process_time()
    with tempfile.TemporaryDirectory() as d, Store(Path(d) / "s.sqlite") as st:
        s = rate(examples, j, load_template(prompt), st, RunOptions(max_reasks=0, max_tokens=max_tokens))
    stats = getattr(j, "stats", {})
    return {"mode": mode, "rows": len(examples), "seconds": round(s.run.elapsed_s, 2),
            "per_s": round(len(examples) / s.run.elapsed_s, 3), "cpu_s_per_row": round((time.process_time() - c0) / len(examples), 3),
            "ok": s.run.ok, "unparsed": s.run.unparsed, "tokens_out": s.run.tokens_out, "load_s": round(load_s, 1),
            "batch_size": j.batch_size, "prefix_reuse": bool(reuse and stats.get("prefix_passes")),
            "tokens_run_fraction": round(1 - stats["tokens_reused"] / stats["tokens"], 3) if stats.get("tokens") else None,
            "threads": torch.get_num_threads(), "loadavg": [round(load0, 2), round(os.getloadavg()[0], 2)],
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    from alpagasus.engine import RunOptions

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rows", type=int)
    ap.add_argument("--generate-rows", type=int)
    ap.add_argument("--judge", default="", help="default: the embedded judge")
    ap.add_argument("--batch-size", type=int, help="logprob: measure this batch size only (default: 8, 16, 32)")
    ap.add_argument("--generate-batch", type=int, help="generate: measure this batch size only (default: 8, 16, 32)")
    ap.add_argument("--max-tokens", type=int, default=RunOptions().max_tokens,
                    help="generate mode reply cap (default: the tool's, RunOptions.max_tokens)")
    ap.add_argument("--threads", type=int, help="torch threads in every run (default: torch's own choice)")
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--no-reuse", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--prompt", default="accuracy", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    if a.mode:  # child process: one run
        print(json.dumps(one(a.mode, a.rows, a.judge, a.batch_size, a.max_tokens, not a.no_reuse, a.prompt)))
        return
    rows = a.rows or (64 if a.quick else 200)
    grows = a.generate_rows or (16 if a.quick else 200)
    batches = (a.batch_size,) if a.batch_size else BATCHES
    gbatches = (a.generate_batch,) if a.generate_batch else GENERATE_BATCHES
    runs = [("logprob", rows, b, False, "accuracy") for b in batches] + [("logprob", rows, 16, True, "accuracy")]
    runs += [("generate", grows, b, False, "accuracy") for b in gbatches]
    runs += [("logprob", rows, 16, False, "accuracy-prefix")]  # for reference: the opt-in layout (docs/prefix_layout.md)
    res: dict[str, dict] = {}
    for mode, n, batch, no_reuse, prompt in runs:
        cmd = [sys.executable, __file__, "--mode", mode, "--rows", str(n), "--judge", a.judge, "--max-tokens", str(a.max_tokens)]
        cmd += (["--batch-size", str(batch)] if batch else []) + (["--no-reuse"] if no_reuse else []) + ["--prompt", prompt]
        cmd += ["--threads", str(a.threads)] if a.threads else []
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        key = f"{mode}_b{r['batch_size']}" + ("_plain" if no_reuse else "") + ("_prefix_layout" if prompt != "accuracy" else "")
        res[key] = r
        print(f"{key:18s} {r['rows']:4d} rows  {r['per_s']:.3f} rows/s  {r['cpu_s_per_row']:.3f} CPU s/row  "
              f"unparsed {r['unparsed']}  tokens out {r['tokens_out']}  peak RSS {r['peak_rss_mb']} MB  "
              f"load {r['loadavg'][0]}->{r['loadavg'][1]}  (model load {r['load_s']} s)", flush=True)
    sweep = {k: v for k, v in res.items() if k.startswith("logprob") and not k.endswith(("_plain", "_layout"))}
    gsweep = {k: v for k, v in res.items() if k.startswith("generate")}
    best = max(sweep, key=lambda k: sweep[k]["per_s"])
    gen = gsweep[max(gsweep, key=lambda k: gsweep[k]["per_s"])]
    from alpagasus import judges

    default = [res.get(f"{m}_b{judges.get(a.judge or None, mode=m).batch_size}") for m in ("logprob", "generate")]
    print(json.dumps({
        "logprob_per_s": sweep[best]["per_s"], "generate_per_s": gen["per_s"],
        "ratio": round(sweep[best]["per_s"] / gen["per_s"], 2),
        "ratio_default_batches": round(default[0]["per_s"] / default[1]["per_s"], 2) if all(default) else None,
        "ratio_cpu": round(gen["cpu_s_per_row"] / sweep[best]["cpu_s_per_row"], 2),
        "logprob_best_batch": sweep[best]["batch_size"],
        "logprob_per_s_by_batch": {v["batch_size"]: v["per_s"] for v in sweep.values()},
        "logprob_plain_b16_per_s": res["logprob_b16_plain"]["per_s"],
        "logprob_prefix_layout_b16_per_s": res["logprob_b16_prefix_layout"]["per_s"],
        "generate_per_s_by_batch": {v["batch_size"]: v["per_s"] for v in gsweep.values()},
        "generate_batch": gen["batch_size"], "generate_max_tokens": a.max_tokens,
        "generate_unparsed": gen["unparsed"], "generate_tokens_out_per_row": round(gen["tokens_out"] / gen["rows"], 1),
        "logprob_peak_rss_mb": sweep[best]["peak_rss_mb"], "generate_peak_rss_mb": gen["peak_rss_mb"],
        "rows": {"logprob": sweep[best]["rows"], "generate": gen["rows"]}, "threads": gen["threads"],
        "loadavg": {k: v["loadavg"] for k, v in res.items()}}))


if __name__ == "__main__":
    main()
