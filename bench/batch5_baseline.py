"""The official AlpaGasus rating scheme, as a baseline for bench/concurrency.py.

The paper's code (github.com/gpt4life/alpagasus, rating/chatgpt_rating.py, run by rating/rate.sh with
`--batch_size 5`) rates the rows in fixed batches: for each slice of 5 it calls `asyncio.run` on an
`asyncio.gather` of 5 chat completions (`openai.ChatCompletion.acreate`, temperature 0, top_p 1, max_tokens
256), so every batch waits for its slowest request before the next one starts; on any exception it sleeps
10 s (doubling) and sends the whole batch again. Here the same loop with the modern client: one
`AsyncOpenAI` per `asyncio.run` (a client's connection pool belongs to the event loop that made it, as the
old `acreate` opened its own aiohttp session per call), max_retries=0 (the loop's own retry is the scheme's).
The prompts are the tool's built-in `accuracy` template, which is the paper's text verbatim, so the two
sides send byte-identical requests.

    python bench/batch5_baseline.py --base-url http://127.0.0.1:9000/v1 --rows 100 [-o reviews.json]

Last line: {"rows", "seconds", "per_s", "batch_size", "parsed"}.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def messages_for(rows: list[dict]) -> list[list[dict[str, str]]]:
    """The paper's two messages per row: its system prompt, then the triplet followed by the rating request."""
    from alpagasus.prompts import load_template

    t = load_template("accuracy")
    return [[{"role": "system", "content": t.system},
             {"role": "user", "content": t.render({"instruction": r.get("instruction", ""),
                                                   "input": r.get("input", ""), "output": r.get("output", "")})}]
            for r in rows]


async def dispatch_openai_requests(messages_list: list[list[dict]], model: str, temperature: float,
                                   max_tokens: int, top_p: float, base_url: str, api_key: str) -> list[Any]:
    """One batch: all requests at once, returned when the slowest has answered (the official function)."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0)
    try:
        return await asyncio.gather(*(client.chat.completions.create(model=model, messages=m, temperature=temperature,
                                                                     max_tokens=max_tokens, top_p=top_p)
                                      for m in messages_list))
    finally:
        await client.close()


def parse_score(review: str) -> float:
    """The official parser: the first line as a number, else after 'score:'/'Score:', else -1."""
    try:
        return float(review.split("\n")[0])
    except ValueError:
        for key in ("score:", "Score:"):
            if key in review:
                try:
                    return float(review.split(key)[1].strip().split("\n")[0])
                except ValueError:
                    break
        return -1.0


def run_baseline(rows: list[dict], base_url: str, model: str = "instant", batch_size: int = 5,
                 max_tokens: int = 256, api_key: str = "not-needed") -> dict:
    """Rate `rows` the official way; returns timings and the reviews."""
    message_list = messages_for(rows)
    predictions: list[Any] = []
    i, wait_base, retries = 0, 10, 0
    t0 = time.perf_counter()
    while i < len(message_list):
        try:
            predictions += asyncio.run(dispatch_openai_requests(message_list[i:i + batch_size], model, 0.0,
                                                                max_tokens, 1.0, base_url, api_key))
            i += batch_size
            wait_base = 10
        except Exception as e:  # the official loop retries the whole batch on any exception
            retries += 1
            print(f"batch error at {i}: {type(e).__name__}: {e}; retry {retries} in {wait_base} s", file=sys.stderr)
            time.sleep(wait_base)
            wait_base *= 2
    seconds = time.perf_counter() - t0
    reviews = [p.choices[0].message.content or "" for p in predictions]
    scores = [parse_score(r) for r in reviews]
    return {"rows": len(rows), "seconds": round(seconds, 3), "per_s": round(len(rows) / seconds, 3),
            "batch_size": batch_size, "parsed": sum(s >= 0 for s in scores), "retries": retries,
            "reviews": reviews, "scores": scores}


def main() -> None:
    import harness

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base-url", required=True, help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:9000/v1")
    ap.add_argument("--model", default="instant")
    ap.add_argument("--rows", type=int, default=100, help="the first N rows of the real Alpaca sample")
    ap.add_argument("--batch-size", type=int, default=5, help="the official default (rate.sh)")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("-o", "--output", help="write [{triplet, review, score}] here, as the official script does")
    a = ap.parse_args()
    rows = harness.alpaca_rows(a.rows)
    res = run_baseline(rows, a.base_url, a.model, a.batch_size, a.max_tokens)
    if a.output:
        msgs = messages_for(rows)
        Path(a.output).write_text(json.dumps([{"triplet": m[1]["content"], "review": r, "score": s} for m, r, s
                                              in zip(msgs, res["reviews"], res["scores"])], indent=2))
    print(f"batch-of-{a.batch_size} baseline: {res['rows']} rows in {res['seconds']:.1f} s = {res['per_s']:.2f} rows/s "
          f"({harness.load_avg()})")
    print(json.dumps({k: v for k, v in res.items() if k not in ("reviews", "scores")}))


if __name__ == "__main__":
    main()
