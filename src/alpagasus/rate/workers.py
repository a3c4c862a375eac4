"""What runs on the Ray cluster for `rate --ray` (rate/ray.py is the driver): the feed actor that holds blocks
for the read task, the datasource that streams them, and the map actor that builds its own judge and rates one
block per call through the real engine into memory. A judge's secrets travel in the workers' environment, never
in their arguments (`split_secrets`). Ray is imported only inside these functions, on the cluster."""

from __future__ import annotations

import asyncio
import os
import pickle
from types import SimpleNamespace
from typing import Any, Iterator

from alpagasus.engine.loop import run_items
from alpagasus.engine.types import Item, RunCounts, RunOptions
from alpagasus.judges.base import JudgeError, OutageError
from alpagasus.prompts.rubric import Rubric
from alpagasus.prompts.template import Template
from alpagasus.rate.loop import build_request
from alpagasus.records import Example, Rating
from alpagasus.redact import SECRET_KEYS

__all__ = ["BlockRater", "Feed", "feed_source", "split_secrets", "secret_options", "SECRET_ENV"]
SECRET_ENV = "ALPAGASUS_SECRET_"  # + an option's name: a judge's key, set in the Ray workers' environment


def split_secrets(judge_options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(the judge options without its secrets, the environment variables that carry them to the workers). An
    actor's constructor arguments are pickled into Ray's task specs (and the GCS, logs, the dashboard); a
    runtime environment's variables are only set in the worker processes (docs/ray.md)."""
    public = {k: v for k, v in judge_options.items() if not (SECRET_KEYS.search(k) and isinstance(v, str))}
    return public, {SECRET_ENV + k.upper(): v for k, v in judge_options.items() if k not in public}


def secret_options() -> dict[str, str]:
    """In a worker: the judge options `split_secrets` sent through the environment."""
    return {k[len(SECRET_ENV) :].lower(): v for k, v in os.environ.items() if k.startswith(SECRET_ENV)}


class Feed:
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


def feed_source(feed: Any) -> Any:
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


class BlockRater:
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
                    sink,  # type: ignore[arg-type]
                    Rubric.rating(t),  # type: ignore[arg-type]
                    self.opts,
                )
            )
        except OutageError as e:  # the judge stayed away: return what was rated; the driver stops resumably
            error = ("outage", str(e))
        except Exception as e:
            error = ("error", f"{type(e).__name__}: {e}")
        return pickle.dumps({"ratings": ratings, "log": log, "error": error, "counts": counts})
