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

import contextlib
import itertools
import logging
import os
import pickle
import signal
import sqlite3
import threading
import time
from typing import Any, Iterable, Iterator, Mapping

from alpagasus.engine.loop import Progress, chunked
from alpagasus.engine.types import Interrupted, RunCounts, RunOptions, StoreWriteError
from alpagasus.judges.base import Judge, JudgeError, OutageError
from alpagasus.prompts.template import Template
from alpagasus.rate.loop import Pending, RateSummary
from alpagasus.rate.workers import SECRET_ENV, BlockRater, Feed, feed_source, split_secrets
from alpagasus.records import Example
from alpagasus.store import Store

__all__ = ["rate_on_ray", "reservation", "RayRateError", "SECRET_ENV", "split_secrets"]
WINDOW = 4096  # examples checked against the store per query
SWEEPS = 2  # extra passes for rows lost in transit, before giving up (resumably)


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
    (default: `reservation`, from what the judge declares in `resources`). Raises RayRateError (a
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
            pool = reservation(judge, ray.cluster_resources(), actors, num_cpus, num_gpus)
            public, env = split_secrets(judge_options)  # keys travel in the actors' environment, not their args
            worker = dict(
                judge_spec=judge_spec,
                mode=judge.mode,
                judge_options=public,
                judge_id=judge.id,
                template=template,
                options=options,
            )
            run = _Run(ray, store, options, s, progress, worker, {**pool, "env": env})
            run.all(itertools.chain([first], blocks), block_rows)
        finally:
            if started:
                ray.shutdown()
    finally:
        reader.close()
    return RateSummary(judge.id, template.version, already_rated=pending.already, empty=pending.empty, run=s)


def reservation(
    judge: Judge,
    cluster: Mapping[str, float],
    actors: int | None = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
) -> dict[str, Any]:
    """The actor pool: each actor reserves what the judge declares (`judge.resources`: GPUs for vllm:, ifd:vllm:
    and a cuda device, a CPU otherwise) unless given; as many actors as the cluster's `cluster_resources()` hold
    (one per GPU share, else one per CPU share) unless given."""
    gpus = judge.resources.gpus if num_gpus is None else num_gpus
    cpus = judge.resources.cpus if num_cpus is None else num_cpus
    fits = cluster.get("GPU", 0) // gpus if gpus else cluster.get("CPU", 1) // max(cpus, 1)
    return {"actors": actors or max(1, int(fits)), "num_cpus": cpus, "num_gpus": gpus or None}


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
        feed = ray.remote(num_cpus=0)(Feed).options(scheduling_strategy=here).remote()
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
            why: str = type(e).__name__
            cause: BaseException | None = e
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
        """Read task streaming the feed -> pool of BlockRater actors. Ray Data's defaults restart a dead map actor
        and retry its blocks (max_restarts=-1, max_task_retries=-1: ActorPoolMapOperator._apply_default_remote_args)."""
        data = self.ray.data
        ctx = data.DataContext.get_current()
        saved = ctx.target_max_block_size, ctx.enable_progress_bars
        # A block of examples travels as one row; a 1-byte target block size makes the read task emit each row
        # at once, instead of coalescing rows towards 128 MB blocks (which would stall the stream).
        ctx.target_max_block_size, ctx.enable_progress_bars = 1, False
        try:  # the dataset keeps a copy of the context taken here
            ds = data.read_datasource(feed_source(feed), num_cpus=0, override_num_blocks=1)
            return ds.map_batches(
                BlockRater,
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
