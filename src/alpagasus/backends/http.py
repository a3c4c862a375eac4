"""What every HTTP provider's answers mean to the engine, whatever the client: an error status as a Reply
(retried or not, throttled or not), the server's Retry-After, and the connection errors that are no outage."""

from __future__ import annotations

import socket
from typing import Any

from alpagasus.records import Reply

# transport errors raised before the request left: nothing can have reached the server
NOT_SENT = ("ConnectError", "ConnectTimeout")
THROTTLED = (429,)  # rate limited: waited for, not charged as an attempt (engine/retry.py)


def http_error(
    status: int,
    message: str,
    retry_after: float | None = None,
    latency: float = 0.0,
    throttled: tuple[int, ...] = THROTTLED,
) -> Reply:
    """An HTTP error answer -> a Reply: 408/409/429/5xx are retried, other 4xx are not (a retry cannot fix them);
    the statuses in `throttled` (429; Anthropic adds 529, overloaded) are waited for without charging an attempt."""
    return Reply(
        error=f"HTTP {status}: {message[:300]}",
        retry_after=retry_after,
        retryable=status in (408, 409, 429) or status >= 500,
        latency_s=latency,
        extra={"http_status": status, "throttled": status in throttled},
    )


def retry_after(headers: Any) -> float | None:
    """The server's Retry-After (or retry-after-ms) in seconds, or None."""
    for name, div in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        v = headers.get(name) if headers is not None else None
        if v is not None:
            try:
                return float(v) / div
            except ValueError:
                return None
    return None


def unresolved(err: BaseException) -> str | None:
    """The resolver's reason when an error comes from a host name that does not exist (EAI_NONAME: "Name or
    service not known"), else None. A temporary resolver failure (EAI_AGAIN) is left to the outage logic."""
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, socket.gaierror) and e.errno in _NO_NAME:
            return str(e)
        e = e.__cause__ or e.__context__
    return None


_NO_NAME = tuple(getattr(socket, n) for n in ("EAI_NONAME", "EAI_NODATA") if hasattr(socket, n))


def transport_error(e: BaseException, timed_out: bool, latency: float, base_url: str | None) -> Reply:
    """A client's timeout or connection error -> a Reply: a host that does not resolve stops the run (fatal), a
    refused connection pauses it (outage), anything after the request left is ambiguous (it may be billed)."""
    cause = e.__cause__ or e
    unknown = unresolved(e)
    if unknown is not None:  # no retry can resolve a name that does not exist: stop now, not an outage
        return Reply(
            error=f"the judge's host does not resolve ({unknown}): check --base-url ({base_url})",
            latency_s=latency,
            retryable=False,
            fatal=True,
        )
    if type(cause).__name__ in NOT_SENT:  # refused / no route: the server is away, the run pauses
        return Reply(error=f"connection: {type(cause).__name__}: {cause}", latency_s=latency, outage=True)
    # timed out or cut off after the request was sent: it may have reached the server (and be billed); the loop
    # logs it as an ambiguous attempt, charged to the item, and retries (a timeout: the server is busy, not away)
    what = "timeout" if timed_out else "connection lost"
    return Reply(
        error=f"{what} (the request may have reached the server): {type(cause).__name__}: {cause}",
        latency_s=latency,
        extra={"ambiguous": True, "timeout": timed_out},
    )


__all__ = ["NOT_SENT", "THROTTLED", "http_error", "retry_after", "transport_error", "unresolved"]


def batch_error(
    e: BaseException, connection: type, status: type, provider: str, base_url: str | None, key: str | None
) -> BaseException | None:
    """A batch control call's client error (`connection`, `status`: the client's classes) as ours: a host that
    does not resolve or an HTTP error is a JudgeError to fix, a server that is away an OutageError; both say that
    nothing was lost (the ledger holds what was sent). None: not a client error."""
    from alpagasus.judges.base import JudgeError, OutageError
    from alpagasus.redact import redact

    if isinstance(e, connection):
        if unresolved(e) is not None:  # a name that does not exist is no outage: a retry cannot help
            return JudgeError(f"the batch API's host does not resolve ({unresolved(e)}): check --base-url ({base_url})")
        return OutageError(
            f"the {provider} batch API is unreachable ({redact(str(e), [key])}); nothing was lost: "
            "run the same command again to resume"
        )
    if isinstance(e, status):
        return JudgeError(
            f"the {provider} batch API answered HTTP {getattr(e, 'status_code', '?')}: {redact(str(e), [key])[:300]}; "
            "nothing was lost: fix it and run the same command again to resume"
        )
    return None


__all__ += ["batch_error"]
