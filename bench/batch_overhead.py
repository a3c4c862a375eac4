"""Batch overhead: rows/s through `alpagasus serve` with `--batch` against direct requests, same model, same rows.

`alpagasus serve` runs in its own process over a local model (default the embedded SmolLM2-135M, one request at
a time, as it always does); the same rows of the bundled Alpaca sample are rated twice through the real
`rate_file`, each with a fresh store: directly (`--concurrency 4`, the sliding window) and with `--batch` (one
file, one batch, polled every `--poll` s, the output file read back). The model's compute is the same in both;
the difference is the batch machinery: upload, the server's background run, polling, the download, and
settling from the file. Passes alternate direct, batch, batch, direct... so drift on a shared machine cancels;
the figures are the medians of the passes.
Logprob mode with the label-mass floor off (`--min-label-mass 0`): one token per row, the cheapest request,
so the overhead shows most.

    python bench/batch_overhead.py --quick     # 24 rows, 1 pass each (~1-2 min on a busy 2-core box)
    python bench/batch_overhead.py             # 100 rows, 2 passes each
    python bench/batch_overhead.py --rows 40 --passes 3   # what RESULTS.md reports

    python bench/batch_overhead.py --label-mass   # the label mass of logprob replies (40 rows, no floor)

`bench/cost.py` may call `batch_overhead(...)` (or `label_mass_check(...)`); the last line printed is its JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(model: str, threads: int) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "alpagasus.cli", "serve", "--model", model, "--port", str(port),
                             "--name", "bench"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/models", timeout=1)
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"alpagasus serve exited with {proc.returncode}")
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("alpagasus serve did not start")


def _one(url: str, rows: int, batch: bool, poll: float, workdir: Path) -> dict[str, Any]:
    from alpagasus.engine import RunOptions
    from alpagasus.rate import rate_file

    tag = f"{'batch' if batch else 'direct'}-{time.monotonic_ns()}"
    opts = RunOptions(batch=batch, batch_poll_s=poll, min_label_mass=0.0)
    t0 = time.perf_counter()
    s = rate_file("sample:alpaca_300", workdir / f"{tag}.jsonl", judge="openai:bench", mode="logprob", limit=rows,
                  judge_options={"base_url": url, "concurrency": 4}, store_path=workdir / f"{tag}.sqlite",
                  options=opts)
    wall = time.perf_counter() - t0
    done = s.run.ok + s.run.unparsed
    if done != s.run.to_judge or s.run.error:
        raise RuntimeError(f"{tag}: {done} of {s.run.to_judge} rated, {s.run.error} errors")
    return {"wall_s": wall, "rows": done, "batches": s.run.batches}


def batch_overhead(model: str = "embedded:smollm2", rows: int = 100, passes: int = 2, poll: float = 0.5,
                   threads: int = 1) -> dict[str, Any]:
    """Rows/s of direct requests and of --batch through one `alpagasus serve` process; the ratio and the
    seconds per run the batch machinery adds."""
    proc, url = _serve(model, threads)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            _one(url, 2, False, poll, work)  # warm-up: the server's first forward passes
            runs: dict[str, list[float]] = {"direct": [], "batch": []}
            order = [False, True, True, False] * passes
            for batch in order[:2 * passes]:
                r = _one(url, rows, batch, poll, work)
                runs["batch" if batch else "direct"].append(r["wall_s"])
    finally:
        proc.terminate()
        proc.wait(30)
    # medians: on a shared machine one run can be slowed 2x by other jobs
    direct, batch = statistics.median(runs["direct"]), statistics.median(runs["batch"])
    return {"model": model, "rows": rows, "passes": passes, "poll_s": poll,
            "direct_rows_per_s": round(rows / direct, 3), "batch_rows_per_s": round(rows / batch, 3),
            "batch_vs_direct": round(direct / batch, 3), "batch_extra_s_per_run": round(batch - direct, 2),
            "direct_wall_s": [round(x, 2) for x in runs["direct"]], "batch_wall_s": [round(x, 2) for x in runs["batch"]],
            "load_avg": os.getloadavg()[0]}


def label_mass_check(model: str = "embedded:smollm2", rows: int = 40, threads: int = 1) -> dict[str, Any]:
    """The issue's logprob case: the `openai:` judge in logprob mode through `alpagasus serve`, no label-mass
    floor: how much probability the score labels held (what --min-label-mass's default 0.5 acts on)."""
    from alpagasus.engine import RunOptions
    from alpagasus.rate import rate_file

    proc, url = _serve(model, threads)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "o.jsonl"
            rate_file("sample:alpaca_300", out, judge="openai:bench", mode="logprob", limit=rows,
                      judge_options={"base_url": url}, store_path=Path(tmp) / "s.sqlite",
                      options=RunOptions(min_label_mass=0.0))
            got = [json.loads(x) for x in out.read_text().splitlines()]
    finally:
        proc.terminate()
        proc.wait(30)
    mass = sorted(r["label_mass"] for r in got if r.get("label_mass") is not None)
    return {"model": model, "rows": len(got), "scored": sum(r["score"] is not None for r in got),
            "median_label_mass": round(statistics.median(mass), 4), "max_label_mass": round(mass[-1], 4),
            "under_0.5": sum(m < 0.5 for m in mass)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model", default="embedded:smollm2")
    ap.add_argument("--rows", type=int)
    ap.add_argument("--passes", type=int, help="runs of each (alternating); default 1 quick, 2 full")
    ap.add_argument("--poll", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    ap.add_argument("--label-mass", action="store_true", help="measure the label mass of logprob replies instead")
    a = ap.parse_args()
    if a.label_mass:
        print(json.dumps(label_mass_check(a.model, a.rows or 40, a.threads)))
        return
    rows = a.rows or (24 if a.quick else 100)
    r = batch_overhead(a.model, rows, a.passes or (1 if a.quick else 2), a.poll, a.threads)
    print(f"{r['rows']} rows through alpagasus serve ({r['model']}, logprob): direct {r['direct_rows_per_s']} rows/s, "
          f"--batch {r['batch_rows_per_s']} rows/s ({r['batch_vs_direct']}x direct; +{r['batch_extra_s_per_run']} s "
          f"per run, poll {r['poll_s']} s), load {r['load_avg']:.1f}")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
