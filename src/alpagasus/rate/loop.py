"""Rating: every example graded by a judge through the engine (engine.py), each reply committed to the store
as it returns. Examples already in the store are never requested again, and when nothing is left the judge
is not even loaded. Replies without a score are asked again (bounded), then stored as `unparsed`.
"""
from __future__ import annotations

import itertools
import re
import sqlite3
import time
from typing import Any, Callable, Iterable, Iterator

from alpagasus.engine import Interrupted, Item, RateOptions, RateSummary, StoreWriteError, run_requests, run_sync
from alpagasus.rate.injection import flags
from alpagasus.judges.base import Judge
from alpagasus.prompts import Template
from alpagasus.prompts.parse import parse_score
from alpagasus.records import Example, InvalidRow, Rating, Request
from alpagasus.store import FINAL, Store

__all__ = ["rate", "rate_async", "pending", "pending_stream", "chunked", "build_request", "reject_too_long", "output_rows", "estimate", "Item", "RateOptions",
           "RateSummary", "StoreWriteError", "Interrupted", "run_requests"]


def build_request(example: Example, template: Template, mode: str) -> Request:
    values = example.fields()
    fence = template.meta.get("fence")  # guarded templates: the data cannot close the tags that delimit it
    if fence:
        values = {k: neutralize_tags(v, fence.split(",")) if isinstance(v, str) else v for k, v in values.items()}
    return Request(key=example.id, system=template.system, user=template.render(values),
                   assistant_prefix=template.logprob_prefix if mode == "logprob" else "",
                   labels=template.labels, example=example)


def neutralize_tags(text: str, tags: list[str]) -> str:
    """`</data>` inside the data becomes `‹/data›`: visible to the judge, but no longer our delimiter."""
    names = "|".join(re.escape(t.strip()) for t in tags if t.strip())
    return re.sub(rf"<(/?\s*(?:{names})\b[^<>]{{0,40}})>", "‹\\1›", text, flags=re.I) if names else text


def pending(examples: Iterable[Example], store: Store, judge_id: str, prompt_version: str,
            retry_unparsed: bool = False) -> tuple[list[Example], int]:
    """Examples not yet rated for good by this judge and prompt, and the count already rated."""
    examples = list(examples)
    final = tuple(s for s in FINAL if not (retry_unparsed and s == "unparsed"))
    done = store.done_ids(judge_id, prompt_version, (e.id for e in examples), final=final)
    return [e for e in examples if e.id not in done], len(done)


def pending_stream(examples: Iterable[Example], store: Store, judge_id: str, prompt_version: str,
                   retry_unparsed: bool = False, summary: RateSummary | None = None,
                   chunk: int = 2000) -> Iterator[Example]:
    """`pending` for streams: the store is asked chunk by chunk; `summary.already_rated` counts the rest."""
    for batch in chunked(examples, chunk):
        todo, done = pending(batch, store, judge_id, prompt_version, retry_unparsed)
        if summary is not None:
            summary.already_rated += done
        yield from todo


def chunked(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for x in items:
        batch.append(x)
        if len(batch) >= n:
            yield batch
            batch = []
    if batch:
        yield batch


def rate(examples: Iterable[Example], judge: Judge, template: Template, store: Store,
         options: RateOptions | None = None, summary: RateSummary | None = None,
         progress: Callable[[RateSummary], None] | None = None) -> RateSummary:
    """Rate `examples` (already deduplicated; a list or a stream) with `judge`; returns the summary.
    Library entry point."""
    return run_sync(rate_async(examples, judge, template, store, options, summary, progress), judge)


async def rate_async(examples: Iterable[Example], judge: Judge, template: Template, store: Store,
                     options: RateOptions | None = None, summary: RateSummary | None = None,
                     progress: Callable[[RateSummary], None] | None = None) -> RateSummary:
    opts = options or RateOptions()
    s = summary or RateSummary()
    s.judge, s.prompt_version = judge.id, template.version
    s.already_rated = s.to_rate = 0
    todo = pending_stream(examples, store, judge.id, template.version, opts.retry_unparsed, s)
    first = next(todo, None)
    if first is None:
        s.unique = s.unique or s.already_rated
        return s  # nothing to do: the judge is never loaded
    judge.load()

    def items() -> Iterator[Item]:  # built as the engine asks for them: flat memory
        for batch in chunked(itertools.chain([first], todo), 500):
            s.to_rate += len(batch)
            built = [Item(e.id, build_request(e, template, judge.mode)) for e in batch]
            for it in built:
                it.request.max_tokens = opts.max_tokens
            yield from reject_too_long(built, judge, store, s, template.version)
        s.unique = s.unique or s.already_rated + s.to_rate

    parse = lambda text: parse_score(text, *template.scale)  # noqa: E731
    return await run_requests(items(), judge, store, template.version, parse, template.scale, opts, s, progress)


def reject_too_long(items: list[Item], judge: Judge, store: Store, s: RateSummary,
                     prompt_version: str) -> list[Item]:
    """Examples longer than the judge's context are stored as invalid_input before any request."""
    limit = judge.max_context
    if not limit:
        return items
    room = limit - (items[0].request.max_tokens if judge.mode == "generate" else 1) if items else limit
    keep, rejected = [], []
    for it in items:
        n = judge.count_tokens(it.request.system + it.request.user) + 16  # + chat markup
        if n > room:
            rejected.append(Rating(it.key, judge.id, prompt_version, None, "invalid_input",
                                   explanation=f"too long for the judge: the prompt has about {n} tokens, the "
                                               f"judge's context allows {room}; not sent",
                                   attempts=0, created_at=time.time()))
        else:
            keep.append(it)
    try:
        store.put_many(rejected)
    except (sqlite3.Error, OSError) as e:
        raise StoreWriteError(f"cannot write the store {store.path}: {e}. Nothing stored was lost; free space "
                              "(or fix the path) and run the same command again to resume") from e
    s.invalid_input += len(rejected)
    return keep


def estimate(examples: Iterable[Example], template: Template, mode: str, count_tokens: Callable[[str], int],
             opts: RateOptions, out_tokens: int = 120) -> dict:
    """What a run would send: requests, tokens and cost (for --dry-run; nothing is sent)."""
    n = tin = 0
    for e in examples:
        n += 1
        tin += count_tokens(template.system + template.render(e.fields())) + 8
    tout = n * (1 if mode == "logprob" else out_tokens)
    cost = None
    if opts.price_in is not None or opts.price_out is not None:
        cost = (tin * (opts.price_in or 0) + tout * (opts.price_out or 0)) / 1e6
    return {"requests": n, "tokens_in": tin, "tokens_out_estimate": tout, "cost": cost}


def output_rows(examples: Iterable[Example], store: Store, judge_id: str, prompt_version: str,
                invalid: Iterable[InvalidRow] = (), summary: RateSummary | None = None) -> Iterable[dict]:
    """The ratings file, a view of the store in input order: example fields + the rating + `flags` (possible
    prompt injection in the data, see flags.py; [] when clean), whatever score the row got."""
    batch: list[Example] = []

    def flush() -> Iterable[dict]:
        got = store.get_many([e.id for e in batch], judge_id, prompt_version)
        for e in batch:
            r = got.get(e.id)
            row = e.fields()
            row.update(id=e.id, row=e.row, score=r.score if r else None, status=r.status if r else "error",
                       judge=judge_id, prompt_version=prompt_version, model=r.model if r else "",
                       explanation=r.explanation if r else "not rated (run interrupted?)",
                       raw=r.raw if r else None, probs=r.probs if r else None, flags=flags(row))
            if summary is not None and row["flags"]:
                summary.flagged += 1
            yield row

    for e in examples:
        batch.append(e)
        if len(batch) >= 1000:
            yield from flush()
            batch = []
    if batch:
        yield from flush()
    for bad in invalid:
        yield {"id": None, "row": bad.row, "field": bad.field, "score": None, "status": "invalid_input",
               "judge": judge_id, "prompt_version": prompt_version, "explanation": bad.reason, "raw": None,
               "flags": []}
