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
import signal
import sqlite3
import time
from collections import deque
from typing import Awaitable, Callable, Iterable, Iterator, TypeVar

from alpagasus.engine.retry import charge
from alpagasus.engine.settle import judge_secrets, label_floor, scrub, settle_in_run
from alpagasus.engine.types import Interrupted, Item, RunCounts, RunOptions, StoreWriteError
from alpagasus.judges.base import Judge, JudgeError, OutageError
from alpagasus.prompts.rubric import Rubric
from alpagasus.records import Rating, Reply
from alpagasus.store import Store

T = TypeVar("T")
REFUSED = (401, 403)  # the credentials or the model's access: no retry and no later row can succeed
Progress = Callable[[RunCounts], None]  # fed the run's counts as replies settle
ProgressFactory = Callable[[str, "int | None"], Progress]  # (phase, items to judge if known) -> its Progress


async def run_items(
    items: Iterable[Item],
    judge: Judge,
    store: Store,
    rubric: Rubric,
    options: RunOptions | None = None,
    progress: Progress | None = None,
) -> RunCounts:
    """Judge every item (the judge is loaded by the caller); returns this run's counts. `items` may be a
    generator: it is read as the window has room, so a million items never sit in memory. Items too long for
    the judge's context are stored as `invalid_input` without a request. Raises OutageError / StoreWriteError
    (resumable) when it must stop, and Interrupted after Ctrl-C once the replies in flight are stored."""
    return await _Engine(judge, store, rubric, options or RunOptions(), progress).run(items)


def run_sync(coro: Awaitable[T], judge: Judge) -> T:
    """`asyncio.run(coro)`, then the judge's async clients (if any) are closed in that same loop."""

    async def main() -> T:
        try:
            return await coro
        finally:
            await judge.aclose()

    return asyncio.run(main())


class _Engine:
    def __init__(self, judge: Judge, store: Store, rubric: Rubric, opts: RunOptions, progress: Progress | None):
        self.judge, self.store, self.rubric, self.opts, self.progress = judge, store, rubric, opts, progress
        self.s = RunCounts(judge=judge.id, prompt_version=rubric.version)
        self.ready: deque[list[Item]] = deque()  # batches to send now
        self.delayed: list[tuple[float, int, list[Item]]] = []  # (not before, seq, batch): retries waiting
        self.seq = 0
        self.resume_at = 0.0  # no new request before this (an outage pause)
        self.outage_since: float | None = None
        self.outage_pause = opts.backoff_s
        self.fatal: BaseException | None = None
        self.failures_in_a_row = 0
        self.stop_at: float | None = None  # Ctrl-C: quit once nothing is in flight, or then
        self.interrupts = 0
        self.floor = label_floor(judge, opts)  # (label-mass floor, generate fallback) of logprob replies
        self.secrets = judge_secrets(judge)  # redacted from every reply (settle.scrub)

    async def run(self, items: Iterable[Item]) -> RunCounts:
        t0 = time.perf_counter()
        source = _batches(self._admit(items), max(1, self.judge.batch_size), self.judge.sort_by_length)
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
                window = (
                    0
                    if self.stop_at is not None
                    else 1
                    if self.outage_since is not None
                    else max(1, self.judge.concurrency)
                )
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
                    done, in_flight = await asyncio.wait(
                        in_flight, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                    )
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
        self.s.cost = self.opts.cost(self.s.tokens_in, self.s.tokens_out)
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

        def restore() -> None:
            loop.remove_signal_handler(signal.SIGINT)

        return restore

    def _delay(self, batch: list[Item], delay: float) -> None:
        self.seq += 1
        heapq.heappush(self.delayed, (time.monotonic() + delay, self.seq, batch))

    def _admit(self, items: Iterable[Item]) -> Iterator[Item]:
        """Items as the window pulls them (one at a time: nothing is read ahead of the window), the run's reply
        cap applied; those too long for the judge's context are stored as `invalid_input`, never sent."""
        for it in items:
            self.s.to_judge += 1
            it.request.max_tokens = self.opts.max_tokens
            rejected = too_long(it, self.judge, self.rubric.version, self.opts.max_tokens)
            if rejected is None:
                yield it
                continue
            try:  # rare: one write each is cheap
                self.store.put(rejected)
            except (sqlite3.Error, OSError) as e:
                raise StoreWriteError.of(self.store.path, e) from e
            self.s.invalid_input += 1

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
        log: list[tuple[str, str, str | None]] = []  # (item, outcome, detail) of every request that settled nothing
        refused: JudgeError | None = None
        for it, rep in zip(batch, replies):
            scrub(rep, self.secrets)  # a server's text may echo the API key: it goes to the store and the screen
            if rep.fatal:  # no request can succeed (a host that does not resolve): stop now, store nothing
                refused = refused or JudgeError(
                    f"{rep.error}. Nothing was stored for these rows: fix it and run the same command again"
                )
                log.append((it.key, "refused", rep.error))
                continue
            if (rep.extra or {}).get("http_status") in REFUSED:
                # a refused key or model refuses every row: stop now rather than store them all as `error`
                refused = refused or JudgeError(
                    f"the judge {self.judge.id} refused the request ({rep.error}); check the API key "
                    "(OPENAI_API_KEY or --api-key) and that it may use this model. Refused rows were not stored: "
                    "the same command asks them again"
                )
                log.append((it.key, "refused", rep.error))
                continue
            failing = rep.error is not None and rep.retryable
            self.failures_in_a_row = self.failures_in_a_row + 1 if failing else 0
            if not failing:
                self._recovered()
            if failing and (
                rep.outage
                or (rep.retry_after or 0) > self.opts.max_backoff_s
                or self.failures_in_a_row > self.opts.outage_after
            ):
                self._pause(rep)
                log.append((it.key, "outage", rep.error))
                self.ready.appendleft([it])  # not charged to the item: the server is away
                continue
            wait = charge(it, rep, self.opts, self.s)  # engine/retry.py: the one rule, shared with --batch
            if wait is not None:  # rate limited: wait as told, charge nothing (the request was not served)
                log.append((it.key, "throttled", rep.error))
                self._delay([it], wait)
                continue
            rating, retry_after = settle_in_run(
                it, rep, self.judge.id, self.rubric, self.opts, self.floor, self.s, self.secrets
            )
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
                    self.s.settled(r.status)
        if log:
            rows = [(k, self.judge.id, self.rubric.version, o, d) for k, o, d in log]
            self._write(lambda: self.store.log_attempts(rows))
        if refused is not None and self.fatal is None:  # after the writes: the batch's other replies are kept
            self.fatal = refused

    def _write(self, fn: Callable[[], None]) -> None:
        if self.fatal is not None:
            return
        try:
            fn()
        except (sqlite3.OperationalError, sqlite3.DatabaseError, OSError) as e:
            self.fatal = StoreWriteError.of(self.store.path, e)

    def _pause(self, rep: Reply) -> None:
        """The judge is away (refused, or asks to wait longer than we would back off): stop sending, then
        probe with one request at a time, less and less often, until it answers or max_outage_s passes."""
        now = time.monotonic()
        if self.outage_since is None:
            self.outage_since = now
        # requests that time out after they were sent reached a server that is there but slow (busy): say so,
        # with what helps; refused connections are a server that is away
        slow = bool((rep.extra or {}).get("timeout"))
        state = "busy (its replies take longer than --timeout)" if slow else "unreachable"
        advice = "; lower --concurrency or raise --timeout if the server is slow, not down" if slow else ""
        if (rep.retry_after or 0) > self.opts.max_outage_s or now - self.outage_since > self.opts.max_outage_s:
            why = (
                f"asks to wait {rep.retry_after:.0f} s"
                if (rep.retry_after or 0) > self.opts.max_outage_s
                else f"has been {state} for {now - self.outage_since:.0f} s"
            )
            self.s.outage_s += now - self.outage_since
            self.fatal = OutageError(
                f"the judge {why} ({rep.error}){advice}; nothing was lost: run the same command again to resume"
            )
            return
        if rep.retry_after:
            self.resume_at = max(self.resume_at, now + rep.retry_after)
        elif now >= self.resume_at:  # a probe failed (not a request sent before the pause began): wait longer
            self.resume_at = now + self.outage_pause
            self.outage_pause = min(self.outage_pause * 2, self.opts.probe_every_s)
        self.s.note = (
            f"judge {state} for {now - self.outage_since:.0f} s ({(rep.error or '')[:80]}); "
            f"next try in {max(0.0, self.resume_at - now):.0f} s{advice}"
        )

    def _recovered(self) -> None:
        if self.outage_since is not None:
            self.s.outage_s += time.monotonic() - self.outage_since
            self.outage_since, self.outage_pause, self.s.note = None, self.opts.backoff_s, ""


def chunked(items: Iterable[T], n: int) -> Iterator[list[T]]:
    """Lists of n (the last may be shorter), pulled lazily."""
    batch: list[T] = []
    for x in items:
        batch.append(x)
        if len(batch) >= n:
            yield batch
            batch = []
    if batch:
        yield batch


def too_long(it: Item, judge: Judge, prompt_version: str, max_tokens: int) -> Rating | None:
    """The `invalid_input` rating of an item too long for the judge's context, or None when it fits (or the
    context is unknown)."""
    limit = judge.max_context
    if not limit:
        return None
    room = limit - (max_tokens if judge.mode == "generate" else 1)
    n = judge.count_tokens(it.request.system + it.request.user) + 16  # + chat markup
    if n <= room:
        return None
    return Rating(
        it.key,
        judge.id,
        prompt_version,
        None,
        "invalid_input",
        attempts=0,
        created_at=time.time(),
        explanation=f"too long for the judge: the prompt has about {n} tokens, the judge's context "
        f"allows {room}; not sent",
    )


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
            yield from chunked(window, n)
            window = []
    if sort_by_length:
        window.sort(key=lambda x: len(x.request.user))
    yield from chunked(window, n)
