"""Anthropic's Message Batches as the batch engine drives them (engine/batchapi.py's `BatchApi`).

Each line is {custom_id, params} with the params the `anthropic:` judge sends directly (`AnthropicJudge.body`);
at most 100,000 requests and 256 MB per batch, results within 24 h, at half the price (RunOptions.cost with
--batch). A result is `succeeded` (a Message: read by `AnthropicJudge.reply`, as a direct reply), `errored` (an
error type, mapped to the HTTP status a direct request would have got: rate limits and overload are waited for),
or `canceled` / `expired` (never run, not billed: sent again).

Message Batches carry no metadata, so a batch whose `create` answer was lost is found by what can be seen of it:
created after our ledger record, unknown to the ledger, with the same number of requests.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable

from alpagasus.backends.anthropic import THROTTLED, anthropic_client
from alpagasus.backends.http import batch_error, http_error
from alpagasus.engine.batchapi import BatchLimits, BatchState
from alpagasus.records import Reply, Request
from alpagasus.redact import redact

# an errored result's error type -> the HTTP status a direct request answers with it
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
CONTROL_RETRIES = 4  # status, list and result calls are safe to repeat; `create` is not
CLOCK_SLACK_S = 600.0  # a batch found by `find` may be this much older than our record (the server's clock)


class AnthropicBatch:
    """The Message Batches endpoints of the server an `AnthropicJudge` talks to (its base URL and key)."""

    provider = "Anthropic"

    def __init__(self, judge: Any):
        self.judge = judge
        self.limits = BatchLimits(max_requests=100_000, max_bytes=256 * 1000 * 1000)
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:  # built in the loop that uses it (run_sync closes it there: the judge's aclose)
            self._client = anthropic_client(
                self.judge.base_url, self.judge.api_key, self.judge.timeout, max_retries=CONTROL_RETRIES
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def line(self, custom_id: str, request: Request) -> dict[str, Any]:
        return {"custom_id": custom_id, "params": self.judge.body(request)}

    async def submit(self, key: str, lines: list[dict], record: Callable[..., None]) -> BatchState:
        b = await self.client.with_options(max_retries=0).messages.batches.create(requests=lines)
        record(batch_id=b.id)
        return _state(b)

    async def find(self, key: str, since: float, size: int, known: set[str]) -> str | None:
        """Newest first: the first batch unknown to the ledger with `size` requests, created since our record."""
        async for b in self.client.messages.batches.list(limit=100):
            if b.created_at is not None and b.created_at.timestamp() < since - CLOCK_SLACK_S:
                return None
            if b.id not in known and sum(_counts(b)) == size:
                return str(b.id)
        return None

    async def poll(self, batch_id: str) -> BatchState | None:
        import anthropic

        try:
            return _state(await self.client.messages.batches.retrieve(batch_id))
        except anthropic.NotFoundError:
            return None

    async def results(
        self, state: BatchState, request_of: Callable[[str], Request]
    ) -> AsyncIterator[tuple[str, Reply | None]]:
        async for r in await self.client.messages.batches.results(state.batch_id):
            result = r.result.model_dump()
            yield r.custom_id, self._reply(result, request_of(r.custom_id))

    def _reply(self, result: dict, request: Request) -> Reply | None:
        kind = result.get("type")
        if kind == "succeeded":
            return self.judge.reply(result.get("message"), request)
        if kind in ("canceled", "expired"):
            return None  # never run: not billed, sent again
        err = (result.get("error") or {}).get("error") or {}
        status = ERROR_STATUS.get(str(err.get("type")), 500)
        return http_error(
            status, redact(f"{err.get('type')}: {err.get('message')}", [self.judge.api_key]), throttled=THROTTLED
        )

    async def cancel(self, batch_id: str) -> None:
        await self.client.messages.batches.cancel(batch_id)

    def error(self, e: BaseException) -> BaseException | None:
        import anthropic

        return batch_error(
            e,
            anthropic.APIConnectionError,
            anthropic.APIStatusError,
            "Anthropic",
            self.judge.base_url,
            self.judge.api_key,
        )


def _counts(b: Any) -> tuple[int, int, int, int, int]:
    """(succeeded, errored, processing, canceled, expired) of a MessageBatch."""
    c = b.request_counts
    return (c.succeeded or 0, c.errored or 0, c.processing or 0, c.canceled or 0, c.expired or 0)


def _state(b: Any) -> BatchState:
    succeeded, errored, *_ = counts = _counts(b)
    return BatchState(
        batch_id=str(b.id),
        status=b.processing_status,
        ended=b.processing_status == "ended",
        counts=(succeeded, errored, sum(counts)),
        handle=b,
    )


__all__ = ["ERROR_STATUS", "AnthropicBatch"]
