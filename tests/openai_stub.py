"""A small OpenAI-compatible HTTP server on 127.0.0.1 for the client's hardening tests: it serves what a test
needs to see the client's behaviour against a real socket, nothing more.

    with OpenAIStub(chat=fn) as s: ...        POST /v1/chat/completions answered by fn(body, headers) -> dict
    OpenAIStub(delay=3)                         every chat reply comes after 3 s (a busy server)
    OpenAIStub(key="k")                         anything without "Authorization: Bearer k" gets a 401
    OpenAIStub(batch_line=fn)                   Files + Batches API: fn(index, custom_id, headers) -> the
                                                `response.body` of that request's output line

A batch is `in_progress` with request_counts 0/N on its first status check, `in_progress` with about half done
(and one failed) on the second, and `completed` with its output file from the third on. `s.requests` lists the
(method, path) of every request received.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


class OpenAIStub:
    def __init__(
        self,
        chat: Callable[[dict, Any], dict] | None = None,
        *,
        delay: float = 0.0,
        key: str | None = None,
        batch_line: Callable[[int, str, Any], Any] | None = None,
    ):
        self.chat, self.delay, self.key, self.batch_line = chat or canned, delay, key, batch_line
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:
                stub.handle(self, "GET", b"")

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                stub.handle(self, "POST", self.rfile.read(n))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> OpenAIStub:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ---- routing ------------------------------------------------------------------------------------------
    def handle(self, h: BaseHTTPRequestHandler, method: str, body: bytes) -> None:
        path = h.path.split("?")[0]
        with self.lock:
            self.requests.append((method, path))
        if self.key is not None and h.headers.get("Authorization") != f"Bearer {self.key}":
            return send(h, 401, {"error": {"message": "bad key", "type": "invalid_request_error"}})
        if method == "POST" and path == "/v1/chat/completions":
            time.sleep(self.delay)
            return send(h, 200, self.chat(json.loads(body), h.headers))
        if method == "POST" and path == "/v1/files":
            fid = f"file-{len(self.files)}"
            self.files[fid] = body
            return send(
                h,
                200,
                {
                    "id": fid,
                    "object": "file",
                    "bytes": len(body),
                    "created_at": int(time.time()),
                    "filename": "in.jsonl",
                    "purpose": "batch",
                    "status": "processed",
                },
            )
        if method == "POST" and path == "/v1/batches":
            return send(h, 200, self.create_batch(json.loads(body), h.headers))
        if method == "GET" and path == "/v1/batches":
            return send(
                h, 200, {"object": "list", "data": [self.view(b) for b in self.batches.values()], "has_more": False}
            )
        if method == "GET" and path.startswith("/v1/batches/"):
            return send(h, 200, self.poll(path.rsplit("/", 1)[1]))
        if method == "GET" and path.startswith("/v1/files/") and path.endswith("/content"):
            data = self.files[path.split("/")[3]]
            h.send_response(200)
            h.send_header("Content-Type", "application/octet-stream")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
            return None
        return send(h, 404, {"error": {"message": f"no route {method} {path}"}})

    # ---- batches ------------------------------------------------------------------------------------------
    def create_batch(self, req: dict, headers: Any) -> dict:
        ids = []
        for line in self.files[req["input_file_id"]].split(b"\n"):  # the multipart body: its JSONL lines
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and "custom_id" in rec:
                ids.append(rec["custom_id"])
        bid = f"batch-{len(self.batches)}"
        self.batches[bid] = {
            "id": bid,
            "input_file_id": req["input_file_id"],
            "metadata": req.get("metadata"),
            "ids": ids,
            "polls": 0,
            "output_file_id": None,
            "headers": {"Authorization": headers.get("Authorization", "")},
        }
        return self.view(self.batches[bid])

    def poll(self, bid: str) -> dict:
        b = self.batches[bid]
        b["polls"] += 1
        if b["polls"] >= 3 and b["output_file_id"] is None:
            lines = [
                json.dumps(
                    {
                        "id": f"r{i}",
                        "custom_id": cid,
                        "error": None,
                        "response": {"status_code": 200, "body": self.batch_line(i, cid, b["headers"])},
                    }
                )
                for i, cid in enumerate(b["ids"])
            ]
            fid = f"file-{len(self.files)}"
            self.files[fid] = ("\n".join(lines) + "\n").encode()
            b["output_file_id"] = fid
        return self.view(b)

    def view(self, b: dict) -> dict:
        n, polls = len(b["ids"]), b["polls"]
        status, done, failed = (
            ("in_progress", 0, 0) if polls <= 1 else ("in_progress", n // 2, 1) if polls == 2 else ("completed", n, 0)
        )
        return {
            "id": b["id"],
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "errors": None,
            "input_file_id": b["input_file_id"],
            "completion_window": "24h",
            "status": status,
            "created_at": int(time.time()),
            "output_file_id": b["output_file_id"],
            "error_file_id": None,
            "request_counts": {"total": n, "completed": done, "failed": failed},
            "metadata": b["metadata"],
        }


def send(h: BaseHTTPRequestHandler, code: int, obj: Any) -> None:
    data = json.dumps(obj).encode()
    h.send_response(code)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    try:
        h.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting (a timeout test): expected
        pass


def completion(content: str | None, logprobs: list | None = None) -> dict:
    return {
        "id": "c",
        "object": "chat.completion",
        "created": 0,
        "model": "stub",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": content},
                "logprobs": {"content": [{"token": content, "logprob": 0.0, "top_logprobs": logprobs}]}
                if logprobs is not None
                else None,
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
    }


def canned(body: dict, headers: Any) -> dict:
    """Score 4 in generate mode; in logprob mode, top tokens that hold no score label (label mass 0)."""
    if body.get("logprobs"):
        return completion("The", [{"token": "The", "logprob": -0.1}, {"token": "A", "logprob": -2.5}])
    return completion("4\nA fine answer.")
