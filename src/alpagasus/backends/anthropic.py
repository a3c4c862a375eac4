"""The one place an Anthropic client is built (the official `anthropic` package: `pip install 'alpagasus[anthropic]'`).

As for OpenAI (backends/openai.py): no client retries (the engine counts, caps and spaces every attempt, by the
server's Retry-After), one total timeout with a short connect timeout, connections capped per client. The base
URL is the server's root (the client adds /v1/messages); a URL given with a trailing /v1 is taken as meant.
"""

from __future__ import annotations

import os
from typing import Any

from alpagasus.backends.openai import DEFAULT_TIMEOUT_S, LOCAL_KEY, timeout_of

KEY_ENV, URL_ENV = "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"
THROTTLED = (429, 529)  # rate limited, overloaded: waited for (Retry-After), no attempt charged (engine/retry.py)


class MissingClient(ImportError):
    """The `anthropic` package is not installed."""


def resolve(base_url: str | None, api_key: str | None) -> tuple[str | None, str | None]:
    """(base URL without a trailing /v1, key) from the arguments, else the environment; a local server (a base
    URL) needs no key: the placeholder is used. The key is None only when neither is known."""
    base_url = (base_url or os.environ.get(URL_ENV) or "").rstrip("/") or None
    if base_url and base_url.endswith("/v1"):
        base_url = base_url[: -len("/v1")]
    api_key = api_key or os.environ.get(KEY_ENV)
    if not api_key and base_url:
        api_key = LOCAL_KEY
    return base_url, api_key


def anthropic_client(
    base_url: str | None, api_key: str | None, timeout: float = DEFAULT_TIMEOUT_S, max_retries: int = 0
) -> Any:
    """An async Anthropic client for one event loop (its connections belong to the loop that uses it)."""
    try:
        import anthropic
    except ImportError as e:
        raise MissingClient("the anthropic judge needs the anthropic client: pip install 'alpagasus[anthropic]'") from e
    base_url, api_key = resolve(base_url, api_key)
    return anthropic.AsyncAnthropic(
        base_url=base_url, api_key=api_key, max_retries=max_retries, timeout=timeout_of(timeout)
    )


__all__ = ["KEY_ENV", "THROTTLED", "URL_ENV", "MissingClient", "anthropic_client", "resolve"]
