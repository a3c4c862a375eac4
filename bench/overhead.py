"""Pipeline overhead: `alpagasus rate` end to end vs the bare backend calls on the same rows, same model, same
batch size.

1. Embedded judge (`embedded:smollm2`, logprob mode, the issue's figure). The bare path builds the same prompts
   and calls the judge's `score_sync` batch after batch, in the order the engine uses (sorted by length), with
   no store, no engine, no files, from one worker thread as the engine does (`--bare-thread main` calls it from
   the main thread, which on this oversubscribed machine costs the same forward passes up to 2x the CPU). The
   tool path is `alpagasus.api.rate_file` (read the file, validate, rate with a fresh store, write the ratings
   file). Both use one judge object, loaded once before any timing: model loading is EXCLUDED from both (the
   tool gets the loaded judge through `judges.register`, see harness.preloaded_judge). A warm-up batch runs
   first; then the passes alternate A B B A ... so that drift on a shared machine cancels.
   overhead_fraction = (tool - bare) / bare on the mean wall times; overhead_fraction_cpu the same on this
   process's CPU time (all threads), which other jobs on the machine disturb far less.
2. Instant server (`openai:instant` judge, logprob mode, concurrency 64, bench/harness.py's server in its own
   process): the backend is nearly free, so this is the tool's own cost per row (ms) against a bare
   `openai` client loop with the same window of requests in flight. Three bare loops: `client.post` (the call
   the judge makes) on as many clients as the judge spreads its requests over (the like-for-like baseline:
   tool_own_ms_per_row is against it), the same on one client, and `client.chat.completions.create` (the
   typed call most code uses) on one client.

    python bench/overhead.py --quick    # ~1.5 min: 48 rows embedded (1 pass each), 2,000 rows instant
    python bench/overhead.py            # 200 rows embedded (2 passes each; ~7 min at 2 rows/s, ~25 min on a
                                        # busy 2-core box), 5,000 rows instant

Last line: {"overhead_fraction", ...} (overhead_fraction is the embedded-judge figure).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402


def order(passes: int) -> list[str]:
    """A B B A A B ...: each side first as often as second."""
    return [x for i in range(passes) for x in (("bare", "tool") if i % 2 == 0 else ("tool", "bare"))]


def requests_for(rows: list[dict], template: Any, mode: str) -> list[Any]:
    from alpagasus.records import Request

    return [Request(key=str(i), system=template.system, user=template.render(r),
                    assistant_prefix=template.logprob_prefix if mode == "logprob" else "", labels=template.labels)
            for i, r in enumerate(rows)]


# ---- 1. the embedded judge ---------------------------------------------------------------------------------
def embedded(rows: list[dict], judge_spec: str, batch: int, passes: int, work: Path, threads: int | None,
             bare_thread: str = "worker") -> dict:
    import torch

    from alpagasus import judges
    from alpagasus.rate import rate_file
    from alpagasus.prompts import load_template

    if threads:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    template = load_template("accuracy")
    j = judges.get(judge_spec, mode="logprob", batch_size=batch)
    t0 = time.perf_counter()
    j.load()
    load_s = time.perf_counter() - t0
    harness.PRELOADED["bench"] = j
    judges.register("preloaded", "harness:preloaded_judge")
    j.score_sync(requests_for(rows[:batch], template, "logprob"))  # warm-up: allocator, prefix cache
    src = work / "embedded.json"
    src.write_text(json.dumps(rows), encoding="utf-8")

    # the engine runs score_sync in a worker thread (LocalJudge.score -> asyncio.to_thread); the bare loop does
    # too, by default: on this oversubscribed 2-core machine the same forward passes cost about 2x the CPU
    # when called from the main thread (OpenMP), which would credit the tool with a difference not its own
    worker = ThreadPoolExecutor(1) if bare_thread == "worker" else None

    def bare() -> list[float]:
        reqs = sorted(requests_for(rows, template, "logprob"), key=lambda r: len(r.user))  # the engine's order
        scores: dict[str, float] = {}
        for i in range(0, len(reqs), batch):
            part = reqs[i:i + batch]
            replies = worker.submit(j.score_sync, part).result() if worker else j.score_sync(part)
            for r, rep in zip(part, replies):
                scores[r.key] = rep.score
        return [scores[str(i)] for i in range(len(rows))]

    def tool(k: int) -> list[float]:
        out = work / f"embedded{k}.jsonl"
        s = rate_file(src, out, judge="preloaded:bench", mode="logprob", judge_options={"batch_size": batch},
                      store_path=work / f"embedded{k}.sqlite")
        assert s.run.ok == len(rows), f"the tool rated {s.run.ok} of {len(rows)} rows ok"
        return [json.loads(line)["score"] for line in out.read_text().splitlines()]

    wall: dict[str, list[float]] = {"bare": [], "tool": []}
    cpu: dict[str, list[float]] = {"bare": [], "tool": []}
    scores: dict[str, list[float]] = {}
    for k, side in enumerate(order(passes)):
        t, c = time.perf_counter(), time.process_time()  # process time: all threads of this process
        sc = bare() if side == "bare" else tool(k)
        wall[side].append(time.perf_counter() - t)
        cpu[side].append(time.process_time() - c)
        scores.setdefault(side, sc)
        print(f"  embedded {side:4s} {len(rows)} rows  {wall[side][-1]:7.2f} s  {len(rows) / wall[side][-1]:6.3f} rows/s  "
              f"cpu {cpu[side][-1]:7.2f} s  ({harness.load_avg()})", flush=True)
    bare_s, tool_s = statistics.mean(wall["bare"]), statistics.mean(wall["tool"])
    bare_c, tool_c = statistics.mean(cpu["bare"]), statistics.mean(cpu["tool"])
    diff = max(abs(a - b) for a, b in zip(scores["bare"], scores["tool"]))
    return {"rows": len(rows), "batch_size": batch, "judge": j.id, "load_s": round(load_s, 1),
            "torch_threads": threads, "bare_thread": bare_thread, "bare_s": [round(x, 3) for x in wall["bare"]],
            "tool_s": [round(x, 3) for x in wall["tool"]], "bare_cpu_s": [round(x, 3) for x in cpu["bare"]],
            "tool_cpu_s": [round(x, 3) for x in cpu["tool"]],
            "bare_per_s": round(len(rows) / bare_s, 3), "tool_per_s": round(len(rows) / tool_s, 3),
            "overhead_fraction": round((tool_s - bare_s) / bare_s, 4),
            "overhead_fraction_cpu": round((tool_c - bare_c) / bare_c, 4), "max_score_diff": diff}


# ---- 2. the instant server ----------------------------------------------------------------------------------
async def bare_openai(rows: list[dict], url: str, concurrency: int, typed: bool,
                      clients: int = 1) -> list[float | None]:
    """The same requests as the `openai:` judge in logprob mode, `concurrency` in flight, expected score read
    from the first token's top log-probabilities; nothing stored. `clients` > 1: the workers share that many
    clients (connection pools) in turn, as the judge does."""
    from openai import AsyncOpenAI

    from alpagasus.prompts import load_template

    template = load_template("accuracy")
    pool = [AsyncOpenAI(base_url=url, api_key="not-needed", max_retries=0) for _ in range(clients)]
    out: list[float | None] = [None] * len(rows)
    todo = iter(enumerate(rows))

    async def worker(client: Any) -> None:
        for i, row in todo:
            kw = {"model": "instant", "temperature": 0.0, "max_tokens": 1, "logprobs": True, "top_logprobs": 20,
                  "messages": [{"role": "system", "content": template.system},
                               {"role": "user", "content": template.render(row)}]}
            if typed:
                resp = await client.chat.completions.create(**kw)
                tops = [(t.token, t.logprob) for t in resp.choices[0].logprobs.content[0].top_logprobs]
            else:
                resp = await client.post("/chat/completions", body=kw, cast_to=object)
                tops = [(t["token"], t["logprob"]) for t in resp["choices"][0]["logprobs"]["content"][0]["top_logprobs"]]
            p = {t.strip(): math.exp(lp) for t, lp in tops if t.strip() in template.labels}
            out[i] = sum(float(k) * v for k, v in p.items()) / sum(p.values()) if p else None

    try:
        await asyncio.gather(*(worker(pool[k % clients]) for k in range(concurrency)))
    finally:
        for client in pool:
            await client.close()
    return out


def instant(rows: list[dict], concurrency: int, passes: int, work: Path) -> dict:
    from alpagasus.rate import rate_file

    src = work / "instant.json"
    src.write_text(json.dumps(rows), encoding="utf-8")
    from alpagasus.judges.openai_compat import OpenAIJudge

    # the judge spreads its requests over one client per `per_client` in flight (fewer connections per pool)
    shards = max(1, -(-concurrency // getattr(OpenAIJudge, "per_client", concurrency)))
    times: dict[str, list[float]] = {"tool": [], "bare": [], "bare_typed": [], "bare_sharded": []}
    with harness.instant_server_process() as (url, _):
        asyncio.run(bare_openai(rows[:200], url, concurrency, typed=True))  # warm-up: imports, connections
        for k, side in enumerate(order(passes)):
            for s in ([side, "bare_typed", "bare_sharded"] if side == "bare" else [side]):
                t = time.perf_counter()
                if s == "tool":
                    summ = rate_file(src, work / f"instant{k}.jsonl", judge="openai:instant", mode="logprob",
                                     judge_options={"base_url": url, "concurrency": concurrency},
                                     store_path=work / f"instant{k}.sqlite")
                    assert summ.run.ok == len(rows), f"the tool rated {summ.run.ok} of {len(rows)} rows ok"
                else:
                    scores = asyncio.run(bare_openai(rows, url, concurrency, typed=s == "bare_typed",
                                                     clients=shards if s == "bare_sharded" else 1))
                    assert None not in scores
                wall = time.perf_counter() - t
                times[s].append(wall)
                print(f"  instant  {s:12s} {len(rows)} rows  {wall:6.2f} s  {1000 * wall / len(rows):6.3f} ms/row  "
                      f"{len(rows) / wall:7.1f} rows/s  ({harness.load_avg()})", flush=True)
    ms = {s: 1000 * statistics.mean(v) / len(rows) for s, v in times.items()}
    return {"rows": len(rows), "concurrency": concurrency, "tool_ms_per_row": round(ms["tool"], 3),
            "bare_post_ms_per_row": round(ms["bare"], 3), "bare_typed_ms_per_row": round(ms["bare_typed"], 3),
            "bare_sharded_ms_per_row": round(ms["bare_sharded"], 3), "clients": shards,
            "tool_own_ms_per_row": round(ms["tool"] - ms["bare_sharded"], 3),
            "overhead_fraction_vs_sharded": round(ms["tool"] / ms["bare_sharded"] - 1, 4),
            "overhead_fraction_vs_post": round(ms["tool"] / ms["bare"] - 1, 4),
            "overhead_fraction_vs_typed": round(ms["tool"] / ms["bare_typed"] - 1, 4),
            "tool_per_s": round(1000 / ms["tool"], 1), "bare_post_per_s": round(1000 / ms["bare"], 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rows", type=int, help="embedded-judge rows (default 48 quick, 200 full)")
    ap.add_argument("--passes", type=int, help="passes per side, alternated (default 1 quick, 2 full)")
    ap.add_argument("--judge", default="embedded:smollm2", help="embedded:NAME or hf:MODEL (logprob mode)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's own, one per core)")
    ap.add_argument("--bare-thread", choices=("worker", "main"), default="worker",
                    help="where the bare loop calls score_sync: a worker thread like the engine (default) or the main thread")
    ap.add_argument("--instant-rows", type=int, help="rows against the instant server (default 2000 quick, 5000 full)")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--skip-embedded", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    rows = a.rows or (48 if a.quick else 200)
    passes = a.passes or (1 if a.quick else 2)
    n_instant = a.instant_rows or (2000 if a.quick else 5000)
    print(harness.load_avg(), flush=True)
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        print(f"instant server, openai judge, logprob, concurrency {a.concurrency}:", flush=True)
        inst = instant(harness.alpaca_rows(n_instant), a.concurrency, passes, work)
        emb = None
        if not a.skip_embedded:
            print(f"{a.judge}, logprob, batch {a.batch_size} (model load excluded from both):", flush=True)
            emb = embedded(harness.alpaca_rows(rows), a.judge, a.batch_size, passes, work, a.threads, a.bare_thread)
    print()
    if emb:
        print(f"embedded: bare {emb['bare_per_s']} rows/s, tool {emb['tool_per_s']} rows/s, overhead "
              f"{100 * emb['overhead_fraction']:.1f}% of the backend's wall time, {100 * emb['overhead_fraction_cpu']:.1f}% of "
              f"its CPU time (max score difference {emb['max_score_diff']:.2g})")
    print(f"instant:  tool {inst['tool_ms_per_row']} ms/row vs bare loops: client.post on {inst['clients']} clients like "
          f"the judge {inst['bare_sharded_ms_per_row']}, client.post on one client {inst['bare_post_ms_per_row']}, typed "
          f"create {inst['bare_typed_ms_per_row']} ms/row: the tool's own cost {inst['tool_own_ms_per_row']} ms/row "
          f"({100 * inst['overhead_fraction_vs_sharded']:.0f}%)")
    print(json.dumps({"overhead_fraction": emb["overhead_fraction"] if emb else None, "embedded": emb,
                      "instant": inst, "load": harness.load_avg()}))


if __name__ == "__main__":
    main()
