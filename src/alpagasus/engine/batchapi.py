"""What the batch engine (engine/batch.py) needs of a provider's Batch API, and nothing of its client.

A judge that can be sent through a provider's batch endpoint sets `batch_api` to an object of this protocol
(backends/openai_batch.py: Files + Batches; backends/anthropic_batch.py: Message Batches); every other judge
leaves it None and `--batch` is refused. The engine owns what is sent, the ledger, re-attaching and settling;
the adapter only translates: lines in, states and per-item replies out, its client's errors into ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Protocol

from alpagasus.records import Reply, Request


@dataclass
class BatchLimits:
    """A provider's limits per batch (OpenAI: 50,000 requests and 200 MB per input file, a 24 h window;
    Anthropic: 100,000 requests and 256 MB per batch)."""

    max_requests: int = 50_000
    max_bytes: int = 200 * 1000 * 1000
    max_failed: int = 3  # batches failing validation in a row before the run stops (a retry would fail again)


@dataclass
class BatchState:
    """One status check of a batch, in the engine's words."""

    batch_id: str
    status: str  # the provider's own word (shown to the user and kept in the ledger)
    ended: bool  # no request of it will run any more: its results can be read
    counts: tuple[int, int, int] | None = None  # (completed, failed, total) as the provider reports them
    failed: bool = False  # ended without running anything it was given (failed validation)
    errors: str = ""  # why it failed, in the provider's words
    handle: Any = None  # the provider's record, handed back to `results`


class BatchApi(Protocol):
    """A provider's batch endpoint as the engine drives it. `provider` names it in notes and errors."""

    provider: str
    limits: BatchLimits

    def line(self, custom_id: str, request: Request) -> dict[str, Any]:
        """One item's line of a batch: its custom id and the body a direct request would send (its JSON size
        counts against the limits)."""
        ...

    async def submit(self, key: str, lines: list[dict], record: Callable[..., None]) -> BatchState:
        """Send the lines (from `line`) as one batch carrying our ledger `key` where the provider keeps metadata;
        `record(**ids)` is called with each id as it comes (an uploaded file's `input_file_id`, then `batch_id`)
        before the next step. Returns the new batch's state. If it raises, the engine looks the batch up with
        `find` before it gives up (the answer to `create` may be lost after the server made the batch)."""
        ...

    async def find(self, key: str, since: float, size: int, known: set[str]) -> str | None:
        """The id of the batch created for our ledger `key` (recorded at `since`, `size` requests) whose id was
        never recorded, or None when it never reached the server. `known`: batch ids the ledger already holds."""
        ...

    async def poll(self, batch_id: str) -> BatchState | None:
        """The batch's state now; None when the server no longer knows it (404)."""
        ...

    def results(
        self, state: BatchState, request_of: Callable[[str], Request]
    ) -> AsyncIterator[tuple[str, Reply | None]]:
        """(custom id, the Reply a direct request would have got) for every request the ended batch answered;
        None for a request it never ran (expired, cancelled: not billed, sent again)."""
        ...

    async def cancel(self, batch_id: str) -> None:
        """Ask the server to stop the batch (what it finished stays readable)."""
        ...

    def error(self, e: BaseException) -> BaseException | None:
        """The client's exception as a JudgeError (fix and rerun) or OutageError (rerun), or None if not its own."""
        ...


__all__ = ["BatchApi", "BatchLimits", "BatchState"]
