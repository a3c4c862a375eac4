"""The OpenAI Batch API (Files + Batches) as the batch engine drives it (engine/batchapi.py's `BatchApi`).

Each line is {custom_id, method, url, body} with the body the `openai:` judge sends directly (`OpenAIJudge.body`);
at most 50,000 requests and 200 MB per input file, one batch per file, a 24 h window. Our ledger key travels in
the batch's metadata, so a batch whose `create` answer was lost is found again with `batches.list()`. Output and
error lines are read back through `OpenAIJudge.reply` (a 200) or `http_error` (any other status), as direct
replies; requests the server never ran (expired, cancelled) come back as None.
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, Callable

from alpagasus.backends.http import batch_error, http_error
from alpagasus.backends.openai import openai_client
from alpagasus.engine.batchapi import BatchLimits, BatchState
from alpagasus.records import Reply, Request
from alpagasus.redact import redact

ENDPOINT = "/v1/chat/completions"
TERMINAL = ("completed", "failed", "expired", "cancelled")
NOT_RUN = ("batch_expired", "batch_cancelled")  # requests the server never ran: not billed, sent again
META_KEY = "alpagasus_batch"  # our ledger key in the batch's metadata
CONTROL_RETRIES = 4  # status, list and file calls are safe to repeat; `create` is not (it is found by our key)


class OpenAIBatch:
    """The Files + Batches endpoints of the server an `OpenAIJudge` talks to (its base URL and key)."""

    provider = "OpenAI"

    def __init__(self, judge: Any, window: str = "24h"):
        self.judge, self.window = judge, window
        self.limits = BatchLimits(max_requests=50_000, max_bytes=200 * 1000 * 1000)
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:  # built in the loop that uses it (run_sync closes it there: aclose)
            self._client = openai_client(
                self.judge.base_url, self.judge.api_key, self.judge.timeout, max_retries=CONTROL_RETRIES
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def line(self, custom_id: str, request: Request) -> dict[str, Any]:
        return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": self.judge.body(request)}

    async def submit(self, key: str, lines: list[dict], record: Callable[..., None]) -> BatchState:
        data = b"".join(json.dumps(line, ensure_ascii=False).encode() + b"\n" for line in lines)
        f = await self.client.files.create(file=(f"{key}.jsonl", data), purpose="batch")
        record(input_file_id=f.id)
        b = await self.client.with_options(max_retries=0).batches.create(
            input_file_id=f.id,
            endpoint=ENDPOINT,
            completion_window=self.window,
            metadata={META_KEY: key, "judge": self.judge.id[:500]},
        )
        record(batch_id=b.id)
        return _state(b)

    async def find(self, key: str, since: float, size: int, known: set[str]) -> str | None:
        """The batch carrying our key in its metadata (newest first; older than our record: stop)."""
        async for b in self.client.batches.list(limit=100):
            if (b.metadata or {}).get(META_KEY) == key:
                return str(b.id)
            if b.created_at and b.created_at < since - 3600:
                return None
        return None

    async def poll(self, batch_id: str) -> BatchState | None:
        import openai

        try:
            return _state(await self.client.batches.retrieve(batch_id))
        except openai.NotFoundError:
            return None

    async def results(
        self, state: BatchState, request_of: Callable[[str], Request]
    ) -> AsyncIterator[tuple[str, Reply | None]]:
        b = state.handle
        for file_id in (b.output_file_id, b.error_file_id):
            if not file_id:
                continue
            text = (await self.client.files.content(file_id)).text
            for line in text.splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a torn line: its row is not seen, so it is sent again
                cid = rec.get("custom_id") if isinstance(rec, dict) else None
                if isinstance(cid, str):
                    yield cid, self._reply(rec, request_of(cid))

    def _reply(self, rec: dict, request: Request) -> Reply | None:
        """One output/error line -> the Reply a direct request would have got (None: the server never ran it)."""
        resp, err = rec.get("response") or {}, rec.get("error") or {}
        code = resp.get("status_code")
        if code == 200:  # its text may quote the body (a key echoed): settle_in_run redacts it, as every reply
            return self.judge.reply(resp.get("body"), request)
        if err.get("code") in NOT_RUN:
            return None
        if code:
            body = resp.get("body") or {}
            msg = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
            return http_error(int(code), redact(msg or json.dumps(body), [self.judge.api_key]))  # before the cut
        return Reply(error=f"batch error {err.get('code')}: {err.get('message')}")

    async def cancel(self, batch_id: str) -> None:
        await self.client.batches.cancel(batch_id)

    def error(self, e: BaseException) -> BaseException | None:
        import openai

        return batch_error(
            e, openai.APIConnectionError, openai.APIStatusError, "OpenAI", self.judge.base_url, self.judge.api_key
        )


def _state(b: Any) -> BatchState:
    c = b.request_counts
    errors = [f"{e.code}: {e.message}" for e in (b.errors.data or [])] if b.errors else []
    return BatchState(
        batch_id=str(b.id),
        status=b.status,
        ended=b.status in TERMINAL,
        counts=(c.completed or 0, c.failed or 0, c.total or 0) if c else None,
        failed=b.status == "failed",
        errors="; ".join(errors),
        handle=b,
    )


__all__ = ["ENDPOINT", "META_KEY", "OpenAIBatch"]
