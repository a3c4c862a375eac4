"""The IFD judge (ifd:embedded:smollm2 by default) on real Alpaca rows through the real `rate` pipeline.

    python bench/ifd.py [--quick] [--rows N] [--judge ifd:...] [--threads T]

Rates the first --rows rows of the 9k Alpaca sample into a fresh store (model load included in the wall time,
as a user sees it), then prints rows/s, CPU seconds a row, peak RSS, the IFD distribution (share >= 1,
quantiles), how many rows were cut to the window, and how far the loss ratio (Cherry) and the perplexity
ratio (Superfiltering's code) agree on the top 15% of the rows below 1. The last line is one JSON object.
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="50 rows")
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--judge", default="ifd:embedded:smollm2")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is polite on a shared machine)")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    from alpagasus.rate import rate_file

    n = 50 if a.quick else a.rows
    rows = json.loads((SHARED / "alpaca" / "alpaca_random_9k.json").read_text())[:n]
    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "rows.json", Path(tmp) / "ratings.jsonl"
        data.write_text(json.dumps(rows))
        t0, c0, load0 = time.perf_counter(), time.process_time(), os.getloadavg()[0]
        s = rate_file(data, out, judge=a.judge, store_path=Path(tmp) / "store.sqlite")
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        got = [json.loads(line) for line in out.read_text().splitlines()]
    ok = [g for g in got if g["status"] == "ok"]
    v = sorted(g["ifd"]["ifd"] for g in ok)
    below = [g for g in ok if not g["ifd"]["ifd_ge_1"]]
    k = max(1, round(0.15 * len(below)))
    top = [{g["id"] for g in sorted(below, key=lambda g: -g["ifd"][key])[:k]} for key in ("ifd", "ppl_ratio")]
    res = {"judge": s.judge, "rows": len(got), "ok": len(ok), "seconds": round(secs, 1),
           "rows_per_s": round(len(got) / secs, 3), "cpu_s_per_row": round(cpu / len(got), 3),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
           "threads": a.threads, "loadavg_1min": [round(load0, 2), round(os.getloadavg()[0], 2)],
           "share_ifd_ge_1": round(sum(g["ifd"]["ifd_ge_1"] for g in ok) / max(1, len(ok)), 4),
           "ifd_quantiles": {q: round(v[int(q * (len(v) - 1))], 4) for q in (0, 0.1, 0.25, 0.5, 0.75, 0.9, 1)},
           "truncated": sum("truncated" in g["ifd"] for g in ok),
           "mean_response_tokens": round(sum(g["ifd"]["response_tokens"] for g in ok) / max(1, len(ok)), 1),
           "top15_loss_vs_ppl_overlap": round(len(top[0] & top[1]) / k, 3)}
    print(f"{res['rows']} rows, {res['ok']} ok in {res['seconds']} s: {res['rows_per_s']} rows/s, "
          f"{res['cpu_s_per_row']} CPU s/row, peak RSS {res['peak_rss_mb']} MB, load {res['loadavg_1min']}")
    print(f"IFD >= 1: {res['share_ifd_ge_1']:.1%}; quantiles {res['ifd_quantiles']}; truncated {res['truncated']}")
    print(f"top 15% below 1, loss ratio vs perplexity ratio: {res['top15_loss_vs_ppl_overlap']:.0%} the same rows")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
