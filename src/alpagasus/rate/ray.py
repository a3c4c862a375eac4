"""Rating on a Ray cluster (`alpagasus rate ... --ray [ADDRESS]`): Ray Data actors rate blocks, the driver stores.

One Ray Data pipeline runs for the whole input, so each actor loads its judge once. A read task streams blocks
of pending examples out of a small feed actor that a driver thread fills from the input, never holding more
than a few blocks per actor in the cluster (a generator over millions of rows is never materialised). Each map
actor builds and loads its own judge, then rates one block per call through the real engine (retries, re-asks,
Retry-After) into an in-memory sink, and returns the block's ratings. The driver alone writes the store,
committing each block as it arrives. A killed worker loses only its block in flight: Ray Data restarts the actor
and runs the block again, and the driver drops results for ids it already stored. Rows lost in transit (a read
task dying with its node) are sent again in a sweep pass. Ray is imported only here, only when used.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import pickle
import signal
import sqlite3
import threading
import time
from types import SimpleNamespace
from typing import Any, Iterable, Iterator

from alpagasus.engine.loop import Progress, chunked, run_items
from alpagasus.engine.types import Interrupted, Item, RunCounts, RunOptions, StoreWriteError
from alpagasus.judges.base import Judge, JudgeError, OutageError
from alpagasus.prompts.rubric import Rubric
from alpagasus.prompts.template import Template
from alpagasus.rate.loop import Pending, RateSummary, build_request
from alpagasus.records import Example, Rating
from alpagasus.redact import SECRET_KEYS
from alpagasus.store import Store

__all__ = ["rate_on_ray", "RayRateError"]
WINDOW = 4096  # examples checked against the store per query
SWEEPS = 2  # extra passes for rows lost in transit, before giving up (resumably)
SECRET_ENV = "ALPAGASUS_SECRET_"  # + an option's name: a judge's key, set in the Ray workers' environment


class RayRateError(JudgeError):
    """Ray is missing or unreachable, or the Ray job failed. What was rated is stored; a rerun resumes."""


def rate_on_ray(
    examples: Iterable[Example],
    *,
    judge: Judge,
    judge_spec: str,
    judge_options: dict[str, Any],
    template: Template,
    store: Store,
    options: RunOptions,
    address: str | None = None,
    progress: Progress | None = None,
    rate_empty: bool = False,
    block_rows: int | None = None,
    actors: int | None = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    runtime_env: dict | None = None,
) -> RateSummary:
    """Rate `examples` (deduplicated) on Ray, with the statuses, store and resume semantics of `rate.rate`.

    `address`: None/"" starts a local cluster (or uses the one `ray.init` already started in this process),
    "auto", "HOST:PORT" or "ray://HOST:10001" connects. `judge` is the driver's judge, never loaded here (its id
    and mode); each actor builds its own with `judges.get(judge_spec, mode=judge.mode, **judge_options)`.
    `block_rows`: rows per Ray task (default: max(64, 4x the judge's concurrency, its batch size), so that an
    API judge's window is rarely waiting on a block's last replies). `actors`: pool size
    (default: one actor per GPU for vllm judges and `device=cuda`, else one per CPU). Raises RayRateError (a
    JudgeError), OutageError, and `Interrupted` after Ctrl-C once the blocks in flight are stored."""
    s = RunCounts(judge=judge.id, prompt_version=template.version)
    reader = Store(store.path)  # the feeder thread's own connection; the driver's writes stay on this thread
    pending = Pending(reader, judge.id, template.version, options.retry_unparsed, WINDOW, rate_empty)
    block_rows = block_rows or max(64, 4 * judge.concurrency, judge.batch_size)
    try:
        blocks = _pending_blocks(examples, pending, block_rows, s)
        first = next(blocks, None)
        if first is None:  # nothing to do: no cluster started, no judge loaded
            return RateSummary(judge.id, template.version, already_rated=pending.already, empty=pending.empty)
        ray, started = _connect(address, runtime_env)
        try:
            gpu = judge_spec.startswith("vllm:") or str(judge_options.get("device", "")).startswith("cuda")
            num_gpus = (1 if gpu else 0) if num_gpus is None else num_gpus
            num_cpus = (0 if gpu else 1) if num_cpus is None else num_cpus
            res = ray.cluster_resources()
            actors = actors or max(
                1, int(res.get("GPU", 0) // num_gpus if num_gpus else res.get("CPU", 1) // max(num_cpus, 1))
            )
            public, env = split_secrets(judge_options)  # keys travel in the actors' environment, not their args
            worker = dict(
                judge_spec=judge_spec,
                mode=judge.mode,
                judge_options=public,
                judge_id=judge.id,
                template=template,
                options=options,
            )
            run = _Run(
                ray,
                store,
                options,
                s,
                progress,
                worker,
                dict(actors=actors, num_cpus=num_cpus, num_gpus=num_gpus or None, env=env),
            )
            run.all(itertools.chain([first], blocks), block_rows)
        finally:
            if started:
                ray.shutdown()
    finally:
        reader.close()
    return RateSummary(judge.id, template.version, already_rated=pending.already, empty=pending.empty, run=s)


def split_secrets(judge_options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(the judge options without its secrets, the environment variables that carry them to the workers). An
    actor's constructor arguments are pickled into Ray's task specs (and the GCS, logs, the dashboard); a
    runtime environment's variables are only set in the worker processes (docs/ray.md)."""
    public = {k: v for k, v in judge_options.items() if not (SECRET_KEYS.search(k) and isinstance(v, str))}
    return public, {SECRET_ENV + k.upper(): v for k, v in judge_options.items() if k not in public}


def secret_options() -> dict[str, str]:
    """In a worker: the judge options `split_secrets` sent through the environment."""
    return {k[len(SECRET_ENV) :].lower(): v for k, v in os.environ.items() if k.startswith(SECRET_ENV)}


def _connect(address: str | None, runtime_env: dict | None) -> tuple[Any, bool]:
    """Ray, joined at `address` or started here; and whether this call started it (so it shuts it down)."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise RayRateError(f"--ray needs Ray Data ({e}): pip install 'alpagasus[ray]'") from None
    if ray.is_initialized():
        return ray, False
    try:
        ray.init(address=address or None, runtime_env=runtime_env, logging_level=logging.WARNING)
    except Exception as e:  # ConnectionError, a version mismatch, a bad ray:// address...
        raise RayRateError(f"cannot connect to the Ray cluster at {address or 'a new local cluster'}: {e}") from e
    return ray, True


def _pending_blocks(
    examples: Iterable[Example], pending: Pending, block_rows: int, s: RunCounts
) -> Iterator[list[Example]]:
    """Full blocks of the examples not yet rated for good, checked against the store a window at a time."""
    buf: list[Example] = []
    for window in chunked(examples, WINDOW):
        todo = pending.split(window)
        s.to_judge += len(todo)
        buf.extend(todo)
        while len(buf) >= block_rows:
            yield buf[:block_rows]
            buf = buf[block_rows:]
    if buf:
        yield buf


class _Run:
    """The driver: a thread feeds blocks, this thread commits results; Ctrl-C and lost rows handled here."""

    def __init__(self, ray, store, options, s, progress, worker, pool):
        self.ray, self.store, self.opts, self.s, self.progress = ray, store, options, s, progress
        self.worker, self.pool = worker, pool
        self.final = options.final_statuses()
        self.outstanding: dict[str, Example] = {}  # sent to the cluster, not stored yet
        self.max_blocks = 2 * pool["actors"] + 2  # out in the cluster at once: every actor has its next block
        self.cond = threading.Condition(threading.RLock())  # RLock: the SIGINT handler may take it re-entrantly
        self.stopping = self.interrupted = False
        self.feed_error: BaseException | None = None
        self.t0 = time.perf_counter()

    def all(self, blocks: Iterator[list[Example]], block_rows: int) -> None:
        with self._sigint():
            for _ in range(SWEEPS + 1):
                self._pass(blocks, block_rows)
                if self.feed_error is not None:
                    raise self.feed_error
                if self.interrupted:
                    raise Interrupted(self.s)
                if not self.outstanding:
                    return
                lost = list(self.outstanding.values())  # sent, never came back: a read task died with them
                self.outstanding.clear()
                blocks = chunked(lost, block_rows)
            raise RayRateError(
                f"{len(lost)} rows were lost in transit {SWEEPS + 1} times (is the cluster losing "
                "nodes?); everything else is stored: run the same command again to resume"
            )

    def _pass(self, blocks: Iterator[list[Example]], block_rows: int) -> None:
        ray = self.ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        feed = ray.remote(num_cpus=0)(_Feed).options(scheduling_strategy=here).remote()
        self.stopping = False
        feeder = threading.Thread(target=self._feed, args=(feed, blocks, block_rows), daemon=True)
        log, level = logging.getLogger("ray.data"), logging.getLogger("ray.data").level
        batches: Any = iter(())
        try:
            ds = self._dataset(feed)
            log.setLevel(logging.ERROR)  # its INFO lines and warnings for each run would break our progress bar
            feeder.start()
            batches = iter(ds.iter_batches(batch_size=None, batch_format="numpy"))
            for batch in batches:
                for payload in batch["result"]:
                    self._commit(pickle.loads(payload))
        except (KeyboardInterrupt, JudgeError, StoreWriteError):
            raise
        except Exception as e:  # the Ray job failed: a judge that cannot load, a lost object...
            why, cause = type(e).__name__, e
            while cause is not None:  # the deepest message's last line: the root cause, not pages of traceback
                why = ([x.strip() for x in str(cause).splitlines() if x.strip()] or [why])[-1]
                cause = cause.__cause__
            raise RayRateError(
                f"the Ray job failed: {why[:400]}. Everything rated so far is stored: fix the cause "
                "and run the same command again to resume"
            ) from e
        finally:
            with self.cond:
                self.stopping = True
                self.cond.notify_all()
            if feeder.is_alive():
                feeder.join(timeout=30)
            with contextlib.suppress(Exception):
                batches.close()  # shuts the execution down when we leave early
            with contextlib.suppress(Exception):
                ray.kill(feed)
            log.setLevel(level)

    def _dataset(self, feed: Any) -> Any:
        """Read task streaming the feed -> pool of _BlockRater actors. Ray Data's defaults restart a dead map actor
        and retry its blocks (max_restarts=-1, max_task_retries=-1: ActorPoolMapOperator._apply_default_remote_args)."""
        data = self.ray.data
        ctx = data.DataContext.get_current()
        saved = ctx.target_max_block_size, ctx.enable_progress_bars
        # A block of examples travels as one row; a 1-byte target block size makes the read task emit each row
        # at once, instead of coalescing rows towards 128 MB blocks (which would stall the stream).
        ctx.target_max_block_size, ctx.enable_progress_bars = 1, False
        try:  # the dataset keeps a copy of the context taken here
            ds = data.read_datasource(_feed_source(feed), num_cpus=0, override_num_blocks=1)
            return ds.map_batches(
                _BlockRater,
                batch_size=1,
                batch_format="numpy",
                fn_constructor_kwargs={**self.worker, "feed": feed},
                compute=data.ActorPoolStrategy(size=self.pool["actors"]),
                num_cpus=self.pool["num_cpus"],
                num_gpus=self.pool["num_gpus"],
                runtime_env={"env_vars": self.pool["env"]} if self.pool["env"] else None,
            )
        finally:
            ctx.target_max_block_size, ctx.enable_progress_bars = saved

    def _feed(self, feed: Any, blocks: Iterator[list[Example]], block_rows: int) -> None:
        """Thread: send blocks while fewer than max_blocks are out; after Ctrl-C or the end of the pass, tell the
        feed to stop, so that actors skip the blocks they hold but have not started."""
        room = lambda: self.stopping or len(self.outstanding) < self.max_blocks * block_rows  # noqa: E731
        try:
            for block in blocks:
                with self.cond:
                    self.cond.wait_for(room)
                    if self.stopping:
                        break
                    self.outstanding.update((e.id, e) for e in block)
                self.ray.get(feed.put.remote(pickle.dumps(block)))
        except BaseException as e:  # a bad row in the input...: the blocks sent are still rated, then it stops
            self.feed_error = e
        with contextlib.suppress(Exception):
            self.ray.get(feed.close.remote(), timeout=30)
            with self.cond:
                self.cond.wait_for(lambda: self.stopping)
            self.ray.get(feed.close.remote(stop=True), timeout=30)

    def _commit(self, res: dict) -> None:
        """Store one block's ratings (ids still outstanding and not final in the store), add its figures."""
        s = self.s
        s.add(res["counts"], outcomes=False)  # items and statuses: counted below, from what is stored
        with self.cond:
            fresh = [r for r in res["ratings"] if r.example_id in self.outstanding]
        done = self.store.done_ids(s.judge, s.prompt_version, [r.example_id for r in fresh], final=self.final)
        fresh = [r for r in fresh if r.example_id not in done]
        try:
            self.store.put_many(fresh)
            self.store.log_attempts(res["log"])
        except (sqlite3.Error, OSError) as e:
            raise StoreWriteError.of(self.store.path, e) from e
        with self.cond:
            for r in res["ratings"]:
                self.outstanding.pop(r.example_id, None)
            self.cond.notify_all()
        for r in fresh:
            s.settled(r.status)
        s.elapsed_s = time.perf_counter() - self.t0
        s.cost = self.opts.cost(s.tokens_in, s.tokens_out)
        if self.progress:
            self.progress(s)
        if res["error"]:
            kind, msg = res["error"]
            raise (OutageError if kind == "outage" else RayRateError)(
                f"{msg} (on a Ray worker); everything rated so far is stored: run the same command again to resume"
            )

    @contextlib.contextmanager
    def _sigint(self) -> Iterator[None]:
        """First Ctrl-C: send nothing new, store the blocks already started (up to drain_s), then stop with
        Interrupted. A second Ctrl-C (or drain_s passing) stops at once. Only in the main thread."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        timer = threading.Timer(self.opts.drain_s, lambda: os.kill(os.getpid(), signal.SIGINT))
        timer.daemon = True

        def on_sigint(*_: Any) -> None:
            if self.interrupted:
                raise KeyboardInterrupt
            self.interrupted = True
            self.s.note = "interrupted: storing the blocks in flight (Ctrl-C again to quit now)"
            with self.cond:
                self.stopping = True
                self.cond.notify_all()
            timer.start()

        old = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        except KeyboardInterrupt:
            raise Interrupted(self.s) from None
        finally:
            timer.cancel()
            signal.signal(signal.SIGINT, old)


class _Feed:
    """A Ray actor (async) holding blocks for the read task. take() answers None once closed and empty, so that
    a read task Ray retries ends instead of waiting forever; stopped() tells actors to skip what they hold."""

    def __init__(self) -> None:
        self.items: list[bytes] = []
        self.closed = self.stop = False
        self.cond = asyncio.Condition()

    async def put(self, item: bytes) -> None:
        async with self.cond:
            self.items.append(item)
            self.cond.notify_all()

    async def take(self) -> bytes | None:
        async with self.cond:
            await self.cond.wait_for(lambda: self.closed or self.items)
            return self.items.pop(0) if self.items else None

    async def close(self, stop: bool = False) -> None:
        async with self.cond:
            self.closed, self.stop = True, self.stop or stop
            if stop:
                self.items.clear()
            self.cond.notify_all()

    async def stopped(self) -> bool:
        return self.stop


def _feed_source(feed: Any) -> Any:
    """A Ray Data datasource: one read task streaming the feed's blocks, one row (pickled examples) each."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class FeedSource(Datasource):
        def estimate_inmemory_data_size(self) -> None:
            return None

        def get_read_tasks(
            self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
        ) -> list:
            def read() -> Iterator[Any]:
                import pyarrow as pa
                import ray

                while (item := ray.get(feed.take.remote())) is not None:
                    yield pa.table({"rows": pa.array([item], type=pa.binary())})

            return [ReadTask(read, BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None))]

    return FeedSource()


class _BlockRater:
    """A Ray Data map actor: builds and loads its own judge once, then rates one block per call."""

    def __init__(
        self,
        judge_spec: str,
        mode: str,
        judge_options: dict,
        judge_id: str,
        template: Template,
        options: RunOptions,
        feed: Any,
    ):
        from alpagasus import judges

        self.judge = judges.get(judge_spec, mode=mode, **judge_options, **secret_options())
        if self.judge.id != judge_id:  # ratings are stored under this id: a different model would never resume
            raise JudgeError(
                f"this worker's judge is {self.judge.id}, the driver's {judge_id}: install the "
                "same alpagasus and models on every node"
            )
        self.judge.load()
        self.template, self.opts, self.feed = template, options, feed
        self.loop = asyncio.new_event_loop()  # one loop for the actor's life: API clients keep their connections

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        return {"result": np.array([self.rate(pickle.loads(b)) for b in batch["rows"]], dtype=object)}

    def rate(self, examples: list[Example]) -> bytes:
        import ray

        t, j, error = self.template, self.judge, None
        counts = RunCounts()
        ratings: list[Rating] = []
        log: list[tuple] = []  # the engine's store, on a worker: kept in memory, returned with the block
        sink = SimpleNamespace(path="(a Ray worker's memory)", put_many=ratings.extend, log_attempts=log.extend)
        try:
            if ray.get(self.feed.stopped.remote(), timeout=30):
                examples = []  # Ctrl-C on the driver: not started, not rated (the driver knows them unrated)
        except Exception:  # the feed is gone: so is the driver's pass
            examples = []
        items = [Item(e.id, build_request(e, t, j.mode)) for e in examples]
        try:
            counts = self.loop.run_until_complete(
                run_items(
                    items,
                    j,
                    sink,
                    Rubric.rating(t),  # type: ignore[arg-type]
                    self.opts,
                )
            )
        except OutageError as e:  # the judge stayed away: return what was rated; the driver stops resumably
            error = ("outage", str(e))
        except Exception as e:
            error = ("error", f"{type(e).__name__}: {e}")
        return pickle.dumps({"ratings": ratings, "log": log, "error": error, "counts": counts})
