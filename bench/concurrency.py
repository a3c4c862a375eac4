"""Throughput against an API-like server: `alpagasus rate` (sliding window) vs the official AlpaGasus scheme
(fixed batches of 5, bench/batch5_baseline.py), and the tool's throughput against its concurrency.

The server is the instant-reply OpenAI-compatible server (bench/harness.py, its own process) behind the fault
proxy (alpagasus.devtools.faultproxy, its own process) adding only latency, modelled on a hosted API:
lognormal, median 1.0 s, sigma 0.6 (mean 1.20 s, p99 about 4 s, p99.9 about 6.4 s). Every measured run gets a
fresh proxy with the same seed, so the runs draw the same latency sequence in arrival order. Both sides rate
real Alpaca rows (alpaca_random_9k.json) in generate mode (the paper's reply, max_tokens 256) with
byte-identical requests. The tool runs `alpagasus.api.rate_file` (the library call behind `alpagasus rate`:
read the file, rate with a fresh store, write the ratings file); its time is that whole call.

    python bench/concurrency.py --quick     # ~1 min: baseline 60 rows, tool 400 rows, curve ~4x concurrency rows
    python bench/concurrency.py             # ~9 min: both on the same 1,000 rows, curve ~12x concurrency rows

Last line: {"tool_per_s", "batch5_per_s", "ratio", "curve": {concurrency: rows/s}, ...}.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from batch5_baseline import run_baseline  # noqa: E402

MEDIAN_S, SIGMA = 1.0, 0.6
LEVELS = (1, 4, 16, 64, 128, 256)


def rate_with_tool(rows: list[dict], base_url: str, concurrency: int, workdir: Path, tag: str) -> dict:
    """`alpagasus rate --judge openai:instant --base-url URL --concurrency C` on these rows, fresh store."""
    from alpagasus.engine import RunOptions
    from alpagasus.rate import rate_file

    src = workdir / f"{tag}.json"
    src.write_text(json.dumps(rows), encoding="utf-8")
    t0 = time.perf_counter()
    s = rate_file(src, workdir / f"{tag}.ratings.jsonl", judge="openai:instant", mode="generate",
                  judge_options={"base_url": base_url, "concurrency": concurrency},
                  store_path=workdir / f"{tag}.sqlite", options=RunOptions(max_tokens=256))
    wall = time.perf_counter() - t0
    if s.run.ok != len(rows):
        raise RuntimeError(f"the tool rated {s.run.ok} of {len(rows)} rows ok: {s}")
    return {"rows": len(rows), "seconds": round(wall, 3), "per_s": round(len(rows) / wall, 3),
            "engine_s": round(s.run.elapsed_s, 3), "concurrency": concurrency}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rows", type=int, help="tool rows at --concurrency (default 400 quick, 1000 full)")
    ap.add_argument("--baseline-rows", type=int, help="baseline rows, a prefix of those (default 60 quick, = rows full)")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--levels", type=int, nargs="+", default=list(LEVELS))
    ap.add_argument("--per-level", type=int, help="curve rows per unit of concurrency (default 4 quick, 12 full)")
    ap.add_argument("--median", type=float, default=MEDIAN_S, help="latency median (s)")
    ap.add_argument("--sigma", type=float, default=SIGMA, help="latency lognormal sigma")
    ap.add_argument("--plot", default=str(Path(__file__).resolve().parent / "concurrency.png"))
    a = ap.parse_args()
    n_tool = a.rows or (400 if a.quick else 1000)
    n_base = a.baseline_rows or (60 if a.quick else n_tool)
    k = a.per_level or (4 if a.quick else 12)
    pool = harness.alpaca_rows()
    print(f"latency: lognormal median {a.median} s sigma {a.sigma}; {harness.load_avg()}", flush=True)

    with harness.instant_server_process() as (server, _), tempfile.TemporaryDirectory() as d:
        work = Path(d)

        def proxied(fn, rows, *rest):  # a fresh proxy per run: the same seeded latency draws for each
            with harness.latency_proxy_process(server, a.median, a.sigma, seed=0) as (url, _):
                return fn(rows, url, *rest)

        base = proxied(run_baseline, pool[:n_base])
        print(f"official batch-of-5   {base['rows']:5d} rows  {base['seconds']:7.1f} s  {base['per_s']:7.2f} rows/s  "
              f"({harness.load_avg()})", flush=True)
        tool = proxied(rate_with_tool, pool[:n_tool], a.concurrency, work, "main")
        print(f"alpagasus rate c={a.concurrency:<3d} {tool['rows']:5d} rows  {tool['seconds']:7.1f} s  {tool['per_s']:7.2f} "
              f"rows/s  ({harness.load_avg()})", flush=True)
        curve: dict[int, dict] = {}
        for c in a.levels:
            if c == a.concurrency and not a.per_level and n_tool >= c * k:
                curve[c] = tool  # the main run is this point already
            else:
                curve[c] = proxied(rate_with_tool, pool[:max(8, c * k)], c, work, f"c{c}")
            print(f"  concurrency {c:4d}: {curve[c]['rows']:5d} rows  {curve[c]['seconds']:6.1f} s  "
                  f"{curve[c]['per_s']:7.2f} rows/s  (ideal {c / mean_latency(a.median, a.sigma):7.2f}; "
                  f"{harness.load_avg()})", flush=True)

    ratio = tool["per_s"] / base["per_s"]
    print("\nconcurrency  rows  seconds  rows/s  ideal(c/mean latency)")
    for c, r in curve.items():
        print(f"{c:11d} {r['rows']:5d} {r['seconds']:8.1f} {r['per_s']:7.2f} {c / mean_latency(a.median, a.sigma):8.2f}")
    print(f"baseline (batch of 5): {base['per_s']:.2f} rows/s; tool at c={a.concurrency}: {tool['per_s']:.2f} rows/s; "
          f"ratio {ratio:.1f}x")
    plot(curve, base["per_s"], a.median, a.sigma, a.plot)
    print(f"plot: {a.plot}")
    print(json.dumps({"tool_per_s": tool["per_s"], "batch5_per_s": base["per_s"], "ratio": round(ratio, 2),
                      "curve": {str(c): r["per_s"] for c, r in curve.items()}, "tool_rows": tool["rows"],
                      "batch5_rows": base["rows"], "concurrency": a.concurrency,
                      "latency": {"median_s": a.median, "sigma": a.sigma}, "load": harness.load_avg()}))


def mean_latency(median: float, sigma: float) -> float:
    import math

    return median * math.exp(sigma * sigma / 2)


def plot(curve: dict[int, dict], baseline: float, median: float, sigma: float, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cs = sorted(curve)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(cs, [curve[c]["per_s"] for c in cs], "o-", label="alpagasus rate (sliding window)")
    ax.plot(cs, [c / mean_latency(median, sigma) for c in cs], ":", color="gray", label="ideal: concurrency / mean latency")
    ax.axhline(baseline, color="red", ls="--", label=f"official scheme, batches of 5 ({baseline:.2f}/s)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("requests in flight (--concurrency)")
    ax.set_ylabel("rows / second")
    ax.set_title(f"Rating throughput, lognormal API latency (median {median:g} s, sigma {sigma:g})", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
