"""The rating loop: every example graded by a judge, each reply committed to the store as it returns.

A sliding window keeps `judge.concurrency` calls in flight (never fixed batches waiting for their slowest
member); examples already in the store are never requested again, and when nothing is left the judge is not
even loaded. Replies without a score are asked again (bounded), then stored as `unparsed` with the raw text.
"""
from __future__ import annotations

import asyncio
import json
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable

from alpagasus.judges.base import Judge, OutageError
from alpagasus.prompts import Template
from alpagasus.prompts.parse import Parsed, parse_score
from alpagasus.records import Example, InvalidRow, Rating, Reply, Request
from alpagasus.store import FINAL, Store


@dataclass
class RateSummary:
    judge: str = ""
    prompt_version: str = ""
    rows: int = 0                  # rows read from the input
    unique: int = 0                # distinct valid examples
    duplicates: int = 0
    invalid: list[InvalidRow] = field(default_factory=list)
    already_rated: int = 0         # found in the store: not requested again
    to_rate: int = 0
    requests_sent: int = 0
    ok: int = 0
    unparsed: int = 0
    invalid_input: int = 0
    error: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float | None = None
    elapsed_s: float = 0.0

    @property
    def done(self) -> int:
        return self.ok + self.unparsed + self.invalid_input + self.error


@dataclass
class RateOptions:
    max_reasks: int = 2            # extra asks after a reply with no score (generate mode)
    max_attempts: int = 5          # transport failures per item before it is stored as `error`
    retry_unparsed: bool = False   # ask again for items stored as `unparsed` by an earlier run
    price_in: float | None = None  # currency per million input tokens
    price_out: float | None = None
    max_tokens: int = 256          # generate mode: reply length cap
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0


@dataclass
class Item:
    key: str                 # the id the reply is stored under
    request: Request
    attempts: int = 0
    reasks: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    latency_s: float = 0.0


def build_request(example: Example, template: Template, mode: str) -> Request:
    return Request(key=example.id, system=template.system, user=template.render(example.fields()),
                   assistant_prefix=template.logprob_prefix if mode == "logprob" else "",
                   labels=template.labels, example=example)


def pending(examples: Iterable[Example], store: Store, judge_id: str, prompt_version: str,
            retry_unparsed: bool = False) -> tuple[list[Example], int]:
    """Examples not yet rated for good by this judge and prompt, and the count already rated."""
    examples = list(examples)
    final = tuple(s for s in FINAL if not (retry_unparsed and s == "unparsed"))
    done = store.done_ids(judge_id, prompt_version, (e.id for e in examples), final=final)
    return [e for e in examples if e.id not in done], len(done)


def rate(examples: list[Example], judge: Judge, template: Template, store: Store,
         options: RateOptions | None = None, summary: RateSummary | None = None,
         progress: Callable[[RateSummary], None] | None = None) -> RateSummary:
    """Rate `examples` (already deduplicated) with `judge`; returns the summary. Library entry point."""
    return asyncio.run(rate_async(examples, judge, template, store, options, summary, progress))


async def rate_async(examples: list[Example], judge: Judge, template: Template, store: Store,
                     options: RateOptions | None = None, summary: RateSummary | None = None,
                     progress: Callable[[RateSummary], None] | None = None) -> RateSummary:
    opts = options or RateOptions()
    s = summary or RateSummary()
    s.judge, s.prompt_version = judge.id, template.version
    s.unique = s.unique or len(examples)
    todo, s.already_rated = pending(examples, store, judge.id, template.version, opts.retry_unparsed)
    s.to_rate = len(todo)
    if not todo:
        return s  # nothing to do: the judge is never loaded
    judge.load()
    items = [Item(e.id, build_request(e, template, judge.mode)) for e in todo]
    for it in items:
        it.request.max_tokens = opts.max_tokens
    items = _reject_too_long(items, judge, store, s, template.version)
    parse = lambda text: parse_score(text, *template.scale)  # noqa: E731
    return await run_requests(items, judge, store, template.version, parse, template.scale, opts, s, progress)


async def run_requests(items: list[Item], judge: Judge, store: Store, prompt_version: str,
                       parse: Callable[[str | None], Parsed], scale: tuple[float, float],
                       opts: RateOptions, s: RateSummary,
                       progress: Callable[[RateSummary], None] | None = None) -> RateSummary:
    """The judging engine shared by rating and pairwise comparison: a sliding window of judge calls, every
    settled reply committed to the store at once, re-asks and transport retries bounded."""
    t0 = time.perf_counter()
    if getattr(judge, "sort_by_length", False):
        items = sorted(items, key=lambda it: len(it.request.user))  # similar lengths batch with little padding
    queue: deque[list[Item]] = deque(_chunks(items, max(1, judge.batch_size)))
    in_flight: set[asyncio.Task] = set()

    async def call(batch: list[Item], delay: float = 0.0) -> tuple[list[Item], list[Reply]]:
        if delay:
            await asyncio.sleep(delay)
        s.requests_sent += len(batch)
        try:
            replies = await judge.score([it.request for it in batch])
        except OutageError:
            raise
        except Exception as e:  # a backend failure for the whole batch: retried like a transport error
            replies = [Reply(error=f"{type(e).__name__}: {e}") for _ in batch]
        return batch, replies

    while queue or in_flight:
        while queue and len(in_flight) < max(1, judge.concurrency):
            in_flight.add(asyncio.create_task(call(queue.popleft())))
        done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            batch, replies = task.result()
            finished: list[Rating] = []
            for it, rep in zip(batch, replies):
                it.attempts += 1
                it.tokens_in += rep.tokens_in
                it.tokens_out += rep.tokens_out
                it.latency_s += rep.latency_s
                s.tokens_in += rep.tokens_in
                s.tokens_out += rep.tokens_out
                rating, retry_after = _settle(it, rep, judge.id, prompt_version, parse, scale, opts)
                if rating is not None:
                    finished.append(rating)
                elif retry_after is not None:
                    in_flight.add(asyncio.create_task(call([it], retry_after)))
            if finished:
                store.put_many(finished)  # committed now: a crash after this line loses none of them
                for r in finished:
                    setattr(s, r.status, getattr(s, r.status) + 1)
        s.elapsed_s = time.perf_counter() - t0
        s.cost = _cost(s, opts)
        if progress:
            progress(s)
    return s


def _settle(it: Item, rep: Reply, judge_id: str, prompt_version: str, parse: Callable[[str | None], Parsed],
            scale: tuple[float, float], opts: RateOptions) -> tuple[Rating | None, float | None]:
    """A final Rating for this item, or the delay before asking again."""
    base = dict(example_id=it.key, judge=judge_id, prompt_version=prompt_version, model=rep.model,
                tokens_in=it.tokens_in, tokens_out=it.tokens_out, latency_s=it.latency_s, attempts=it.attempts,
                created_at=time.time())
    if rep.error is not None:
        if rep.retryable and it.attempts < opts.max_attempts:
            delay = min(opts.max_backoff_s, opts.backoff_s * 2 ** (it.attempts - 1)) * (0.5 + random.random())
            return None, max(delay, rep.retry_after or 0.0)
        return Rating(score=None, status="error", raw=rep.error, explanation=None, **base), None
    if rep.score is not None:  # the backend computed the score itself (logprob, predictor)
        lo, hi = scale
        if lo <= rep.score <= hi:
            return Rating(score=rep.score, status="ok", probs=rep.probs, raw=rep.text, extra=rep.extra, **base), None
        return Rating(score=None, status="unparsed", probs=rep.probs, raw=str(rep.score), extra=rep.extra,
                      explanation=f"score {rep.score:g} outside the scale {lo:g}-{hi:g}", **base), None
    if rep.text is None:  # logprob mode with no probability on any label
        top = (rep.extra or {}).get("top")
        return Rating(score=None, status="unparsed", probs=rep.probs, raw=json.dumps(top) if top else None,
                      extra=rep.extra,
                      explanation="no probability on the score labels", **base), None
    parsed = parse(rep.text)
    if parsed.score is not None:
        extra = {**(rep.extra or {}), **(parsed.extra or {})} or None
        return Rating(score=parsed.score, status="ok", explanation=parsed.explanation, raw=rep.text,
                      extra=extra, **base), None
    if it.reasks < opts.max_reasks:
        it.reasks += 1
        it.request.temperature = 0.7  # the same greedy request would get the same reply
        return None, 0.0
    return Rating(score=None, status="unparsed", raw=rep.text, explanation=parsed.reason,
                  extra={**(rep.extra or {}), "asks": it.reasks + 1}, **base), None


def _reject_too_long(items: list[Item], judge: Judge, store: Store, s: RateSummary,
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
                                   explanation=f"prompt has about {n} tokens; the judge's context allows {room}",
                                   attempts=0, created_at=time.time()))
        else:
            keep.append(it)
    store.put_many(rejected)
    s.invalid_input += len(rejected)
    return keep


def _chunks(items: list[Item], n: int) -> Iterable[list[Item]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _cost(s: RateSummary, opts: RateOptions) -> float | None:
    if opts.price_in is None and opts.price_out is None:
        return None
    return (s.tokens_in * (opts.price_in or 0) + s.tokens_out * (opts.price_out or 0)) / 1e6


def estimate(examples: list[Example], template: Template, mode: str, count_tokens: Callable[[str], int],
             opts: RateOptions, out_tokens: int = 120) -> dict:
    """What a run would send: requests, tokens and cost (for --dry-run; nothing is sent)."""
    tin = sum(count_tokens(template.system + template.render(e.fields())) + 8 for e in examples)
    tout = len(examples) * (1 if mode == "logprob" else out_tokens)
    cost = None
    if opts.price_in is not None or opts.price_out is not None:
        cost = (tin * (opts.price_in or 0) + tout * (opts.price_out or 0)) / 1e6
    return {"requests": len(examples), "tokens_in": tin, "tokens_out_estimate": tout, "cost": cost}


def output_rows(examples: Iterable[Example], store: Store, judge_id: str, prompt_version: str,
                invalid: Iterable[InvalidRow] = ()) -> Iterable[dict]:
    """The ratings file, a view of the store in input order: example fields + the rating."""
    batch: list[Example] = []

    def flush() -> Iterable[dict]:
        got = store.get_many([e.id for e in batch], judge_id, prompt_version)
        for e in batch:
            r = got.get(e.id)
            row = e.fields()
            row.update(id=e.id, score=r.score if r else None, status=r.status if r else "error",
                       judge=judge_id, prompt_version=prompt_version, model=r.model if r else "",
                       explanation=r.explanation if r else "not rated (run interrupted?)",
                       raw=r.raw if r else None, probs=r.probs if r else None)
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
               "judge": judge_id, "prompt_version": prompt_version, "explanation": bad.reason, "raw": None}
