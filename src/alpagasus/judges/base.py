"""The judge protocol every backend implements."""
from __future__ import annotations

import asyncio
from typing import Protocol, runtime_checkable

from alpagasus.records import Reply, Request


class JudgeError(RuntimeError):
    """A judge cannot be built or used (bad spec, missing extra, unreachable model)."""


class OutageError(JudgeError):
    """The backend is unreachable for now: the caller pauses the run rather than failing items."""


@runtime_checkable
class Judge(Protocol):
    mode: str            # "generate" | "logprob" (or "predict" for predictors)
    batch_size: int      # requests per score() call that suit the backend
    concurrency: int     # score() calls the rate loop keeps in flight

    @property
    def id(self) -> str:
        """Identity stored with every rating: backend, model and mode."""
        ...

    def load(self) -> None:
        """Load weights / open clients. Called only when there is work to do."""
        ...

    async def score(self, requests: list[Request]) -> list[Reply]:
        """One Reply per Request, same order. Transport failures come back as Reply.error."""
        ...

    def count_tokens(self, text: str) -> int:
        """Token count for context checks and estimates (an approximation is fine)."""
        ...

    @property
    def max_context(self) -> int | None:
        """Prompt tokens the judge accepts, or None when unknown."""
        ...

    def close(self) -> None:
        ...


class LocalJudge:
    """Shared behaviour of in-process backends: compute runs in a worker thread."""

    batch_size = 16
    concurrency = 1
    mode = "logprob"

    def load(self) -> None:  # pragma: no cover - overridden
        pass

    def close(self) -> None:
        pass

    @property
    def max_context(self) -> int | None:
        return None

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4)

    def score_sync(self, requests: list[Request]) -> list[Reply]:  # pragma: no cover - overridden
        raise NotImplementedError

    async def score(self, requests: list[Request]) -> list[Reply]:
        return await asyncio.to_thread(self.score_sync, requests)
