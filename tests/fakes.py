"""One configurable fake judge for the tests: scripted replies through the real rate/compare loops, no model.

    FakeJudge(reply="Score: 4")                            every request gets that reply
    FakeJudge(reply=Reply(score=4.0, probs={"4": 1.0}))    a ready-made Reply (copied per request)
    FakeJudge(reply=lambda request: ...)                   a reply computed from each Request (str or Reply)
    FakeJudge(reply={"a0": ["nonsense", "4\\nfine"]},       a script: per key, the replies in the order asked
              key=lambda r: r.example.output)               (default key: Request.key, the item id)

A str reply starting with "!" is a transport error (Reply(error=rest)); any other str is generated text.

It counts what it is asked: `calls` (score() calls), `asked` (request keys, in order), `batches` (sizes of
each call), and on the class, `FakeJudge.log` (keys asked of every FakeJudge since `FakeJudge.reset()`), for
judges the code under test builds itself from a spec. `on_call(requests)` runs in the event loop at the very
moment score() is called, before any reply is computed (e.g. to see how far the engine has read its input).

Behind a spec: `FakeJudge.register("fixed", reply=..., mode="generate")` makes `judges.get("fixed:v1")` (and
`--judge fixed:v1` on the CLI) build a FakeJudge with that configuration and id "fixed:v1#generate".
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, Callable, ClassVar

from alpagasus import judges
from alpagasus.judges.base import LocalJudge
from alpagasus.records import Reply, Request


class FakeJudge(LocalJudge):
    """A LocalJudge whose replies the test writes. See the module docstring."""

    log: ClassVar[list[str]] = []
    _configs: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(
        self,
        arg: str = "",
        mode: str | None = None,
        *,
        backend: str | None = None,
        reply: Any = None,
        key: Callable[[Request], str] | None = None,
        id: str | None = None,
        model: str | None = None,
        batch_size: int | None = None,
        concurrency: int | None = None,
        threaded: bool | None = None,
        on_call: Callable[[list[Request]], None] | None = None,
        **_: Any,
    ):
        given = dict(
            mode=mode,
            reply=reply,
            key=key,
            id=id,
            model=model,
            batch_size=batch_size,
            concurrency=concurrency,
            threaded=threaded,
            on_call=on_call,
        )
        # a registered configuration wins over what the spec's caller passes (its mode is the judge's own)
        config = {**{k: v for k, v in given.items() if v is not None}, **self._configs.get(backend or "", {})}
        self.mode = config.get("mode", "generate")
        self.batch_size = config.get("batch_size", LocalJudge.batch_size)
        self.concurrency = config.get("concurrency", LocalJudge.concurrency)
        self.model = config.get("model", "fake")
        self.threaded = config.get("threaded", True)  # like LocalJudge: replies computed in a worker thread
        self.on_call = config.get("on_call")
        self.key = config.get("key", lambda r: r.key)
        self._id = config.get("id") or f"{backend or 'fake'}:{arg}#{self.mode}"
        spec = config.get("reply", "5")
        self.script = {k: list(v) for k, v in spec.items()} if isinstance(spec, dict) else None
        self.reply = None if isinstance(spec, dict) else spec
        self.calls = 0
        self.asked: list[str] = []
        self.batches: list[int] = []
        self.loaded = False

    @classmethod
    def register(cls, backend: str, **config: Any) -> None:
        """`judges.get(f"{backend}:ARG")` builds a FakeJudge with this configuration."""
        cls._configs[backend] = config
        judges.register(backend, f"{__name__}:{cls.__name__}")

    @classmethod
    def reset(cls) -> None:
        cls.log = []

    @property
    def id(self) -> str:
        return self._id

    def load(self) -> None:
        self.loaded = True

    async def score(self, requests: list[Request]) -> list[Reply]:
        self.calls += 1
        self.batches.append(len(requests))
        keys = [r.key for r in requests]
        self.asked += keys
        FakeJudge.log += keys
        if self.on_call is not None:
            self.on_call(requests)
        if self.threaded:
            return await asyncio.to_thread(self.score_sync, requests)
        await asyncio.sleep(0)
        return self.score_sync(requests)

    def score_sync(self, requests: list[Request]) -> list[Reply]:
        return [self._reply_for(r) for r in requests]

    def _reply_for(self, request: Request) -> Reply:
        if self.script is not None:
            k = self.key(request)
            if not self.script.get(k):
                raise AssertionError(f"FakeJudge: no scripted reply left for {k!r}")
            got = self.script[k].pop(0)
        elif callable(self.reply):
            got = self.reply(request)
        else:
            got = self.reply
        if isinstance(got, Reply):
            return dataclasses.replace(got)
        if got.startswith("!"):
            return Reply(error=got[1:])
        return Reply(text=got, model=self.model)


__all__ = ["FakeJudge"]
