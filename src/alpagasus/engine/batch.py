"""Judging through a provider's Batch API (`--batch`): the same requests, at the batch price, never paid twice.

Each request is the body the `openai:` judge would send directly (`OpenAIJudge.body`), one JSONL line whose
`custom_id` is the store's item key; at most 50,000 requests and 200 MB a file, one batch per file, a 24 h
window. Each reply read back (output and error files) goes through `OpenAIJudge.reply` and `settle`, as a direct
reply, and is committed as it is read; re-asks and retryable errors go into a follow-up batch.

Never paying twice rests on the store's batch ledger (tables `batches` and `batch_items`, schema v2):
1. a batch is recorded with the items it will hold (under a key of ours) BEFORE its file is uploaded; the file
   id and the batch id are recorded as they come, and our key travels in the batch's metadata, so a run killed
   between `batches.create` and recording the id finds its batch again with `batches.list()`;
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
from typing import Any, Iterable

from alpagasus.engine.ledger import Ledger
from alpagasus.engine.settle import judge_secrets, label_floor, settle_in_run
from alpagasus.engine.types import Item, RunCounts, RunOptions, StoreWriteError
from alpagasus.judges.base import Judge, JudgeError, OutageError
from alpagasus.prompts.rubric import Rubric
from alpagasus.records import Rating, Reply, Request
from alpagasus.redact import redact
from alpagasus.store import Store

ENDPOINT = "/v1/chat/completions"
TERMINAL = ("completed", "failed", "expired", "cancelled")
NOT_RUN = ("batch_expired", "batch_cancelled")  # requests the server never ran: not billed, sent again
META_KEY = "alpagasus_batch"  # our ledger key in the batch's metadata


@dataclass
class BatchLimits:
    """The provider's limits per batch (OpenAI: 50,000 requests and 200 MB per input file, a 24 h window)."""

    max_requests: int = 50_000
    max_bytes: int = 200 * 1000 * 1000
    window: str = "24h"
    max_failed: int = 3  # batches failing validation in a row before the run stops (a retry would fail again)


def check_batchable(judge: Judge) -> None:
    """--batch needs a judge that speaks the OpenAI Batch API: the `openai:` judge (any compatible server)."""
    if not (callable(getattr(judge, "body", None)) and callable(getattr(judge, "reply", None))):
        raise JudgeError(
            f"--batch needs an OpenAI-compatible judge (openai:MODEL, with --base-url for another "
            f"server); {judge.id} has no batch API"
        )


@dataclass
class Live:
    """A batch on the server this run waits for."""

    key: str
    batch_id: str
    items: list[str]
    status: str = ""
    counts: tuple[int, int, int] = (0, 0, 0)  # the provider's request_counts: (completed, failed, total)


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
    """Judge every item through the Batch API; returns this run's counts (`batches`: batches created, `note`:
    what was re-attached or resubmitted). Waits until every batch it needs has ended (poll every
    `options.batch_poll_s`); a run stopped while it waits is resumed by running it again."""
    import openai

    check_batchable(judge)
    try:
        return await _BatchRun(judge, store, rubric, options or RunOptions(), progress, limits or BatchLimits()).run(
            items
        )
    except openai.APIConnectionError as e:  # what was recorded stays: the next run re-attaches
        from alpagasus.judges.openai_compat import unresolved

        if unresolved(e) is not None:  # a name that does not exist is no outage: a retry cannot help
            raise JudgeError(
                f"the batch API's host does not resolve ({unresolved(e)}): check --base-url ({judge.base_url})"
            ) from e
        raise OutageError(
            f"the batch API is unreachable ({redact(str(e), [_key(judge)])}); nothing was lost: "
            "run the same command again to resume"
        ) from e
    except openai.APIStatusError as e:
        raise JudgeError(
            f"the batch API answered HTTP {e.status_code}: {redact(str(e), [_key(judge)])[:300]}; "
            "nothing was lost: fix it and run the same command again to resume"
        ) from e


def _key(judge: Any) -> str:
    return getattr(judge, "api_key", None) or ""


class _BatchRun:
    def __init__(self, judge: Any, store: Store, rubric: Rubric, opts: RunOptions, progress: Any, limits: BatchLimits):
        self.judge, self.store, self.rubric, self.opts, self.progress = judge, store, rubric, opts, progress
        self.limits, self.ledger = limits, Ledger(store, judge.id, rubric.version)
        self.s = RunCounts(judge=judge.id, prompt_version=rubric.version)
        self.floor = label_floor(judge, opts)
        self.items: dict[str, Item] = {}
        self.st = _State()
        self.labels: tuple[str, ...] = Request("", "", "").labels
        self.t0 = time.perf_counter()

    async def run(self, items: Iterable[Item]) -> RunCounts:
        self._admit(items)
        self.judge.load()
        # control calls (status, list, files) are safe to retry; `create` is guarded by the ledger and metadata
        self.client = self.judge.client.with_options(max_retries=4)
        live = await self._reattach()
        while True:
            pool = self._pool()
            if pool:
                live += await self._submit(pool)
            if not live:
                break
            for lb, batch in await self._wait(live):
                live.remove(lb)
                await self._collect(lb, batch)
        self.s.note = self._summary_note()
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

    def _files(self, pool: list[Item]) -> Iterable[tuple[list[Item], bytes]]:
        """The pool split into input files within the provider's limits (requests and bytes per file)."""
        chunk: list[Item] = []
        lines: list[bytes] = []
        size = 0
        for it in pool:
            line = (
                json.dumps(
                    {"custom_id": it.key, "method": "POST", "url": ENDPOINT, "body": self.judge.body(it.request)},
                    ensure_ascii=False,
                ).encode()
                + b"\n"
            )
            if chunk and (len(chunk) >= self.limits.max_requests or size + len(line) > self.limits.max_bytes):
                yield chunk, b"".join(lines)
                chunk, lines, size = [], [], 0
            chunk.append(it)
            lines.append(line)
            size += len(line)
        if chunk:
            yield chunk, b"".join(lines)

    async def _submit(self, pool: list[Item]) -> list[Live]:
        live: list[Live] = []
        for chunk, data in self._files(pool):
            keys = [it.key for it in chunk]
            key = self.ledger.record(keys)  # recorded before anything leaves this machine
            f = await self.client.files.create(file=(f"{key}.jsonl", data), purpose="batch")
            self.ledger.update(key, input_file_id=f.id, state="uploaded")
            b = await self._create(key, f.id)
            self.ledger.update(key, batch_id=b.id, state="submitted", server_status=b.status)
            self.s.requests_sent += len(chunk)
            self.s.batches += 1
            self.st.held.update(dict.fromkeys(keys, key))
            live.append(Live(key, b.id, keys, b.status))
        return live

    async def _create(self, key: str, file_id: str) -> Any:
        """`batches.create`, once: if the answer is lost, the batch is looked up by our key before any retry."""
        try:
            return await self.judge.client.batches.create(
                input_file_id=file_id,
                endpoint=ENDPOINT,
                completion_window=self.limits.window,
                metadata={META_KEY: key, "judge": self.judge.id[:500]},
            )
        except Exception:
            found = await self._find(key, time.time())
            if found is None:
                raise
            return found

    # ---- batches of an earlier run ----------------------------------------------------------------------
    async def _find(self, key: str, since: float) -> Any:
        """The server's batch carrying our key in its metadata (newest first; older than our record: stop)."""
        async for b in self.client.batches.list(limit=100):
            if (b.metadata or {}).get(META_KEY) == key:
                return b
            if b.created_at and b.created_at < since - 3600:
                return None
        return None

    async def _reattach(self) -> list[Live]:
        import openai

        live: list[Live] = []
        for row in self.ledger.open():
            key, batch_id = row["key"], row["batch_id"]
            keys = self.ledger.items_of(key)
            if batch_id is None:  # killed before the id was recorded: did `create` reach the server?
                found = await self._find(key, row["created_at"])
                if found is None:  # never created: nothing was sent, its rows go into a new batch
                    self.ledger.update(key, state="abandoned")
                    continue
                batch_id = found.id
                self.ledger.update(key, batch_id=batch_id, input_file_id=found.input_file_id, state="submitted")
            try:
                b = await self.client.batches.retrieve(batch_id)
            except openai.NotFoundError:
                self._vanished(key, keys)
                continue
            self.st.reattached += 1
            self.st.held.update(dict.fromkeys(keys, key))
            live.append(Live(key, batch_id, keys, b.status))
        return live

    def _vanished(self, key: str, keys: list[str]) -> None:
        """The server no longer knows the batch: its rows not stored yet go into a new batch."""
        self.ledger.update(key, state="vanished")
        done = self.store.done_ids(self.judge.id, self.rubric.version, keys, final=self.opts.final_statuses())
        self.st.vanished_rows += len(set(keys) - done)
        for k in keys:
            self.st.held.pop(k, None)

    # ---- waiting ----------------------------------------------------------------------------------------
    async def _wait(self, live: list[Live]) -> list[tuple[Live, Any]]:
        """Poll until at least one batch has ended; returns those (with the server's record, None if gone)."""
        import openai

        while True:
            ended: list[tuple[Live, Any]] = []
            for lb in live:
                try:
                    b = await self.client.batches.retrieve(lb.batch_id)
                except openai.NotFoundError:
                    self._vanished(lb.key, lb.items)
                    ended.append((lb, None))
                    continue
                c = b.request_counts
                counts = (c.completed or 0, c.failed or 0, c.total or 0) if c else lb.counts
                if b.status != lb.status:
                    self.ledger.update(lb.key, server_status=b.status)
                if b.status != lb.status or counts != lb.counts:  # the counts move while the status waits
                    lb.status, lb.counts = b.status, counts
                    self.s.note = f"batch {b.id}: {b.status}" + (
                        f" ({counts[0]}/{counts[2]} done, {counts[1]} failed)" if c else ""
                    )
                if b.status in TERMINAL:
                    ended.append((lb, b))
            open_ = [lb for lb in live if lb.status not in TERMINAL]
            self.s.batch_completed, self.s.batch_failed, self.s.batch_total = (
                sum(lb.counts[i] for lb in open_) for i in range(3)
            )
            self._tick()
            if ended:
                return ended
            await asyncio.sleep(self.opts.batch_poll_s)

    # ---- reading results --------------------------------------------------------------------------------
    async def _collect(self, lb: Live, batch: Any) -> None:
        """Read the output then the error file, storing every reply as it is read; release the batch's rows."""
        for k in lb.items:
            self.st.held.pop(k, None)
        if batch is None:
            return
        ids = set(lb.items)
        stored = self.store.done_ids(self.judge.id, self.rubric.version, ids, final=self.opts.final_statuses())
        seen: set[str] = set()
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                text = (await self.client.files.content(file_id)).text
                self._read_lines(text, ids - stored, seen)
        for k in ids - stored - seen:  # never run (expired, cancelled, failed validation): not billed
            self.st.not_run[k] = self.st.not_run.get(k, 0) + 1
        if batch.status == "failed" and not seen:
            self.st.failed_in_a_row += 1
            if self.st.failed_in_a_row >= self.limits.max_failed:
                errors = [f"{e.code}: {e.message}" for e in (batch.errors.data or [])] if batch.errors else []
                raise JudgeError(
                    f"{self.limits.max_failed} batches in a row failed on the server (last {batch.id}"
                    f": {'; '.join(errors)[:300] or 'no reason given'}); run again to resume"
                )
        else:
            self.st.failed_in_a_row = 0
        self.ledger.update(
            lb.key,
            state="done",
            server_status=batch.status,
            extra={"output_file_id": batch.output_file_id, "error_file_id": batch.error_file_id},
        )
        self._give_up_unrun()
        self._tick()

    def _read_lines(self, text: str, wanted: set[str], seen: set[str]) -> None:
        finished: list[Rating] = []
        log: list[tuple[str, str, str, str, str]] = []
        for line in text.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a torn line: its row is not seen, so it is sent again
            cid = rec.get("custom_id") if isinstance(rec, dict) else None
            if cid not in wanted or cid in seen:
                continue
            it = self._item(cid)
            rep = self._line_reply(rec, it)
            if rep is None:  # never run by the server
                continue
            seen.add(cid)
            rating = self._settle(it, rep, log)
            if rating is not None:
                finished.append(rating)
            if len(finished) >= 100:
                self._store(finished)
                finished = []
        self._store(finished)
        if log:
            self.store.log_attempts(log)

    def _item(self, key: str) -> Item:
        """The run's item, or (rows of a re-attached batch this run was not given) a bare one to settle with:
        settled if its reply is final, never put in a batch (it has no prompt here)."""
        return self.items.get(key) or Item(key, Request(key=key, system="", user="", labels=self.labels))

    def _line_reply(self, rec: dict, it: Item) -> Reply | None:
        """One output/error line -> the Reply a direct request would have got (None: the server never ran it)."""
        from alpagasus.judges.openai_compat import http_error

        resp, err = rec.get("response") or {}, rec.get("error") or {}
        code = resp.get("status_code")
        if code == 200:  # its text may quote the body (a key echoed): settle_in_run redacts it, as every reply
            return self.judge.reply(resp.get("body"), it.request)
        if err.get("code") in NOT_RUN:
            return None
        if code:
            body = resp.get("body") or {}
            msg = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
            return http_error(int(code), redact(msg or json.dumps(body), [_key(self.judge)]))  # before the cut
        return Reply(error=f"batch error {err.get('code')}: {err.get('message')}")

    def _settle(self, it: Item, rep: Reply, log: list) -> Rating | None:
        """As the direct engine settles a reply: tokens charged, attempt counted, re-ask or retry -> next batch."""
        it.tokens_in, it.tokens_out = it.tokens_in + rep.tokens_in, it.tokens_out + rep.tokens_out
        self.s.tokens_in += rep.tokens_in
        self.s.tokens_out += rep.tokens_out
        it.attempts += 1
        rating, _ = settle_in_run(
            it, rep, self.judge.id, self.rubric, self.opts, self.floor, self.s, judge_secrets(self.judge)
        )
        if rating is None:  # asked again in the next batch (the batch itself is the backoff)
            outcome = "error" if rep.error else "reask"
            log.append((it.key, self.judge.id, self.rubric.version, outcome, rep.error or (rep.text or "")[:200]))
        return rating

    def _give_up_unrun(self) -> None:
        """Rows no batch would run after max_attempts tries are stored as `error` (a later run tries again)."""
        gone = [k for k, n in self.st.not_run.items() if n >= self.opts.max_attempts and k in self.items]
        self._store(
            [
                Rating(
                    k,
                    self.judge.id,
                    self.rubric.version,
                    None,
                    "error",
                    created_at=time.time(),
                    raw=f"not run by {self.opts.max_attempts} batches in a row",
                    attempts=0,
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

    def _summary_note(self) -> str:
        parts = [
            f"{self.s.batches} batch(es) created",
            f"{self.st.reattached} batch(es) of an earlier run re-attached" if self.st.reattached else "",
            f"{self.st.vanished_rows} row(s) of batches the server no longer knows were resubmitted"
            if self.st.vanished_rows
            else "",
        ]
        return "batch: " + ", ".join(p for p in parts if p)
