"""The one place an OpenAI client is built: `openai:` judges, their Batch API path and `generate --backend openai`.

The client does not retry (max_retries=0) unless the caller has no retry loop of its own: the engine counts,
caps and spaces every attempt by the server's Retry-After (engine/retry.py). Connections are capped per client
(`connections`), timeouts are one total plus a short connect timeout, so a server that is away is seen at once.
"""

from __future__ import annotations

import os
from typing import Any

DEFAULT_TIMEOUT_S = 120.0  # one request, connect to last byte
CONNECT_TIMEOUT_S = 10.0  # a server that does not take the connection is away, not slow
LOCAL_KEY = "not-needed"  # local servers (vLLM, llama.cpp, `alpagasus serve` without --api-key) take any key
KEY_ENV, URL_ENV = "OPENAI_API_KEY", "OPENAI_BASE_URL"


def resolve(base_url: str | None, api_key: str | None) -> tuple[str | None, str | None]:
    """(base URL, key) from the arguments, else the environment; a local server (a base URL) needs no key: the
    placeholder is used. The key is None only when neither a key nor a base URL is known."""
    base_url = base_url or os.environ.get(URL_ENV)
    api_key = api_key or os.environ.get(KEY_ENV)
    if not api_key and base_url:
        api_key = LOCAL_KEY
    return base_url, api_key


def http_module() -> Any:
    """The clients' own HTTP library: httpx2 in recent releases of openai and anthropic, httpx before."""
    try:
        import httpx2  # type: ignore[import-not-found]

        return httpx2
    except ImportError:
        import httpx

        return httpx


def timeout_of(total: float) -> Any:
    """One total timeout, with the connect phase capped at CONNECT_TIMEOUT_S."""
    return http_module().Timeout(total, connect=min(total, CONNECT_TIMEOUT_S))


def openai_client(
    base_url: str | None,
    api_key: str | None,
    timeout: float = DEFAULT_TIMEOUT_S,
    connections: int = 8,
    max_retries: int = 0,
    sync: bool = False,
) -> Any:
    """An OpenAI client (async unless `sync`) for one event loop: its connections belong to the loop that uses it.
    `max_retries` stays 0 wherever the engine retries (judges, batches)."""
    import openai

    base_url, api_key = resolve(base_url, api_key)
    limits = http_module().Limits(max_connections=connections, max_keepalive_connections=connections)
    common: dict[str, Any] = dict(
        base_url=base_url, api_key=api_key, max_retries=max_retries, timeout=timeout_of(timeout)
    )
    if sync:
        return openai.OpenAI(
            **common, http_client=openai.DefaultHttpxClient(limits=limits, timeout=timeout_of(timeout))
        )
    return openai.AsyncOpenAI(
        **common, http_client=openai.DefaultAsyncHttpxClient(limits=limits, timeout=timeout_of(timeout))
    )


__all__ = [
    "CONNECT_TIMEOUT_S",
    "DEFAULT_TIMEOUT_S",
    "LOCAL_KEY",
    "http_module",
    "openai_client",
    "resolve",
    "timeout_of",
]
