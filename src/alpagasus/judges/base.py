"""The judge protocol every backend implements, the capabilities a judge declares (`JudgeBase`: attributes with
defaults, which the engine and the executors read and never probe for), the base class of in-process backends,
and the one helper they share: label probabilities -> expected score."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Protocol, Sequence, runtime_checkable

from alpagasus.records import Reply, Request

if TYPE_CHECKING:
    from alpagasus.engine.batchapi import BatchApi


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


@dataclass(frozen=True)
class Resources:
    """What one worker running a judge needs: Ray reserves it for each actor (rate/ray.py)."""

    gpus: float = 0.0  # 0: a CPU worker
    cpus: float = 1.0


CPU = Resources()
GPU = Resources(gpus=1.0, cpus=0.0)  # a GPU worker: its CPU work is the GPU's feeding, not worth a reservation


def device_resources(device: str | None) -> Resources:
    """A local model's needs from its `device` option: a GPU where it names one (cuda, cuda:1), else a CPU."""
    return GPU if str(device or "").startswith("cuda") else CPU


# The capabilities every judge declares (class or instance attributes; JudgeBase holds the defaults).
CAPABILITIES = ("min_label_mass", "generate_fallback", "logprobs", "order_blind", "pair_scores", "resources", "secrets")


class JudgeBase:
    """The declared capabilities of a judge, with their defaults; a backend overrides those that differ (as a
    class attribute, or in __init__ where an option decides, e.g. a device). The engine, compare and the
    executors read them; nothing probes a judge for methods or attributes."""

    min_label_mass: float = 0.0  # logprob mode: the default floor on the probability the score labels must hold
    # (API judges 0.5: they renormalise whatever labels show among the top log-probabilities); 0 = off
    generate_fallback: bool = False  # a logprob request under the floor can be asked again in generate mode
    logprobs: bool = False  # it answers logprob mode (the labels' probabilities, not only text)
    order_blind: bool = False  # pairwise: a verdict cannot depend on which answer came first
    pair_scores: bool = False  # pairwise: score() answers with Reply.pair (two typed scores), no review to parse
    resources: Resources = CPU  # what one worker needs (Ray reserves it per actor)
    secrets: tuple[str, ...] = ()  # values to redact wherever the judge's text is stored or shown (its API key)
    batch_api: BatchApi | None = None  # --batch: the provider's batch endpoint (engine/batchapi.py); None: no batch


@runtime_checkable
class Judge(Protocol):
    mode: str  # "generate" | "logprob" (or "predict" for predictors)
    batch_size: int  # requests per score() call that suit the backend
    concurrency: int  # score() calls the engine keeps in flight
    sort_by_length: bool  # the engine groups requests of similar length into a batch (local backends pad)
    # declared capabilities (see JudgeBase for their meaning and defaults)
    min_label_mass: float
    generate_fallback: bool
    logprobs: bool
    order_blind: bool
    pair_scores: bool
    resources: Resources
    secrets: tuple[str, ...]

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


class LocalJudge(JudgeBase):
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
    probs = {k: v / mass for k, v in label_probs.items()}
    reply.probs, reply.score = probs, sum(float(k) * p for k, p in probs.items())
    reply.extra["argmax"] = max(probs, key=lambda k: probs[k])
    return reply
