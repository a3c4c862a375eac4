"""The engine's vocabulary: a run's options, its items, its counts, its errors, and the small formulas every
layer shares (the final statuses, the backoff delay, the cost, the store-write error). One home each."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from alpagasus.records import Request
from alpagasus.store import FINAL


@dataclass
class RunOptions:
    """How one judging run behaves (rating or pairwise comparison alike)."""

    max_reasks: int = 2  # extra asks after a reply with no score (generate mode)
    max_attempts: int = 5  # requests charged to an item (failures, re-asks) before it is stored as `error`
    max_throttled: int = 30  # 429 answers per item before it is stored as `error` (retried by the next run)
    retry_unparsed: bool = False  # ask again for items stored as `unparsed` by an earlier run
    price_in: float | None = None  # currency per million input tokens
    price_out: float | None = None
    max_tokens: int = 256  # generate mode: reply length cap
    backoff_s: float = 1.0  # first retry delay after a failure; doubles per attempt (with jitter)
    max_backoff_s: float = 60.0  # a Retry-After longer than this is treated as an outage (pause)
    max_outage_s: float = 3600.0  # give up (resumably) after the judge is unreachable this long
    outage_after: int = 8  # this many failures in a row, across items, mean the server is down
    probe_every_s: float = 30.0  # while the judge is away, one probe request at most this far apart
    drain_s: float = 15.0  # Ctrl-C: wait this long for the replies in flight (paid for), then quit
    # logprob mode: a reply whose score labels held less probability than this is not a score (asked again in
    # generate mode where the judge can, else `unparsed`). None: the judge's own default (0.5 for API judges,
    # which read the labels from the top log-probabilities; off for local judges). See settle.label_floor.
    min_label_mass: float | None = None
    batch: bool = False  # send through the provider's Batch API (engine/batch.py), not request by request
    batch_discount: float = 0.5  # with batch: prices are given at the direct rate and charged at this fraction
    batch_poll_s: float = 30.0  # with batch: seconds between status checks

    def final_statuses(self) -> tuple[str, ...]:
        """Stored statuses a run does not ask again: `error` never is final; `unparsed` not when retrying it."""
        return final_statuses(self.retry_unparsed)

    def backoff(self, attempt: int) -> float:
        """Delay before retry number `attempt` (1-based): doubling, capped, with jitter so clients spread out."""
        return min(self.max_backoff_s, self.backoff_s * 2 ** max(0, attempt - 1)) * (0.5 + random.random())

    def cost(self, tokens_in: int, tokens_out: int) -> float | None:
        """What the tokens cost at the given prices per million (None when no price is given)."""
        if self.price_in is None and self.price_out is None:
            return None
        rate = self.batch_discount if self.batch else 1.0  # Batch API: half the direct price at the providers
        return rate * (tokens_in * (self.price_in or 0) + tokens_out * (self.price_out or 0)) / 1e6


@dataclass
class Item:
    """One request to judge and what it has cost so far (attempts, re-asks, 429s, tokens, time)."""

    key: str  # the id the reply is stored under
    request: Request
    attempts: int = 0
    reasks: int = 0
    throttled: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    latency_s: float = 0.0
    extra: dict = field(default_factory=dict)  # kept in the final rating's extra (the label mass of a fallback)


@dataclass
class RunCounts:
    """What one judging run did. The engine writes these and nothing else does; a caller that runs the engine
    several times (Ray blocks) adds them up with `add`."""

    judge: str = ""
    prompt_version: str = ""
    to_judge: int = 0  # items handed to the engine
    requests_sent: int = 0
    ok: int = 0
    unparsed: int = 0
    invalid_input: int = 0  # too long for the judge's context: stored without a request
    error: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float | None = None
    elapsed_s: float = 0.0
    outage_s: float = 0.0  # time spent paused because the judge was unreachable
    ambiguous: int = 0  # attempts that timed out or were cut off and may have reached the server
    throttled: int = 0  # 429 answers (waited for, not charged to the item)
    fallbacks: int = 0  # logprob replies below the label-mass floor, asked again in generate mode
    batches: int = 0  # provider batches created (--batch)
    batches_reattached: int = 0  # --batch: batches of an earlier (killed) run found again and waited for
    batch_rows_resubmitted: int = 0  # --batch: rows of batches the server no longer knows, sent again
    # --batch: requests of the batches still running as the provider reports them (request_counts), so the
    # progress moves while a batch waits (their replies are read, and counted in `done`, when it ends)
    batch_completed: int = 0
    batch_failed: int = 0
    batch_total: int = 0
    note: str = ""  # what the run is waiting for right now (an outage), for progress displays

    @property
    def done(self) -> int:
        return self.ok + self.unparsed + self.invalid_input + self.error

    @property
    def used_batches(self) -> bool:
        """Whether the run went through provider batches (--batch): created, or re-attached from a killed run."""
        return bool(self.batches or self.batches_reattached or self.batch_rows_resubmitted)

    def batch_line(self) -> str:
        """What the provider batches did, in one line (printed after a --batch run)."""
        parts = [
            f"{self.batches} batch(es) created",
            f"{self.batches_reattached} batch(es) of an earlier run re-attached" if self.batches_reattached else "",
            f"{self.batch_rows_resubmitted} row(s) of batches the server no longer knows were resubmitted"
            if self.batch_rows_resubmitted
            else "",
        ]
        return "batch: " + ", ".join(p for p in parts if p)

    def settled(self, status: str) -> None:
        setattr(self, status, getattr(self, status) + 1)

    def add(self, other: RunCounts, outcomes: bool = True) -> None:
        """Add another run's counts (its judge, prompt, note and elapsed time are not summed). With
        `outcomes=False` only what it spent (requests, tokens, waits): for a caller that counts items and
        statuses itself, from what it actually stored (the Ray driver drops replies it already holds)."""
        for name in ADDED if outcomes else SPENT:
            setattr(self, name, getattr(self, name) + getattr(other, name))


SPENT = (
    "requests_sent",
    "tokens_in",
    "tokens_out",
    "outage_s",
    "ambiguous",
    "throttled",
    "fallbacks",
    "batches",
    "batches_reattached",
    "batch_rows_resubmitted",
)
ADDED = ("to_judge", "ok", "unparsed", "invalid_input", "error", *SPENT)


def final_statuses(retry_unparsed: bool = False) -> tuple[str, ...]:
    return tuple(s for s in FINAL if not (retry_unparsed and s == "unparsed"))


class StoreWriteError(RuntimeError):
    """The store could not be written (disk full...): the run stops; what was stored is intact."""

    @classmethod
    def of(cls, path: object, err: BaseException) -> StoreWriteError:
        return cls(
            f"cannot write the store {path}: {err}. Nothing stored was lost; free space (or fix the path) "
            "and run the same command again to resume"
        )


class Interrupted(KeyboardInterrupt):
    """Ctrl-C: the replies in flight were waited for and stored; `counts` says what this run did."""

    def __init__(self, counts: RunCounts):
        super().__init__("interrupted")
        self.counts = counts
