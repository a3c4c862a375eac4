"""Flat memory: rate and select 1,000,000 rows against the instant-reply server (bench/harness.py), so the
figures are the tool's own cost, not a model's.

    python bench/memory.py              # 1,000,000 rows (about 400 MB of JSONL; long: tens of minutes)
    python bench/memory.py --quick      # 20,000 rows
    python bench/memory.py --rows 200000

The rows are generated from the real Alpaca sample with varied text: each row joins the instruction, input and
output of three different real rows and a row number, so every row is distinct and lengths vary as in Alpaca.
Each step runs the real CLI in its own process (`alpagasus rate` with the `openai:` judge at concurrency 64,
logprob mode; the same command again, which must find nothing to do ("resume": the store remembers that this
command finished and nothing changed since); the same after touching the input ("recheck": every row read and
looked up in the store, the ratings file rewritten); `alpagasus select --threshold 4.5`);
peak RSS is that process's own (wait4), wall time includes start-up.
Last line: {"rows", "rate_peak_rss_mb", "select_peak_rss_mb", "resume_noop_s", ...}.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import alpaca_rows, instant_server_process, load_avg, run_measured  # noqa: E402


def make_rows(path: Path, n: int) -> int:
    """n distinct rows mixing real Alpaca fields; returns the file size in bytes."""
    base = [r for r in alpaca_rows() if r["instruction"].strip() and r["output"].strip()]
    m = len(base)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            a, b, c = base[i % m], base[(i * 7 + 3) % m], base[(i * 13 + 5) % m]
            row = {"instruction": f"{a['instruction']} (#{i})", "input": b["input"], "output": c["output"]}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path.stat().st_size


def alpagasus(*args: str) -> list[str]:
    return [sys.executable, "-c", "from alpagasus.cli import main; main()", *args]


def step(name: str, cmd: list[str], rows: int) -> dict:
    r = run_measured(cmd, env={"OPENAI_API_KEY": "bench"})
    if r["rc"] != 0:
        raise SystemExit(f"{name} failed (rc {r['rc']}):\n{r['stderr'][-3000:]}")
    print(f"{name:8s} {rows:>9,d} rows  {r['wall_s']:8.1f} s  {rows / r['wall_s']:9.0f} rows/s  "
          f"peak RSS {r['peak_rss_mb']:7.1f} MB   ({load_avg()})", flush=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20,000 rows")
    ap.add_argument("--rows", type=int)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--dir", help="working directory (default: a temporary one, removed at the end)")
    a = ap.parse_args()
    n = a.rows or (20_000 if a.quick else 1_000_000)
    with tempfile.TemporaryDirectory(dir=a.dir) as d, instant_server_process() as (url, _):
        d = Path(d)
        size = make_rows(d / "rows.jsonl", n)
        print(f"{n:,d} rows, {size / 1e6:.0f} MB of JSONL; instant server at {url}", flush=True)
        rate = alpagasus("rate", str(d / "rows.jsonl"), "-o", str(d / "ratings.jsonl"), "--judge", "openai:instant",
                         "--base-url", url, "--mode", "logprob", "--concurrency", str(a.concurrency),
                         "--store", str(d / "store.sqlite"))
        first = step("rate", rate, n)
        again = step("resume", rate, n)
        os.utime(d / "rows.jsonl")  # the input looks changed: the rerun must read it all and check the store
        recheck = step("recheck", rate, n)
        sel = step("select", alpagasus("select", str(d / "ratings.jsonl"), "-o", str(d / "selected.jsonl"),
                                       "--threshold", "4.5"), n)
        kept = sum(1 for _ in (d / "selected.jsonl").open())
        rated = sum(1 for line in (d / "ratings.jsonl").open() if '"status": "ok"' in line)
        if rated != n:
            raise SystemExit(f"only {rated} of {n} rows rated ok")
        print(f"kept {kept:,d} of {n:,d} at threshold 4.5")
        print(json.dumps({"rows": n, "rate_peak_rss_mb": round(first["peak_rss_mb"], 1),
                          "select_peak_rss_mb": round(sel["peak_rss_mb"], 1),
                          "resume_noop_s": round(again["wall_s"], 2),
                          "resume_peak_rss_mb": round(again["peak_rss_mb"], 1),
                          "recheck_s": round(recheck["wall_s"], 2), "recheck_peak_rss_mb": round(recheck["peak_rss_mb"], 1),
                          "rate_rows_per_s": round(n / first["wall_s"], 1),
                          "select_rows_per_s": round(n / sel["wall_s"], 1), "kept": kept,
                          "input_mb": round(size / 1e6, 1), "load": load_avg()}))


if __name__ == "__main__":
    main()
