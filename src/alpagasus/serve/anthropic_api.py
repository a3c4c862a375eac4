"""Anthropic's Messages API on `alpagasus serve`: POST /v1/messages and Message Batches (/v1/messages/batches,
/{id}, /{id}/results, /{id}/cancel), over the same model, so that the official `anthropic` client (and the
`anthropic:` judge) run against 127.0.0.1. Every request passes the same guard as the OpenAI routes (Host,
Origin, and the key, which the client sends as `x-api-key`).

A message request is answered by the chat completion code (runner.chat_completion): `system` becomes a system
turn, a final assistant turn is continued (prefill), and the reply is a Message (`content` text block,
`stop_reason` end_turn / max_tokens, `usage` input/output tokens). Errors have the API's shape
{"type": "error", "error": {"type", "message"}} (invalid_request_error, not_found_error, api_error...).

Message Batches ride on the OpenAI batch machinery (serve/batches.py) in a folder of their own: the requests
become an input file, the batch runs in the background with the same faults (`BatchFaults`: expire, failed
requests, vanish, delay) and survives a restart with --files-dir; states and results are translated: processing
(in_progress / canceling / ended), request_counts (processing, succeeded, errored, canceled, expired), and one
result line per request (succeeded with its Message, errored, expired, or canceled for a cancelled batch).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from alpagasus.serve.batches import TERMINAL, BatchManager
from alpagasus.serve.files import ENDPOINTS, ApiError, FileStore, iter_requests
from alpagasus.serve.runner import ModelRunner, chat_completion

MAX_REQUESTS = 100_000  # Message Batches' limit per batch
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error"}
ERROR_TYPES |= {404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 529: "overloaded_error"}
Reply = tuple[int, Any]


def key_headers(headers: Any) -> Mapping[str, str]:
    """The request's headers with an `x-api-key` (the Anthropic client's) given to the guard as a bearer key."""
    key = headers.get("x-api-key")
    if key is None or headers.get("Authorization"):
        return headers
    return {**dict(headers.items()), "Authorization": f"Bearer {key}"}


def error_body(status: int, message: str) -> dict:
    return {"type": "error", "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message}}


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str) for b in content
    ):
        return "".join(b["text"] for b in content)
    raise ApiError(400, f"{where}: content must be a string or a list of text blocks", param=where)


def chat_body(params: Any) -> dict:
    """A Messages API request -> the chat completion request the runner answers (a bad one: ApiError 400)."""
    if not isinstance(params, dict):
        raise ApiError(400, "the request must be a JSON object")
    for name, kind in (("model", str), ("max_tokens", int)):
        if not isinstance(params.get(name), kind) or isinstance(params.get(name), bool):
            raise ApiError(400, f"{name}: Field required ({kind.__name__})", param=name)
    msgs = params.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise ApiError(400, "messages: at least one message is required", param="messages")
    turns = [{"role": "system", "content": _text(params["system"], "system")}] if params.get("system") else []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise ApiError(400, f"messages.{i}.role: must be 'user' or 'assistant'", param=f"messages.{i}")
        turns.append({"role": m["role"], "content": _text(m.get("content"), f"messages.{i}.content")})
    if turns[-1]["role"] == "assistant" and turns[-1]["content"] != turns[-1]["content"].rstrip():
        raise ApiError(400, "final assistant content cannot end with trailing whitespace", param="messages")
    body = {"model": params["model"], "max_tokens": params["max_tokens"], "messages": turns}
    for name in ("temperature", "top_p"):
        if params.get(name) is not None:
            body[name] = params[name]
    return body


def message(runner: ModelRunner, params: Any, alive: Callable[[], bool] | None = None) -> Reply:
    """POST /v1/messages as (HTTP status, JSON body): the direct endpoint and every batch request."""
    try:
        status, out = chat_completion(runner, chat_body(params), alive)
    except ApiError as e:
        return e.status, error_body(e.status, str(e))
    if status != 200:
        return status, error_body(status, ((out.get("error") or {}).get("message")) or "request failed")
    choice, usage = out["choices"][0], out["usage"]
    return 200, {
        "id": "msg_" + out["id"].removeprefix("chatcmpl-"),
        "type": "message",
        "role": "assistant",
        "model": out["model"],
        "content": [{"type": "text", "text": choice["message"]["content"]}],
        "stop_reason": "max_tokens" if choice["finish_reason"] == "length" else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": usage["prompt_tokens"], "output_tokens": usage["completion_tokens"]},
    }


def _time(t: int | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")


class MessagesApi:
    """The /v1/messages routes of one server; its batches in a folder of their own (`files_dir`/anthropic)."""

    def __init__(self, runner: ModelRunner, openai_batches: BatchManager):
        self.runner = runner
        files = FileStore(openai_batches.files.dir / "anthropic")  # removed with the server's folder
        self.batches = BatchManager(files, lambda p: message(runner, p), openai_batches.faults, runner.name)

    def close(self) -> None:
        self.batches.close()

    def dispatch(self, method: str, r: list[str], q: dict, body: Any, base: str, alive: Callable[[], bool]) -> Reply:
        """Route /v1/messages[/...] (r: the path after /v1/messages); errors in the API's shape."""
        try:
            return self._route(method, r, q, body, base, alive)
        except ApiError as e:
            return e.status, error_body(e.status, str(e))

    def _route(self, method: str, r: list[str], q: dict, body: Any, base: str, alive: Callable[[], bool]) -> Reply:
        if method == "POST" and not r:
            return message(self.runner, body.json(), alive)
        if r[:1] != ["batches"]:
            raise ApiError(404, f"no route {method} /v1/messages/{'/'.join(r)[:100]}")
        r = r[1:]
        if method == "POST" and not r:
            return 200, self._view(self.batches.create(self._input(body.json())), base)
        if method == "GET" and not r:
            return 200, self._list(q, base)
        bid = _openai_id(r[0])
        if method == "GET" and len(r) == 1:
            return 200, self._view(self.batches.retrieve(bid), base)
        if method == "GET" and r[1:] == ["results"]:
            return 200, self._results(self.batches.retrieve(bid))
        if method == "POST" and r[1:] == ["cancel"]:
            return 200, self._view(self.batches.cancel(bid), base)
        raise ApiError(404, f"no route {method} /v1/messages/batches/{'/'.join(r)[:100]}")

    def _input(self, body: Any) -> dict:
        """The batch's requests, checked (custom ids, params), as an input file of the OpenAI machinery."""
        reqs = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(reqs, list) or not reqs or len(reqs) > MAX_REQUESTS:
            raise ApiError(400, f"requests: between 1 and {MAX_REQUESTS} requests are required", param="requests")
        lines, seen = [], set()
        for i, req in enumerate(reqs):
            cid = req.get("custom_id") if isinstance(req, dict) else None
            if not isinstance(cid, str) or not CUSTOM_ID.match(cid) or cid in seen:
                raise ApiError(400, f"requests.{i}.custom_id: unique, 1-64 of [a-zA-Z0-9_-]", param="custom_id")
            chat_body(req.get("params"))  # a bad request refuses the batch, as the API does
            seen.add(cid)
            line = {"custom_id": cid, "method": "POST", "url": ENDPOINTS[0], "body": req["params"]}
            lines.append(json.dumps(line).encode() + b"\n")
        f = self.batches.files.add(b"".join(lines), "message_batch.jsonl", "batch")
        return {"input_file_id": f["id"], "endpoint": ENDPOINTS[0], "completion_window": "24h"}

    def _list(self, q: dict, base: str) -> dict:
        try:
            limit = min(100, int(q.get("limit", 20)))
        except ValueError:
            raise ApiError(400, "limit must be an integer", param="limit") from None
        after = q.get("after_id")
        page = self.batches.list(limit, _openai_id(after) if after else None)
        data = [self._view(b, base) for b in page["data"]]
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        return {"data": data, "has_more": page["has_more"], "first_id": first, "last_id": last}

    def _lines(self, b: dict) -> dict[str, dict]:
        """Every request's result line of an ended batch, by custom id."""
        out: dict[str, dict] = {}
        files = self.batches.files
        with open(files.path(b["input_file_id"]), "rb") as f:
            ids = [req["custom_id"] for req in iter_requests(f, None, b["input_file_id"])]
        for file_id in (b["output_file_id"], b["error_file_id"]):
            for raw in files.content(file_id).splitlines() if file_id else ():
                line = json.loads(raw)
                resp, err = line.get("response"), line.get("error") or {}
                if resp and resp.get("status_code") == 200:
                    result = {"type": "succeeded", "message": resp["body"]}
                elif resp:  # an injected fault's body has the OpenAI shape: given the API's
                    body = resp.get("body") or {}
                    if body.get("type") != "error":
                        body = error_body(resp["status_code"], str((body.get("error") or {}).get("message")))
                    result = {"type": "errored", "error": body}
                else:
                    result = {"type": "expired" if err.get("code") == "batch_expired" else "canceled"}
                out[line["custom_id"]] = {"custom_id": line["custom_id"], "result": result}
        for cid in ids:  # never run: the batch was cancelled (or failed before it ran anything)
            kind = "canceled" if b["status"] == "cancelled" else "expired"
            out.setdefault(cid, {"custom_id": cid, "result": {"type": kind}})
        return out

    def _results(self, b: dict) -> bytes:
        if b["status"] not in TERMINAL:
            raise ApiError(400, f"Message Batch {_anthropic_id(b['id'])} has not ended: no results yet")
        return b"".join(json.dumps(line).encode() + b"\n" for line in self._lines(b).values())

    def _view(self, b: dict, base: str) -> dict:
        """The OpenAI-style batch as a MessageBatch."""
        ended = b["status"] in TERMINAL
        c = b["request_counts"]
        counts = dict(processing=0, succeeded=0, errored=0, canceled=0, expired=0)
        if ended:
            for line in self._lines(b).values():
                counts[line["result"]["type"]] += 1
        else:
            counts.update(succeeded=c["completed"], errored=c["failed"])
            counts["processing"] = max(0, (c["total"] or _size(self.batches.files, b)) - c["completed"] - c["failed"])
        aid = _anthropic_id(b["id"])
        end = next((b.get(f"{s}_at") for s in TERMINAL if b.get(f"{s}_at")), None)
        return {
            "id": aid,
            "type": "message_batch",
            "processing_status": "ended" if ended else "canceling" if b["status"] == "cancelling" else "in_progress",
            "request_counts": counts,
            "created_at": _time(b["created_at"]),
            "expires_at": _time(b["expires_at"]),
            "ended_at": _time(end) if ended else None,
            "cancel_initiated_at": _time(b.get("cancelling_at")),
            "archived_at": None,
            "results_url": f"{base}/v1/messages/batches/{aid}/results" if ended else None,
        }


def _size(files: FileStore, b: dict) -> int:
    """Requests in a batch still validating (the OpenAI counts are 0 until it runs)."""
    with open(files.path(b["input_file_id"]), "rb") as f:
        return sum(1 for _ in iter_requests(f, None, b["input_file_id"]))


def _anthropic_id(batch_id: str) -> str:
    return "msg" + batch_id  # batch_<hex> -> msgbatch_<hex>


def _openai_id(batch_id: str) -> str:
    if not batch_id.startswith("msgbatch_"):
        raise ApiError(404, f"No message batch found with id '{batch_id[:100]}'.", code="not_found")
    return batch_id[len("msg") :]


__all__ = ["MessagesApi", "chat_body", "error_body", "key_headers", "message"]
