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
import heapq
import json
import random
import signal
import sqlite3
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Iterable, Iterator

from alpagasus.judges.base import Judge, OutageError
from alpagasus.prompts.parse import Parsed
from alpagasus.records import InvalidRow, Rating, Reply, Request
from alpagasus.store import Store


class StoreWriteError(RuntimeError):
    """The store could not be written (disk full...): the run stops; what was stored is intact."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C: the replies in flight were waited for and stored; `summary` says what this run did."""

    def __init__(self, summary: "RateSummary"):
        super().__init__("interrupted")
        self.summary = summary


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
    ambiguous: int = 0             # attempts that timed out or were cut off and may have reached the server
    throttled: int = 0             # 429 answers (waited for, not charged to the item)
    flagged: int = 0               # rows flagged as possible prompt injection (see flags.py)
    note: str = ""                 # what the run is waiting for right now (an outage), for progress displays

    @property
    def done(self) -> int:
        return self.ok + self.unparsed + self.invalid_input + self.error


@dataclass
class RateOptions:
    max_reasks: int = 2            # extra asks after a reply with no score (generate mode)
    max_attempts: int = 5          # requests charged to an item (failures, re-asks) before it is stored as `error`
    max_throttled: int = 30        # 429 answers per item before it is stored as `error` (retried by the next run)
    retry_unparsed: bool = False   # ask again for items stored as `unparsed` by an earlier run
    price_in: float | None = None  # currency per million input tokens
    price_out: float | None = None
    max_tokens: int = 256          # generate mode: reply length cap
    backoff_s: float = 1.0         # first retry delay after a failure; doubles per attempt (with jitter)
    max_backoff_s: float = 60.0    # a Retry-After longer than this is treated as an outage (pause)
    max_outage_s: float = 3600.0   # give up (resumably) after the judge is unreachable this long
    outage_after: int = 8          # this many failures in a row, across items, mean the server is down
    probe_every_s: float = 30.0    # while the judge is away, one probe request at most this far apart
    drain_s: float = 15.0          # Ctrl-C: wait this long for the replies in flight (paid for), then quit


@dataclass
class Item:
    key: str                 # the id the reply is stored under
    request: Request
    attempts: int = 0
    reasks: int = 0
    throttled: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    latency_s: float = 0.0


async def run_requests(items: Iterable[Item], judge: Judge, store: Store, prompt_version: str,
                       parse: Callable[[str | None], Parsed], scale: tuple[float, float],
                       opts: RateOptions, s: RateSummary,
                       progress: Callable[[RateSummary], None] | None = None) -> RateSummary:
    """Judge every item; returns the summary. `items` may be a generator: it is read as the window has room,
    so a million items never sit in memory. Raises OutageError / StoreWriteError (resumable) when it must
    stop, and Interrupted after Ctrl-C once the replies in flight are stored."""
    return await _Engine(judge, store, prompt_version, parse, scale, opts, s, progress).run(items)


def run_sync(coro: Awaitable[RateSummary], judge: Judge) -> RateSummary:
    """`asyncio.run(coro)`, then the judge's async clients (if any) are closed in that same loop."""
    async def main() -> RateSummary:
        try:
            return await coro
        finally:
            aclose = getattr(judge, "aclose", None)
            if aclose is not None:
                await aclose()
    return asyncio.run(main())


class _Engine:
    def __init__(self, judge, store, prompt_version, parse, scale, opts, s, progress):
        self.judge, self.store, self.pv, self.parse, self.scale = judge, store, prompt_version, parse, scale
        self.opts, self.s, self.progress = opts, s, progress
        self.ready: deque[list[Item]] = deque()           # batches to send now
        self.delayed: list[tuple[float, int, list[Item]]] = []  # (not before, seq, batch): retries waiting
        self.seq = 0
        self.resume_at = 0.0                              # no new request before this (an outage pause)
        self.outage_since: float | None = None
        self.outage_pause = opts.backoff_s
        self.fatal: BaseException | None = None
        self.failures_in_a_row = 0
        self.stop_at: float | None = None                 # Ctrl-C: quit once nothing is in flight, or then
        self.interrupts = 0

    async def run(self, items: Iterable[Item]) -> RateSummary:
        t0 = time.perf_counter()
        source = _batches(items, max(1, self.judge.batch_size), getattr(self.judge, "sort_by_length", False))
        more = True
        in_flight: set[asyncio.Task] = set()
        sigint = self._catch_sigint()
        try:
            while more or self.ready or self.delayed or in_flight:
                now = time.monotonic()
                if self.stop_at is not None and (not in_flight or now >= self.stop_at or self.interrupts > 1):
                    raise Interrupted(self.s)
                while self.delayed and self.delayed[0][0] <= now:  # retries whose wait is over go first
                    self.ready.appendleft(heapq.heappop(self.delayed)[2])
                # while the judge is away only one probe is in flight; Ctrl-C stops new requests
                window = 0 if self.stop_at is not None else 1 if self.outage_since is not None else \
                    max(1, self.judge.concurrency)
                while len(in_flight) < window and now >= self.resume_at:
                    if not self.ready:
                        batch = next(source, None) if more else None
                        if batch is None:
                            more = False
                            break
                        self.ready.append(batch)
                    in_flight.add(asyncio.create_task(self.call(self.ready.popleft())))
                wake = [0.25 if self.stop_at is not None else 1.0]
                if self.delayed:
                    wake.append(self.delayed[0][0] - now)
                if self.resume_at > now:
                    wake.append(self.resume_at - now)
                timeout = max(0.0, min(wake))
                if in_flight:
                    done, in_flight = await asyncio.wait(in_flight, timeout=timeout,
                                                         return_when=asyncio.FIRST_COMPLETED)
                    for t in done:
                        t.result()  # a bug in settling must not lose items silently
                elif more or self.ready or self.delayed:  # waiting for a retry or the end of a pause
                    await asyncio.sleep(timeout)
                if self.fatal:
                    raise self.fatal
                self._tick(t0)
        finally:
            for t in in_flight:
                t.cancel()
            sigint()
        self._tick(t0)
        return self.s

    def _tick(self, t0: float) -> None:
        self.s.elapsed_s = time.perf_counter() - t0
        self.s.cost = _cost(self.s, self.opts)
        if self.progress:
            self.progress(self.s)

    def _catch_sigint(self) -> Callable[[], None]:
        """First Ctrl-C: send nothing new, store the replies in flight (they are paid for), then stop.
        A second Ctrl-C stops at once. Only where asyncio can take the signal (the main thread)."""
        loop = asyncio.get_running_loop()

        def on_sigint() -> None:
            self.interrupts += 1
            if self.stop_at is None:
                self.stop_at = time.monotonic() + self.opts.drain_s
                self.s.note = "interrupted: storing the replies in flight (Ctrl-C again to quit now)"
        try:
            loop.add_signal_handler(signal.SIGINT, on_sigint)
        except (ValueError, RuntimeError, NotImplementedError):  # not the main thread / not supported
            return lambda: None
        return lambda: loop.remove_signal_handler(signal.SIGINT)

    def _delay(self, batch: list[Item], delay: float) -> None:
        self.seq += 1
        heapq.heappush(self.delayed, (time.monotonic() + delay, self.seq, batch))

    def _backoff(self, n: int) -> float:
        return min(self.opts.max_backoff_s, self.opts.backoff_s * 2 ** max(0, n - 1)) * (0.5 + random.random())

    async def call(self, batch: list[Item]) -> None:
        self.s.requests_sent += len(batch)
        try:
            replies = await self.judge.score([it.request for it in batch])
        except OutageError as e:
            replies = [Reply(error=str(e), outage=True) for _ in batch]
        except Exception as e:  # a backend failure for the whole batch: retried like a transport error
            replies = [Reply(error=f"{type(e).__name__}: {e}") for _ in batch]
        if len(replies) != len(batch):
            replies = [Reply(error=f"the judge returned {len(replies)} replies for {len(batch)} requests")] * len(batch)
        finished: list[Rating] = []
        log: list[tuple[str, str, str]] = []  # (item, outcome, detail) of every request that settled nothing
        for it, rep in zip(batch, replies):
            failing = rep.error is not None and rep.retryable
            self.failures_in_a_row = self.failures_in_a_row + 1 if failing else 0
            if not failing:
                self._recovered()
            if failing and (rep.outage or (rep.retry_after or 0) > self.opts.max_backoff_s
                            or self.failures_in_a_row > self.opts.outage_after):
                self._pause(rep)
                log.append((it.key, "outage", rep.error))
                self.ready.appendleft([it])  # not charged to the item: the server is away
                continue
            for attr in ("tokens_in", "tokens_out", "latency_s"):
                setattr(it, attr, getattr(it, attr) + getattr(rep, attr))
            self.s.tokens_in += rep.tokens_in
            self.s.tokens_out += rep.tokens_out
            if failing and (rep.extra or {}).get("throttled") and it.throttled < self.opts.max_throttled:
                it.throttled += 1  # rate limited: wait as told, charge nothing (the request was not served)
                self.s.throttled += 1
                log.append((it.key, "throttled", rep.error))
                self._delay([it], max(rep.retry_after or 0.0, self._backoff(it.throttled)))
                continue
            it.attempts += 1
            if rep.error is not None and (rep.extra or {}).get("ambiguous"):
                self.s.ambiguous += 1
            try:
                rating, retry_after = settle(it, rep, self.judge.id, self.pv, self.parse, self.scale, self.opts)
            except Exception as e:  # a parser must never lose an item: keep the raw reply
                rating, retry_after = Rating(it.key, self.judge.id, self.pv, None, "unparsed", raw=rep.text,
                                             explanation=f"parser failed: {type(e).__name__}: {e}",
                                             attempts=it.attempts, created_at=time.time()), None
            if rating is not None:
                finished.append(rating)
            elif retry_after is not None:
                outcome = ("ambiguous" if (rep.extra or {}).get("ambiguous") else "error") if rep.error else "reask"
                log.append((it.key, outcome, rep.error or (rep.text or "")[:200]))
                self._delay([it], retry_after)
        # committed before anything else happens: a reply received is a reply stored
        if finished:
            self._write(lambda: self.store.put_many(finished))
            if self.fatal is None:
                for r in finished:
                    setattr(self.s, r.status, getattr(self.s, r.status) + 1)
        if log:
            self._write(lambda: self.store.log_attempts([(k, self.judge.id, self.pv, o, d) for k, o, d in log]))

    def _write(self, fn: Callable[[], None]) -> None:
        if self.fatal is not None:
            return
        try:
            fn()
        except (sqlite3.OperationalError, sqlite3.DatabaseError, OSError) as e:
            self.fatal = StoreWriteError(f"cannot write the store {self.store.path}: {e}. Nothing stored was lost; "
                                         "free space (or fix the path) and run the same command again to resume")

    def _pause(self, rep: Reply) -> None:
        """The judge is away (refused, or asks to wait longer than we would back off): stop sending, then
        probe with one request at a time, less and less often, until it answers or max_outage_s passes."""
        now = time.monotonic()
        if self.outage_since is None:
            self.outage_since = now
        if (rep.retry_after or 0) > self.opts.max_outage_s or now - self.outage_since > self.opts.max_outage_s:
            why = (f"asks to wait {rep.retry_after:.0f} s" if (rep.retry_after or 0) > self.opts.max_outage_s
                   else f"has been unreachable for {now - self.outage_since:.0f} s")
            self.s.outage_s += now - self.outage_since
            self.fatal = OutageError(f"the judge {why} ({rep.error}); nothing was lost: run the same command "
                                     "again to resume")
            return
        if rep.retry_after:
            self.resume_at = max(self.resume_at, now + rep.retry_after)
        elif now >= self.resume_at:  # a probe failed (not a request sent before the pause began): wait longer
            self.resume_at = now + self.outage_pause
            self.outage_pause = min(self.outage_pause * 2, self.opts.probe_every_s)
        self.s.note = (f"judge unreachable for {now - self.outage_since:.0f} s ({(rep.error or '')[:80]}); "
                       f"next try in {max(0.0, self.resume_at - now):.0f} s")

    def _recovered(self) -> None:
        if self.outage_since is not None:
            self.s.outage_s += time.monotonic() - self.outage_since
            self.outage_since, self.outage_pause, self.s.note = None, self.opts.backoff_s, ""


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


def _batches(items: Iterable[Item], n: int, sort_by_length: bool) -> Iterator[list[Item]]:
    """Batches of n, pulled lazily. Local judges pad a batch to its longest prompt, so items are sorted by
    length within a window of 64 batches: most of the gain, memory still bounded."""
    window: list[Item] = []
    size = n * 64 if sort_by_length else n
    for it in items:
        window.append(it)
        if len(window) >= size:
            if sort_by_length:
                window.sort(key=lambda x: len(x.request.user))
            yield from _chunks(window, n)
            window = []
    if sort_by_length:
        window.sort(key=lambda x: len(x.request.user))
    yield from _chunks(window, n)


def _cost(s: RateSummary, opts: RateOptions) -> float | None:
    if opts.price_in is None and opts.price_out is None:
        return None
    return (s.tokens_in * (opts.price_in or 0) + s.tokens_out * (opts.price_out or 0)) / 1e6
