"""The judging engine shared by rating and pairwise comparison.

A sliding window keeps `judge.concurrency` calls in flight (never fixed batches that wait for their slowest
member). Each reply is settled and committed to the store inside the task that received it, so whatever
was received is stored even if the run is interrupted a moment later. Unparsable replies are asked again
(bounded), transport failures retried with backoff (never before the server's Retry-After), and an outage
(server unreachable, or asking us to wait longer than our own backoff cap) pauses the whole run instead of
failing items; attempts made during an outage are not charged to the items.
"""
from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable

from alpagasus.judges.base import Judge, OutageError
from alpagasus.prompts.parse import Parsed
from alpagasus.records import InvalidRow, Rating, Reply, Request
from alpagasus.store import Store


class StoreWriteError(RuntimeError):
    """The store could not be written (disk full...): the run stops; what was stored is intact."""


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
    outage_s: float = 0.0          # time spent paused because the judge was unreachable
    ambiguous: int = 0             # attempts that timed out and may have reached the server

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
    max_backoff_s: float = 60.0    # a Retry-After longer than this is treated as an outage (pause)
    max_outage_s: float = 3600.0   # give up (resumably) after the judge is unreachable this long
    outage_after: int = 8          # this many failures in a row, across items, mean the server is down


@dataclass
class Item:
    key: str                 # the id the reply is stored under
    request: Request
    attempts: int = 0
    reasks: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    latency_s: float = 0.0


async def run_requests(items: list[Item], judge: Judge, store: Store, prompt_version: str,
                       parse: Callable[[str | None], Parsed], scale: tuple[float, float],
                       opts: RateOptions, s: RateSummary,
                       progress: Callable[[RateSummary], None] | None = None) -> RateSummary:
    """Judge every item; returns the summary. Raises OutageError / StoreWriteError (resumable) when it must stop."""
    return await _Engine(judge, store, prompt_version, parse, scale, opts, s, progress).run(items)


class _Engine:
    def __init__(self, judge, store, prompt_version, parse, scale, opts, s, progress):
        self.judge, self.store, self.pv, self.parse, self.scale = judge, store, prompt_version, parse, scale
        self.opts, self.s, self.progress = opts, s, progress
        self.queue: deque[tuple[list[Item], float]] = deque()  # (batch, not before this monotonic time)
        self.resume_at = 0.0
        self.outage_since: float | None = None
        self.outage_pause = 1.0
        self.fatal: BaseException | None = None
        self.failures_in_a_row = 0

    async def run(self, items: list[Item]) -> RateSummary:
        t0 = time.perf_counter()
        if getattr(self.judge, "sort_by_length", False):
            items = sorted(items, key=lambda it: len(it.request.user))  # similar lengths pad little
        self.queue.extend((b, 0.0) for b in _chunks(items, max(1, self.judge.batch_size)))
        in_flight: set[asyncio.Task] = set()
        try:
            while self.queue or in_flight:
                now = time.monotonic()
                if now < self.resume_at and not in_flight:
                    await asyncio.sleep(min(self.resume_at - now, 1.0))
                    continue
                while self.queue and len(in_flight) < max(1, self.judge.concurrency) and now >= self.resume_at:
                    batch, not_before = self.queue.popleft()
                    in_flight.add(asyncio.create_task(self.call(batch, max(0.0, not_before - now))))
                if not in_flight:
                    continue
                _, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED, timeout=1.0)
                if self.fatal:
                    raise self.fatal
                self.s.elapsed_s = time.perf_counter() - t0
                self.s.cost = _cost(self.s, self.opts)
                if self.progress:
                    self.progress(self.s)
        finally:
            for t in in_flight:
                t.cancel()
        self.s.elapsed_s = time.perf_counter() - t0
        return self.s

    async def call(self, batch: list[Item], delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        self.s.requests_sent += len(batch)
        try:
            replies = await self.judge.score([it.request for it in batch])
        except OutageError as e:
            replies = [Reply(error=str(e), outage=True) for _ in batch]
        except Exception as e:  # a backend failure for the whole batch: retried like a transport error
            replies = [Reply(error=f"{type(e).__name__}: {e}") for _ in batch]
        finished: list[Rating] = []
        for it, rep in zip(batch, replies):
            failing = rep.error is not None and rep.retryable
            self.failures_in_a_row = self.failures_in_a_row + 1 if failing else 0
            if failing and (rep.outage or (rep.retry_after or 0) > self.opts.max_backoff_s
                            or self.failures_in_a_row > self.opts.outage_after):
                self._pause(rep)
                self.queue.appendleft(([it], 0.0))  # not charged to the item: the server is away
                continue
            if not failing:
                self.outage_since, self.outage_pause = None, 1.0
            it.attempts += 1
            for attr in ("tokens_in", "tokens_out", "latency_s"):
                setattr(it, attr, getattr(it, attr) + getattr(rep, attr))
            self.s.tokens_in += rep.tokens_in
            self.s.tokens_out += rep.tokens_out
            if rep.error is not None and (rep.extra or {}).get("ambiguous"):
                self.s.ambiguous += 1
                self._write(lambda: self.store.log_attempt(it.key, self.judge.id, self.pv, "ambiguous", rep.error))
            rating, retry_after = settle(it, rep, self.judge.id, self.pv, self.parse, self.scale, self.opts)
            if rating is not None:
                finished.append(rating)
            elif retry_after is not None:
                self.queue.append(([it], time.monotonic() + retry_after))
        if finished:
            self._write(lambda: self.store.put_many(finished))  # committed before anything else happens
            for r in finished:
                setattr(self.s, r.status, getattr(self.s, r.status) + 1)

    def _write(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except (sqlite3.OperationalError, sqlite3.DatabaseError, OSError) as e:
            self.fatal = StoreWriteError(f"cannot write the store {self.store.path}: {e}. Nothing stored was lost; "
                                         "free space (or fix the path) and run the same command again to resume")

    def _pause(self, rep: Reply) -> None:
        now = time.monotonic()
        if self.outage_since is None:
            self.outage_since = now
        elif now - self.outage_since > self.opts.max_outage_s:
            self.fatal = OutageError(f"the judge has been unreachable for {now - self.outage_since:.0f} s "
                                     f"({rep.error}); nothing was lost: run the same command again to resume")
            return
        wait = rep.retry_after if rep.retry_after else self.outage_pause
        self.outage_pause = min(self.outage_pause * 2, 30.0)
        if now + wait > self.resume_at:
            self.s.outage_s += now + wait - max(self.resume_at, now)
            self.resume_at = now + wait


def settle(it: Item, rep: Reply, judge_id: str, prompt_version: str, parse: Callable[[str | None], Parsed],
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
                      extra=rep.extra, explanation="no probability on the score labels", **base), None
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


def _chunks(items: list[Item], n: int) -> Iterable[list[Item]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _cost(s: RateSummary, opts: RateOptions) -> float | None:
    if opts.price_in is None and opts.price_out is None:
        return None
    return (s.tokens_in * (opts.price_in or 0) + s.tokens_out * (opts.price_out or 0)) / 1e6
