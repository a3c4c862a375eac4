"""Any OpenAI-compatible chat endpoint as judge: `openai:MODEL` (OpenAI, Azure, vLLM, llama.cpp, Ollama...).

Retries are the rating loop's, not the client's (max_retries=0), so every attempt is counted, capped and
spaced by the server's Retry-After. The clients are built by backends/openai.py (the one place), `--batch` goes
through backends/openai_batch.py (`batch_api`), and HTTP errors mean what backends/http.py says.
"""

from __future__ import annotations

import math
import time
from typing import Any

from alpagasus.backends.http import http_error, retry_after, transport_error, unresolved
from alpagasus.backends.openai import DEFAULT_TIMEOUT_S, openai_client, resolve
from alpagasus.backends.openai_batch import OpenAIBatch
from alpagasus.judges.base import JudgeBase, JudgeError, label_scores
from alpagasus.records import Reply, Request
from alpagasus.redact import redact

__all__ = ["OpenAIJudge", "http_error", "unresolved"]


class OpenAIJudge(JudgeBase):
    batch_size = 1
    logprobs = True  # the chat API's top log-probabilities
    sort_by_length = False
    per_client = 8  # requests in flight per HTTP client (see load)
    # logprob mode reads the labels among the top log-probabilities and renormalises them: a reply whose labels
    # held less than this is not a score, and is asked again in generate mode (engine.settle.label_floor)
    min_label_mass = 0.5
    generate_fallback = True

    def __init__(
        self,
        arg: str,
        mode: str | None = None,
        backend: str = "openai",
        base_url: str | None = None,
        api_key: str | None = None,
        concurrency: int | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        top_logprobs: int = 20,
        context: int | None = None,
    ):
        if not arg:
            raise JudgeError("openai judge needs a model name: openai:MODEL (e.g. openai:gpt-4o-mini)")
        self.model_name = arg
        self.mode = mode or "generate"
        if self.mode not in ("generate", "logprob"):
            raise JudgeError(f"openai:{arg}: mode must be generate or logprob, not {self.mode!r}")
        self.base_url, key = resolve(base_url, api_key)
        if not key:
            raise JudgeError("openai judge: set OPENAI_API_KEY (or --base-url for a local server)")
        self.api_key: str = key
        self.concurrency = concurrency or 16
        self.timeout, self.top_logprobs, self._context = timeout, top_logprobs, context
        self.client: Any = None
        self.clients: list[Any] = []
        self._batches = OpenAIBatch(self)  # --batch: the server's Files and Batches endpoints
        self.batch_api = self._batches

    @property
    def id(self) -> str:
        return f"openai:{self.model_name}#{self.mode}"

    @property
    def secrets(self) -> tuple[str, ...]:  # type: ignore[override]
        """Its key (given in code, on the command line or in the environment): redacted wherever it appears."""
        return (self.api_key,) if isinstance(self.api_key, str) and self.api_key else ()

    @property
    def max_context(self) -> int | None:
        return self._context

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4)  # an estimate; the server is the judge of its own context

    def load(self) -> None:
        if self.client is None:
            # one client per 8 requests in flight: the HTTP pool checks every open connection on every request,
            # so one pool of 64 connections costs more CPU per request than the rest of the pipeline
            self.clients = [
                openai_client(self.base_url, self.api_key, self.timeout, connections=self.per_client)
                for _ in range(max(1, -(-self.concurrency // self.per_client)))
            ]
            self.client, self._turn = self.clients[0], 0

    def close(self) -> None:
        self.client, self.clients = None, []

    async def aclose(self) -> None:
        """Close the HTTP clients in the loop that used them (collected later, they fail in a closed loop)."""
        for c in self.clients:
            await c.close()
        await self._batches.aclose()
        self.close()

    async def score(self, requests: list[Request]) -> list[Reply]:
        self.load()
        return [await self._one(r) for r in requests]

    def _next_client(self) -> Any:
        self._turn = (self._turn + 1) % len(self.clients)
        return self.clients[self._turn]

    async def _one(self, r: Request) -> Reply:
        reply = await self._send(r)
        if reply.error:  # a 401's message echoes the key it refused: it must not reach the store or the screen
            reply.error = redact(reply.error, [self.api_key])
        return reply

    def body(self, r: Request) -> dict[str, Any]:
        """The chat-completions body for one request, as sent directly and as a line of a batch file. A request
        may override the judge's mode (a logprob reply with too little label mass is asked again in generate)."""
        messages = ([{"role": "system", "content": r.system}] if r.system else []) + [
            {"role": "user", "content": r.user}
        ]
        kwargs: dict[str, Any] = {"model": self.model_name, "messages": messages, "temperature": r.temperature}
        if (r.mode or self.mode) == "logprob":
            kwargs.update(max_tokens=1, logprobs=True, top_logprobs=self.top_logprobs)
        else:
            kwargs.update(max_tokens=r.max_tokens)
        return kwargs

    async def _send(self, r: Request) -> Reply:
        import openai

        kwargs = self.body(r)
        t0 = time.perf_counter()
        try:
            # the client's low-level post: same auth, base URL, timeouts and typed errors as
            # chat.completions.create, without its per-request typing of params and reply (half the client's
            # CPU per request: measured 260 vs 405 requests/s against bench/harness.py's instant server)
            resp = await self._next_client().post("/chat/completions", body=kwargs, cast_to=object)
        except openai.APIStatusError as e:
            # redacted whole, before http_error cuts it: a cut key's prefix would escape every pattern
            return http_error(
                e.status_code, redact(str(e), [self.api_key]), retry_after(e.response.headers), time.perf_counter() - t0
            )
        except (openai.APITimeoutError, openai.APIConnectionError) as e:
            timed_out = isinstance(e, openai.APITimeoutError)
            return transport_error(e, timed_out, time.perf_counter() - t0, self.base_url)
        except (ValueError, KeyError, TypeError, AttributeError) as e:  # a 200 whose body is not JSON
            return Reply(
                error=f"malformed response: {type(e).__name__}: {self._clip(e)}", latency_s=time.perf_counter() - t0
            )
        return self.reply(resp, r, time.perf_counter() - t0)

    def reply(self, resp: Any, r: Request, latency: float = 0.0) -> Reply:
        """A completion's body -> a Reply (shared by direct requests and batch output lines)."""
        try:
            return self._reply(resp, r, latency)
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:  # a 200 that is no completion
            return Reply(
                error=f"malformed response: {type(e).__name__}: {self._clip(e)} ({self._clip(resp)!r})",
                latency_s=latency,
            )

    def _clip(self, obj: Any, n: int = 200) -> str:
        """The first n characters of a server's text, redacted BEFORE the cut (a key cut in two escapes redact)."""
        return redact(str(obj), [self.api_key])[:n]

    def _reply(self, resp: Any, r: Request, latency: float) -> Reply:
        choices = resp.get("choices") if isinstance(resp, dict) else None
        if not choices or not isinstance(choices[0].get("message"), dict):
            return Reply(error=f"malformed response: no choices ({self._clip(resp)!r})", latency_s=latency)
        usage = resp.get("usage") or {}
        choice = choices[0]
        finish = choice.get("finish_reason")
        reply = Reply(
            model=resp.get("model") or self.model_name,
            latency_s=latency,
            tokens_in=int(usage.get("prompt_tokens") or 0),
            tokens_out=int(usage.get("completion_tokens") or 0),
            extra={"finish_reason": finish} if finish not in (None, "stop") else None,
        )
        if (r.mode or self.mode) == "generate":
            reply.text = choice["message"].get("content") or ""
            return reply
        return _from_logprobs(reply, choice, r.labels)


def _from_logprobs(reply: Reply, choice: dict, labels: tuple[str, ...]) -> Reply:
    """Expected score over the label tokens among the first token's top log-probabilities."""
    content = (choice.get("logprobs") or {}).get("content")
    if not content:
        reply.text = choice["message"].get("content") or ""
        reply.extra = {**(reply.extra or {}), "note": "server returned no logprobs"}
        return reply
    tops = content[0].get("top_logprobs") or []
    p = dict.fromkeys(labels, 0.0)
    for top in tops:
        tok = top["token"].strip()
        if tok in p:
            p[tok] += math.exp(top["logprob"])
    # the top tokens are kept: with no label among them, they say what the judge answered instead
    reply.extra = {**(reply.extra or {}), "top": [(t["token"], round(t["logprob"], 4)) for t in tops[:5]]}
    return label_scores(reply, p)
