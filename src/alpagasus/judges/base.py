"""The judge protocol every backend implements, the base class of in-process backends, and the one helper
they share: label probabilities -> expected score."""

from __future__ import annotations

import asyncio
from typing import Mapping, Protocol, Sequence, runtime_checkable

from alpagasus.records import Reply, Request


class JudgeError(RuntimeError):
    """A judge cannot be built or used (bad spec, missing extra, unreachable model)."""


class OutageError(JudgeError):
    """The backend is unreachable for now: the caller pauses the run rather than failing items."""


class JudgeOptionError(JudgeError):
    """Options given to a judge that its backend does not take (a misspelt option, or a flag that means
    nothing for it, such as --base-url for a predictor)."""

    def __init__(self, spec: str, unknown: Sequence[str], accepted: Sequence[str]):
        self.spec, self.unknown, self.accepted = spec, list(unknown), list(accepted)
        names = ", ".join(f"{o} (--{o.replace('_', '-')})" for o in self.unknown)
        super().__init__(f"the judge {spec} does not take {names}; it takes: {', '.join(self.accepted) or 'none'}")


@runtime_checkable
class Judge(Protocol):
    mode: str  # "generate" | "logprob" (or "predict" for predictors)
    batch_size: int  # requests per score() call that suit the backend
    concurrency: int  # score() calls the engine keeps in flight
    sort_by_length: bool  # the engine groups requests of similar length into a batch (local backends pad)

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
        """Release what load() took (synchronously)."""
        ...

    async def aclose(self) -> None:
        """Close async clients in the event loop that used them (called by the engine when a run ends)."""
        ...


class LocalJudge:
    """Shared behaviour of in-process backends: compute runs in a worker thread."""

    batch_size = 16
    concurrency = 1
    mode = "logprob"
    sort_by_length = False

    def load(self) -> None:  # pragma: no cover - overridden
        pass

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        self.close()

    @property
    def max_context(self) -> int | None:
        return None

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4)

    def score_sync(self, requests: list[Request]) -> list[Reply]:  # pragma: no cover - overridden
        raise NotImplementedError

    async def score(self, requests: list[Request]) -> list[Reply]:
        return await asyncio.to_thread(self.score_sync, requests)


def label_scores(reply: Reply, label_probs: Mapping[str, float]) -> Reply:
    """Fill a logprob reply from the probability each score label got at the answer position: the labels'
    share of it (`probs`), the expected score, the argmax, and `label_mass` (how much probability the labels
    held at all: low means the judge was not answering with a score). No mass: no score, so the reply is
    stored as unparsed, never as a made-up number."""
    mass = float(sum(label_probs.values()))
    reply.extra = {**(reply.extra or {}), "label_mass": mass}
    if mass <= 0:
        return reply
    reply.probs = {k: v / mass for k, v in label_probs.items()}
    reply.score = sum(float(k) * p for k, p in reply.probs.items())
    reply.extra["argmax"] = max(reply.probs, key=reply.probs.get)
    return reply
