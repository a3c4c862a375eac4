"""The retry policy both engines apply to a reply before settling it (the direct window, engine/loop.py, and
provider batches, engine/batch.py), so that a reply costs an item the same whichever way it was sent.

A 429 (rate limited) is not an attempt: the request was not served, so it is charged nothing but its wait, up
to `max_throttled` times per item; every other reply counts as one attempt against `max_attempts`. Tokens and
time are charged to the item and the run whatever the outcome (a provider bills what it served)."""

from __future__ import annotations

from alpagasus.engine.types import Item, RunCounts, RunOptions
from alpagasus.records import Reply


def throttled(rep: Reply) -> bool:
    """A rate-limit answer (HTTP 429, an overloaded provider): retried without charging an attempt."""
    return rep.error is not None and rep.retryable and bool((rep.extra or {}).get("throttled"))


def charge(it: Item, rep: Reply, opts: RunOptions, counts: RunCounts) -> float | None:
    """Charge one reply to its item and the run. Returns the wait before asking again when the reply was
    throttled and the item may still wait (no attempt counted); None when it counted as an attempt (settle it)."""
    it.tokens_in += rep.tokens_in
    it.tokens_out += rep.tokens_out
    it.latency_s += rep.latency_s
    counts.tokens_in += rep.tokens_in
    counts.tokens_out += rep.tokens_out
    if throttled(rep) and it.throttled < opts.max_throttled:
        it.throttled += 1
        counts.throttled += 1
        return max(rep.retry_after or 0.0, opts.backoff(it.throttled))
    it.attempts += 1
    if rep.error is not None and (rep.extra or {}).get("ambiguous"):
        counts.ambiguous += 1
    return None


__all__ = ["charge", "throttled"]
