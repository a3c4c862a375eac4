"""Judging through a provider's Batch API (`--batch`): the same requests, at the batch price, never paid twice.

Provider-neutral: the judge's `batch_api` (engine/batchapi.py: OpenAI Files + Batches, Anthropic Message
Batches, in backends/) turns each item's request into one line whose custom id is the store's item key, sends
batches within the provider's limits, reports their states and gives each answer back as the Reply a direct
request would have got. Each reply is charged by the direct engine's rule (engine/retry.py: a 429 is no
attempt), settled by `settle` and committed as it is read; re-asks and retryable errors go into a follow-up
batch (the batch is the backoff).

Never paying twice rests on the store's batch ledger (engine/ledger.py, tables `batches` and `batch_items`):
1. a batch is recorded with the items it will hold (under a key of ours) BEFORE anything is sent; the ids the
   provider gives are recorded as they come, and a run killed between `create` and recording the id finds its
   batch again (`BatchApi.find`: our key in the batch's metadata, where the provider keeps metadata);
2. a run re-attaches to the unfinished batches of its judge and prompt and waits for them instead of sending
   their rows again; rows already stored are never put in a batch;
3. a batch that failed, expired or was cancelled has only its missing rows resubmitted (the requests it did
   run are read and stored first); one the server no longer knows (404) has its missing rows resubmitted, and
   the run's note says so.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from alpagasus.engine.batchapi import BatchApi, BatchLimits, BatchState
from alpagasus.engine.ledger import Ledger
from alpagasus.engine.retry import charge
from alpagasus.engine.settle import judge_secrets, label_floor, settle_in_run
from alpagasus.engine.types import Item, RunCounts, RunOptions, StoreWriteError
from alpagasus.judges.base import JudgeError
from alpagasus.prompts.rubric import Rubric
from alpagasus.records import Rating, Reply, Request
from alpagasus.store import Store

__all__ = ["BatchLimits", "check_batchable", "run_batch"]


def check_batchable(judge: Any) -> BatchApi:
    """The judge's provider batch API; --batch with a judge that has none is an error naming the ones that do."""
    api: BatchApi | None = judge.batch_api
    if api is None:
        raise JudgeError(
            f"--batch needs a judge with a provider Batch API: openai:MODEL (any OpenAI-compatible server, "
            f"--base-url for another) or anthropic:MODEL (Message Batches); {judge.id} has none"
        )
    return api


@dataclass
class Live:
    """A batch on the server this run waits for."""

    key: str
    batch_id: str
    items: list[str]
    status: str = ""
    counts: tuple[int, int, int] = (0, 0, 0)  # the provider's request counts: (completed, failed, total)


@dataclass
class _State:
    held: dict[str, str] = field(default_factory=dict)  # item key -> ledger key of the open batch holding it
    not_run: dict[str, int] = field(default_factory=dict)  # item key -> times a batch ended without running it
    failed_in_a_row: int = 0
    reattached: int = 0
    vanished_rows: int = 0


async def run_batch(
    items: Iterable[Item],
    judge: Any,
    store: Store,
    rubric: Rubric,
    options: RunOptions | None = None,
    progress: Any = None,
    limits: BatchLimits | None = None,
) -> RunCounts:
    """Judge every item through the judge's batch API; returns this run's counts (`batches`: batches created,
    `note`: what was re-attached or resubmitted). Waits until every batch it needs has ended (poll every
    `options.batch_poll_s`); a run stopped while it waits is resumed by running it again."""
    api = check_batchable(judge)
    run = _BatchRun(judge, api, store, rubric, options or RunOptions(), progress, limits or api.limits)
    try:
        return await run.run(items)
    except (JudgeError, StoreWriteError):
        raise
    except Exception as e:  # the client's errors, in our words: what was recorded stays, the next run re-attaches
        ours = api.error(e)
        if ours is None:
            raise
        raise ours from e


class _BatchRun:
    def __init__(
        self,
        judge: Any,
        api: BatchApi,
        store: Store,
        rubric: Rubric,
        opts: RunOptions,
        progress: Any,
        limits: BatchLimits,
    ):
        self.judge, self.api, self.store, self.rubric, self.opts = judge, api, store, rubric, opts
        self.progress, self.limits, self.ledger = progress, limits, Ledger(store, judge.id, rubric.version)
        self.s = RunCounts(judge=judge.id, prompt_version=rubric.version)
        self.floor = label_floor(judge, opts)
        self.items: dict[str, Item] = {}
        self.st = _State()
        self.labels: tuple[str, ...] = Request("", "", "").labels
        self.t0 = time.perf_counter()

    async def run(self, items: Iterable[Item]) -> RunCounts:
        self._admit(items)
        self.judge.load()
        live = await self._reattach()
        while True:
            pool = self._pool()
            if pool:
                live += await self._submit(pool)
            if not live:
                break
            for lb, state in await self._wait(live):
                live.remove(lb)
                await self._collect(lb, state)
        self.s.batches_reattached, self.s.batch_rows_resubmitted = self.st.reattached, self.st.vanished_rows
        self.s.note = self.s.batch_line()  # the same line as the typed counts say
        self._tick()
        return self.s

    # ---- what to send -----------------------------------------------------------------------------------
    def _admit(self, items: Iterable[Item]) -> None:
        """Every item, with the run's reply cap; those too long for the judge's context are stored as
        `invalid_input` without a request, as the direct engine does."""
        from alpagasus.engine.loop import too_long

        rejected: list[Rating] = []
        for it in items:
            self.s.to_judge += 1
            it.request.max_tokens = self.opts.max_tokens
            bad = too_long(it, self.judge, self.rubric.version, self.opts.max_tokens)
            if bad is not None:
                rejected.append(bad)
                continue
            self.items[it.key] = it
            self.labels = it.request.labels
        self._store(rejected)
        self.s.invalid_input += len(rejected)

    def _pool(self) -> list[Item]:
        """Items to put in a new batch: not held by an open batch and not stored for good (checked against
        the store itself: a row stored by any path is never put in a batch)."""
        free = [k for k in self.items if k not in self.st.held]
        done = self.store.done_ids(self.judge.id, self.rubric.version, free, final=self.opts.final_statuses())
        for k in done:
            del self.items[k]
        return [self.items[k] for k in free if k not in done]

    def _chunks(self, pool: list[Item]) -> Iterator[tuple[list[str], list[dict]]]:
        """The pool split into batches within the provider's limits (requests and bytes per batch)."""
        keys: list[str] = []
        lines: list[dict] = []
        size = 0
        for it in pool:
            line = self.api.line(it.key, it.request)
            n = len(json.dumps(line, ensure_ascii=False).encode()) + 1
            if keys and (len(keys) >= self.limits.max_requests or size + n > self.limits.max_bytes):
                yield keys, lines
                keys, lines, size = [], [], 0
            keys.append(it.key)
            lines.append(line)
            size += n
        if keys:
            yield keys, lines

    async def _submit(self, pool: list[Item]) -> list[Live]:
        live: list[Live] = []
        for keys, lines in self._chunks(pool):
            key = self.ledger.record(keys)  # recorded before anything leaves this machine

            def record(key: str = key, **ids: Any) -> None:  # each id the provider gives, as it comes
                self.ledger.update(key, state="submitted" if "batch_id" in ids else "uploaded", **ids)

            since = time.time()
            try:
                state = await self.api.submit(key, lines, record)
            except Exception as e:
                state = await self._lost(key, since, len(lines), record, e)
            self.ledger.update(key, server_status=state.status)
            self.s.requests_sent += len(keys)
            self.s.batches += 1
            self.st.held.update(dict.fromkeys(keys, key))
            live.append(Live(key, state.batch_id, keys, state.status))
        return live

    async def _lost(self, key: str, since: float, size: int, record: Any, err: Exception) -> BatchState:
        """`submit` failed: if the server made the batch anyway (the answer to `create` was lost), it is ours
        (found by our key, and recorded); if not, the error stands and nothing of this batch was sent."""
        try:
            found = await self.api.find(key, since, size, self.ledger.batch_ids())
            state = None if found is None else await self.api.poll(found)
        except Exception:
            state = None
        if state is None:
            raise err
        record(batch_id=state.batch_id)
        return state

    # ---- batches of an earlier run ----------------------------------------------------------------------
    async def _reattach(self) -> list[Live]:
        live: list[Live] = []
        for row in self.ledger.open():
            key, batch_id = row["key"], row["batch_id"]
            keys = self.ledger.items_of(key)
            if batch_id is None:  # killed before the id was recorded: did `create` reach the server?
                batch_id = await self.api.find(key, row["created_at"], len(keys), self.ledger.batch_ids())
                if batch_id is None:  # never created: nothing was sent, its rows go into a new batch
                    self.ledger.update(key, state="abandoned")
                    continue
                self.ledger.update(key, batch_id=batch_id, state="submitted")
            state = await self.api.poll(batch_id)
            if state is None:
                self._vanished(key, keys)
                continue
            self.st.reattached += 1
            self.st.held.update(dict.fromkeys(keys, key))
            live.append(Live(key, batch_id, keys, state.status))
        return live

    def _vanished(self, key: str, keys: list[str]) -> None:
        """The server no longer knows the batch: its rows not stored yet go into a new batch."""
        self.ledger.update(key, state="vanished")
        done = self.store.done_ids(self.judge.id, self.rubric.version, keys, final=self.opts.final_statuses())
        self.st.vanished_rows += len(set(keys) - done)
        for k in keys:
            self.st.held.pop(k, None)

    # ---- waiting ----------------------------------------------------------------------------------------
    async def _wait(self, live: list[Live]) -> list[tuple[Live, BatchState | None]]:
        """Poll until at least one batch has ended; returns those (with their state, None if gone)."""
        while True:
            ended: list[tuple[Live, BatchState | None]] = []
            for lb in live:
                state = await self.api.poll(lb.batch_id)
                if state is None:
                    self._vanished(lb.key, lb.items)
                    ended.append((lb, None))
                    continue
                counts = state.counts or lb.counts
                if state.status != lb.status:
                    self.ledger.update(lb.key, server_status=state.status)
                if state.status != lb.status or counts != lb.counts:  # the counts move while the status waits
                    lb.status, lb.counts = state.status, counts
                    self.s.note = f"batch {lb.batch_id}: {state.status}" + (
                        f" ({counts[0]}/{counts[2]} done, {counts[1]} failed)" if state.counts else ""
                    )
                if state.ended:
                    ended.append((lb, state))
            done = {id(lb) for lb, _ in ended}
            open_ = [lb for lb in live if id(lb) not in done]
            self.s.batch_completed, self.s.batch_failed, self.s.batch_total = (
                sum(lb.counts[i] for lb in open_) for i in range(3)
            )
            self._tick()
            if ended:
                return ended
            await asyncio.sleep(self.opts.batch_poll_s)

    # ---- reading results --------------------------------------------------------------------------------
    async def _collect(self, lb: Live, state: BatchState | None) -> None:
        """Read the batch's answers, storing every reply as it is read; release the batch's rows."""
        for k in lb.items:
            self.st.held.pop(k, None)
        if state is None:
            return
        ids = set(lb.items)
        wanted = ids - self.store.done_ids(self.judge.id, self.rubric.version, ids, final=self.opts.final_statuses())
        seen: set[str] = set()
        finished: list[Rating] = []
        log: list[tuple[str, str, str, str, str]] = []
        async for cid, rep in self.api.results(state, lambda k: self._item(k).request):
            if cid not in wanted or cid in seen or rep is None:  # not ours, twice, or never run by the server
                continue
            seen.add(cid)
            rating = self._settle(self._item(cid), rep, log)
            if rating is not None:
                finished.append(rating)
            if len(finished) >= 100:
                self._store(finished)
                finished = []
        self._store(finished)
        if log:
            self.store.log_attempts(log)
        for k in wanted - seen:  # never run (expired, cancelled, failed validation): not billed
            self.st.not_run[k] = self.st.not_run.get(k, 0) + 1
        self._failed_in_a_row(state, bool(seen))
        self.ledger.update(lb.key, state="done", server_status=state.status)
        self._give_up_unrun()
        self._tick()

    def _failed_in_a_row(self, state: BatchState, ran: bool) -> None:
        if not (state.failed and not ran):
            self.st.failed_in_a_row = 0
            return
        self.st.failed_in_a_row += 1
        if self.st.failed_in_a_row >= self.limits.max_failed:
            raise JudgeError(
                f"{self.limits.max_failed} batches in a row failed on the {self.api.provider} server (last "
                f"{state.batch_id}: {state.errors[:300] or 'no reason given'}); run again to resume"
            )

    def _item(self, key: str) -> Item:
        """The run's item, or (rows of a re-attached batch this run was not given) a bare one to settle with:
        settled if its reply is final, never put in a batch (it has no prompt here)."""
        return self.items.get(key) or Item(key, Request(key=key, system="", user="", labels=self.labels))

    def _settle(self, it: Item, rep: Reply, log: list) -> Rating | None:
        """As the direct engine settles a reply (engine/retry.py's charge, then settle): a throttled or
        retryable reply, or a re-ask, goes into the next batch (the batch itself is the backoff)."""
        if charge(it, rep, self.opts, self.s) is not None:  # rate limited: no attempt charged
            log.append((it.key, self.judge.id, self.rubric.version, "throttled", rep.error or ""))
            return None
        rating, _ = settle_in_run(
            it, rep, self.judge.id, self.rubric, self.opts, self.floor, self.s, judge_secrets(self.judge)
        )
        if rating is None:
            outcome = "error" if rep.error else "reask"
            log.append((it.key, self.judge.id, self.rubric.version, outcome, rep.error or (rep.text or "")[:200]))
        return rating

    def _give_up_unrun(self) -> None:
        """Rows no batch would run after max_attempts tries are stored as `error` (a later run tries again)."""
        gone = [k for k, n in self.st.not_run.items() if n >= self.opts.max_attempts and k in self.items]
        raw = f"not run by {self.opts.max_attempts} batches in a row"
        self._store(
            [
                Rating(
                    k, self.judge.id, self.rubric.version, None, "error", created_at=time.time(), raw=raw, attempts=0
                )
                for k in gone
            ]
        )

    def _store(self, ratings: list[Rating]) -> None:
        if not ratings:
            return
        try:
            self.store.put_many(ratings)
        except Exception as e:  # sqlite3.Error, OSError
            raise StoreWriteError.of(self.store.path, e) from e
        for r in ratings:
            if r.status != "invalid_input":
                self.s.settled(r.status)
            self.items.pop(r.example_id, None)
            self.st.not_run.pop(r.example_id, None)

    def _tick(self) -> None:
        self.s.elapsed_s = time.perf_counter() - self.t0
        self.s.cost = self.opts.cost(self.s.tokens_in, self.s.tokens_out)
        if self.progress:
            self.progress(self.s)
