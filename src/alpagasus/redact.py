"""Keeping secrets out of what we write and print: `redact` is applied wherever text that may carry an API key
(a server's error message, an exception) enters a record, a file or a message.

A server's 401 body often echoes the key it refused ("Incorrect API key provided: sk-..."), and an exception
may carry a URL with a password in it; none of that may reach the store, an output file, a log or the screen.
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterable

REDACTED = "[redacted]"
# environment variables whose values are secrets (any of them set is replaced wherever it appears)
SECRET_ENV = ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "ANTHROPIC_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
# config keys whose values are secrets (recipes, options): written as REDACTED
SECRET_KEYS = re.compile(r"(api[_-]?key|token|secret|password|authorization)$", re.IGNORECASE)
_PATTERNS = (
    # OpenAI-style keys (sk-..., sk-proj-...) and Anthropic's (sk-ant-api03-...), masked or not
    re.compile(r"\bsk-[A-Za-z0-9_\-*]{20,}"),
    re.compile(r"\bhf_[A-Za-z0-9]{20,}"),  # Hugging Face tokens
    re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9_\-.=+/]{8,}"),  # Authorization: Bearer ...
    re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"),  # user:password@ in a URL
)
_MIN_SECRET = 6  # shorter "keys" (e.g. "EMPTY", "x") are placeholders for local servers, not secrets
_MIN_CUT = 4  # a text that ends in this many first characters of a secret was cut inside it: redacted too


def redact(text: Any, secrets: Iterable[str | None] = ()) -> str:
    """`text` as a string with the given secrets, the secret environment variables' values and anything that
    looks like an API key or a URL's password replaced by "[redacted]". Redact before truncating: a text cut
    inside a secret keeps a prefix no pattern recognises (only a known secret's trailing prefix is caught here)."""
    out = str(text)
    known = [s for s in (*secrets, *(os.environ.get(v) for v in SECRET_ENV)) if s and len(s) >= _MIN_SECRET]
    for secret in sorted(set(known), key=len, reverse=True):
        out = out.replace(secret, REDACTED)
        # text truncated by someone else before it reached us may end inside a secret: its prefix goes too
        for n in range(min(len(secret) - 1, len(out)), _MIN_CUT - 1, -1):
            if out.endswith(secret[:n]):
                out = out[:-n] + REDACTED
                break
    for pattern in _PATTERNS:
        out = pattern.sub(lambda m: (m.group(1) if m.re.groups else "") + REDACTED, out)
    return out


def redact_config(obj: Any, secrets: Iterable[str | None] = ()) -> Any:
    """A copy of a config (dicts, lists, scalars) fit to be written: values under secret-looking keys
    (api_key, token, password...) become "[redacted]", and strings are passed through `redact`."""
    secrets = tuple(secrets)
    if isinstance(obj, dict):
        return {
            k: REDACTED
            if isinstance(k, str) and SECRET_KEYS.search(k) and v not in (None, "")
            else redact_config(v, secrets)
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return [redact_config(v, secrets) for v in obj]
    if isinstance(obj, str):
        return redact(obj, secrets)
    return obj


__all__ = ["REDACTED", "redact", "redact_config"]
