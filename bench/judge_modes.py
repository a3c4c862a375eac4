"""Examples/second of the two scoring modes with the embedded judge on real Alpaca rows, and peak memory.

    python bench/judge_modes.py            # 200 rows logprob, 200 rows generate (slow: ~10 min on 2 cores)
    python bench/judge_modes.py --quick    # 64 rows logprob, 16 rows generate

Each mode runs in its own process (so peak RSS is that mode's), through the real `rate` pipeline with a fresh
store; model loading is excluded from the rate (the converted model is cached after the first load).
Last line: {"logprob_per_s", "generate_per_s", "ratio", ...}.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "alpaca" / "alpaca_random_9k.json"


def one(mode: str, rows: int, judge: str, batch: int | None, max_tokens: int) -> dict:
    from alpagasus import judges
    from alpagasus.data import read_examples
    from alpagasus.prompts import load_template
    from alpagasus.rate import RateOptions, rate
    from alpagasus.store import Store

    src = DATA if DATA.exists() else "sample:alpaca_300"
    examples = read_examples(src, skip_invalid=True).examples[:rows]
    j = judges.get(judge or None, mode=mode, **({"batch_size": batch} if batch else {}))
    t0 = time.perf_counter()
    j.load()
    load_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d, Store(Path(d) / "s.sqlite") as st:
        s = rate(examples, j, load_template("accuracy"), st, RateOptions(max_reasks=0, max_tokens=max_tokens))
    return {"mode": mode, "rows": len(examples), "seconds": round(s.elapsed_s, 2), "per_s": round(len(examples) / s.elapsed_s, 3),
            "ok": s.ok, "unparsed": s.unparsed, "load_s": round(load_s, 1), "batch_size": j.batch_size,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rows", type=int)
    ap.add_argument("--generate-rows", type=int)
    ap.add_argument("--judge", default="", help="default: the embedded judge")
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--max-tokens", type=int, default=128, help="generate mode reply cap (score + explanation)")
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.mode:  # child process: one mode
        print(json.dumps(one(a.mode, a.rows, a.judge, a.batch_size, a.max_tokens)))
        return
    rows = a.rows or (64 if a.quick else 200)
    grows = a.generate_rows or (16 if a.quick else 200)
    res = {}
    for mode, n in (("logprob", rows), ("generate", grows)):
        cmd = [sys.executable, __file__, "--mode", mode, "--rows", str(n), "--judge", a.judge,
               "--max-tokens", str(a.max_tokens)] + (["--batch-size", str(a.batch_size)] if a.batch_size else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        res[mode] = json.loads(out)
        print(f"{mode:9s} {res[mode]['rows']:4d} rows  {res[mode]['per_s']:.3f} rows/s  batch {res[mode]['batch_size']}  "
              f"unparsed {res[mode]['unparsed']}  peak RSS {res[mode]['peak_rss_mb']} MB  (load {res[mode]['load_s']} s)")
    ratio = res["logprob"]["per_s"] / res["generate"]["per_s"]
    print(json.dumps({"logprob_per_s": res["logprob"]["per_s"], "generate_per_s": res["generate"]["per_s"],
                      "ratio": round(ratio, 2), "logprob_peak_rss_mb": res["logprob"]["peak_rss_mb"],
                      "generate_peak_rss_mb": res["generate"]["peak_rss_mb"],
                      "generate_unparsed": res["generate"]["unparsed"]}))


if __name__ == "__main__":
    main()
