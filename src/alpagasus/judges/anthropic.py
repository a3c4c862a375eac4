"""Claude (or any server speaking Anthropic's Messages API, such as `alpagasus serve`) as judge: `anthropic:MODEL`.

Generate mode only: the Messages API returns no log-probabilities, so `--mode logprob` is refused. The rubric's
system prompt is the `system` parameter, its user turn the one user message, and an assistant prefix (where a
request has one) an assistant turn the model continues (prefill; the reply is read with the prefix in front).
Tokens come from `usage`; `--batch` goes through Message Batches at half the price (backends/anthropic_batch.py).
Errors as the openai judge's: 429 and 529 (overloaded) are waited for as the Retry-After says, 401/403 stop the
run, a refused connection pauses it. The key: --api-key or $ANTHROPIC_API_KEY (redacted wherever it appears).
"""

from __future__ import annotations

import time
from typing import Any

from alpagasus.backends.anthropic import THROTTLED, MissingClient, anthropic_client, resolve
from alpagasus.backends.anthropic_batch import AnthropicBatch
from alpagasus.backends.http import http_error, retry_after, transport_error
from alpagasus.backends.openai import DEFAULT_TIMEOUT_S
from alpagasus.judges.base import JudgeBase, JudgeError
from alpagasus.records import Reply, Request
from alpagasus.redact import redact


class AnthropicJudge(JudgeBase):
    batch_size = 1
    sort_by_length = False
    logprobs = False  # the Messages API has none: generate mode only

    def __init__(
        self,
        arg: str,
        mode: str | None = None,
        backend: str = "anthropic",
        base_url: str | None = None,
        api_key: str | None = None,
        concurrency: int | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        context: int | None = None,
    ):
        if not arg:
            raise JudgeError("anthropic judge needs a model name: anthropic:MODEL (e.g. anthropic:claude-haiku-4-5)")
        self.model_name, self.mode = arg, mode or "generate"
        if self.mode != "generate":
            raise JudgeError(
                f"anthropic:{arg} answers in generate mode only: the Messages API returns no log-probabilities, "
                f"so --mode {self.mode} cannot be used with it (drop --mode, or use --mode generate)"
            )
        self.base_url, key = resolve(base_url, api_key)
        if not key:
            raise JudgeError("anthropic judge: set ANTHROPIC_API_KEY (or --base-url for a local server)")
        self.api_key: str = key
        self.concurrency = concurrency or 16
        self.timeout, self._context = timeout, context
        self.client: Any = None
        self._batches = AnthropicBatch(self)  # --batch: Message Batches
        self.batch_api = self._batches

    @property
    def id(self) -> str:
        return f"anthropic:{self.model_name}#{self.mode}"

    @property
    def secrets(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.api_key,)

    @property
    def max_context(self) -> int | None:
        return self._context

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4)  # an estimate; the server is the judge of its own context

    def load(self) -> None:
        if self.client is None:
            try:
                self.client = anthropic_client(self.base_url, self.api_key, self.timeout)
            except MissingClient as e:
                raise JudgeError(str(e)) from e

    def close(self) -> None:
        self.client = None

    async def aclose(self) -> None:
        """Close the HTTP clients in the loop that used them."""
        if self.client is not None:
            await self.client.close()
        await self._batches.aclose()
        self.close()

    def body(self, r: Request) -> dict[str, Any]:
        """The Messages API parameters of one request, as sent directly and as a batch line's `params`."""
        messages: list[dict[str, Any]] = [{"role": "user", "content": r.user}]
        prefix = r.assistant_prefix.rstrip()  # the API refuses a prefill ending in whitespace
        if prefix:
            messages.append({"role": "assistant", "content": prefix})
        params: dict[str, Any] = {
            "model": self.model_name,
            "max_tokens": r.max_tokens,
            "messages": messages,
            "temperature": r.temperature,
        }
        if r.system:
            params["system"] = r.system
        return params

    async def score(self, requests: list[Request]) -> list[Reply]:
        self.load()
        return [await self._one(r) for r in requests]

    async def _one(self, r: Request) -> Reply:
        reply = await self._send(r)
        if reply.error:  # a 401's message may echo the key it refused
            reply.error = redact(reply.error, [self.api_key])
        return reply

    async def _send(self, r: Request) -> Reply:
        import anthropic

        t0 = time.perf_counter()
        try:  # the low-level post: same auth, timeouts and typed errors as messages.create, no typing of the reply
            resp = await self.client.post("/v1/messages", body=self.body(r), cast_to=object)
        except anthropic.APIStatusError as e:
            headers = e.response.headers
            return http_error(
                e.status_code, redact(str(e), [self.api_key]), retry_after(headers), time.perf_counter() - t0, THROTTLED
            )
        except (anthropic.APITimeoutError, anthropic.APIConnectionError) as e:
            return transport_error(e, isinstance(e, anthropic.APITimeoutError), time.perf_counter() - t0, self.base_url)
        return self.reply(resp, r, time.perf_counter() - t0)

    def reply(self, resp: Any, r: Request, latency: float = 0.0) -> Reply:
        """A Message (as JSON) -> a Reply (shared by direct requests and batch results)."""
        if not isinstance(resp, dict) or not isinstance(resp.get("content"), list):
            clip = redact(str(resp), [self.api_key])[:200]
            return Reply(error=f"malformed response: not a message ({clip!r})", latency_s=latency)
        usage = resp.get("usage") or {}
        text = "".join(b.get("text") or "" for b in resp["content"] if isinstance(b, dict) and b.get("type") == "text")
        stop = resp.get("stop_reason")
        return Reply(
            text=r.assistant_prefix.rstrip() + text,  # a prefilled answer is read whole
            model=resp.get("model") or self.model_name,
            latency_s=latency,
            tokens_in=int(usage.get("input_tokens") or 0),
            tokens_out=int(usage.get("output_tokens") or 0),
            extra={"finish_reason": stop} if stop not in (None, "end_turn", "stop_sequence") else None,
        )


__all__ = ["AnthropicJudge"]
