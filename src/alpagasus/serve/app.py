"""A small OpenAI-compatible server over a local causal LM (`alpagasus serve`).

It lets the `openai:` judge (and `generate --backend openai`) run against the embedded model with no key and
no network, and gives the tests a real HTTP server on 127.0.0.1. Endpoints: GET /v1/models,
POST /v1/chat/completions (temperature, max_tokens, logprobs/top_logprobs, a final assistant message continued),
/v1/files (upload, list, retrieve, content, delete) and /v1/batches (create, retrieve, list, cancel), with
injectable batch faults: see alpagasus.serve.batches. Model calls run one at a time: the model is not re-entrant.
"""
from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

from alpagasus.errors import UserError
from alpagasus.models import generate_tokens, load_causal_lm, messages_prompt, prompt_ids
from alpagasus.serve.batches import BatchFaults, BatchManager
from alpagasus.serve.files import ApiError, FileStore, parse_upload, read_requests


class ModelRunner:
    """One local model behind the HTTP handler: loaded, prompted and run with alpagasus.models, as the hf judge
    and `generate --backend transformers` do, so that a served model answers as the local one does."""

    def __init__(self, model: str, name: str | None = None, device: str | None = None):
        self.model, self.tok = load_causal_lm(model, device=device)
        self.name = name or model
        # every model call runs on this one thread: the model is not re-entrant, and torch starts a new OpenMP
        # team for each new calling thread (about a second on a busy CPU), while the HTTP server starts a
        # thread per connection (every request, for clients without keep-alive)
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    def prompt(self, messages: list[dict]) -> str:
        prefix = ""
        if messages and messages[-1].get("role") == "assistant":  # continue the assistant's answer
            prefix, messages = messages[-1].get("content") or "", messages[:-1]
        # without a chat template the model starts its answer after a blank line
        return messages_prompt(self.tok, messages, prefix, plain_suffix="\n\n")

    def complete(self, body: dict) -> dict:
        return self.worker.submit(self._complete, body).result()

    def _complete(self, body: dict) -> dict:
        ids = prompt_ids(self.tok, self.prompt(body.get("messages") or []))
        max_new = int(body.get("max_completion_tokens") or body.get("max_tokens") or 256)
        temperature = float(body.get("temperature") or 0.0)
        top_n = int(body.get("top_logprobs") or 0) if body.get("logprobs") else 0
        if temperature > 0 and body.get("seed") is not None:
            import torch

            torch.manual_seed(int(body["seed"]))
        out, n_in = generate_tokens(self.model, self.tok, [ids], max_new, temperature,
                                    float(body.get("top_p") or 1.0), return_dict_in_generate=True,
                                    output_logits=bool(top_n))
        new = out.sequences[0, n_in:]
        eos = self.tok.eos_token_id
        finish = "stop" if eos is not None and len(new) and int(new[-1]) == eos else "length"
        content = self.tok.decode(new, skip_special_tokens=True)
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": content},
                                  "finish_reason": finish, "logprobs": None}
        if top_n:
            choice["logprobs"] = {"content": self._logprobs(out.logits, new, top_n)}
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
                "model": self.name, "choices": [choice],
                "usage": {"prompt_tokens": n_in, "completion_tokens": int(len(new)), "total_tokens": n_in + len(new)}}

    def _logprobs(self, logits: Any, new: Any, top_n: int) -> list[dict]:
        import torch

        items = []
        for step, tok_id in enumerate(new.tolist()):
            lp = torch.log_softmax(logits[step][0].float(), dim=-1)
            top = torch.topk(lp, min(top_n, lp.shape[-1]))
            items.append({"token": self.tok.decode([tok_id]), "logprob": float(lp[tok_id]), "bytes": None,
                          "top_logprobs": [{"token": self.tok.decode([int(i)]), "logprob": float(v), "bytes": None}
                                           for v, i in zip(top.values.tolist(), top.indices.tolist())]})
        return items



def chat_completion(runner: ModelRunner, body: dict) -> tuple[int, dict]:
    """POST /v1/chat/completions, as (HTTP status, JSON body): the direct endpoint and every batch line."""
    if not body.get("messages"):
        return 400, ApiError(400, "messages is required", param="messages").body()
    try:
        return 200, runner.complete(body)
    except Exception as e:  # report, keep serving
        return 500, {"error": {"message": f"{type(e).__name__}: {e}", "type": "server_error", "param": None,
                               "code": None}}


def _route(path: str) -> list[str]:
    """/v1/batches/ID/cancel -> ["batches", "ID", "cancel"] (the /v1 prefix is optional, as for chat)."""
    parts = [p for p in path.split("/") if p]
    return parts[1:] if parts[:1] == ["v1"] else parts


class _Handler(BaseHTTPRequestHandler):
    """Routes to the model (chat), the files and the batches of one server; make_handler binds them."""
    runner: ModelRunner
    batches: BatchManager
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet: tests start this server often
        pass

    def _send(self, code: int, obj: dict | bytes, ctype: str = "application/json") -> None:
        data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _answer(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        # read the whole body first, whatever the route: what is left unread would start the next request
        self.raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            code, obj = self._dispatch(method, _route(url.path), query)
        except ApiError as e:
            code, obj = e.status, e.body()
        if isinstance(obj, bytes):
            self._send(code, obj, "application/octet-stream")
        else:
            self._send(code, obj)

    def _json(self) -> dict:
        try:
            body = json.loads(self.raw or b"{}")
        except json.JSONDecodeError as e:
            raise ApiError(400, f"bad JSON: {e}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        return body

    def _dispatch(self, method: str, r: list[str], q: dict) -> tuple[int, dict | bytes]:
        if method == "GET" and r in (["models"], []) or r == ["health"]:
            return 200, ({"status": "ok"} if r != ["models"] else {"object": "list", "data": [
                {"id": self.runner.name, "object": "model", "owned_by": "local"}]})
        if method == "POST" and r == ["chat", "completions"]:
            return chat_completion(self.runner, self._json())
        if r[:1] == ["files"]:
            return self._files(method, r[1:], q)
        if r[:1] == ["batches"]:
            return self._batches(method, r[1:], q)
        raise ApiError(404, f"no route {method} {self.path}", "not_found")

    def _files(self, method: str, r: list[str], q: dict) -> tuple[int, dict | bytes]:
        if method == "POST" and not r:
            purpose, data, filename = parse_upload(self.headers.get("Content-Type") or "", self.raw)
            if purpose == "batch":
                read_requests(data, source=filename)  # a bad line is a 400 naming it, before anything is stored
            return 200, self.batches.files.add(data, filename, purpose)
        if method == "GET" and not r:
            return 200, self.batches.files.list(q.get("purpose"))
        if method == "GET" and len(r) == 1:
            return 200, self.batches.files.get(r[0])
        if method == "GET" and len(r) == 2 and r[1] == "content":
            return 200, self.batches.files.content(r[0])
        if method == "DELETE" and len(r) == 1:
            return 200, self.batches.files.delete(r[0])
        raise ApiError(404, f"no route {method} {self.path}", "not_found")

    def _batches(self, method: str, r: list[str], q: dict) -> tuple[int, dict]:
        if method == "POST" and not r:
            return 200, self.batches.create(self._json())
        if method == "GET" and not r:
            try:
                limit = int(q.get("limit", 20))
            except ValueError:
                raise ApiError(400, "limit must be an integer", param="limit") from None
            return 200, self.batches.list(limit, q.get("after"))
        if method == "GET" and len(r) == 1:
            return 200, self.batches.retrieve(r[0])
        if method == "POST" and len(r) == 2 and r[1] == "cancel":
            return 200, self.batches.cancel(r[0])
        raise ApiError(404, f"no route {method} {self.path}", "not_found")

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def do_DELETE(self) -> None:
        self._answer("DELETE")


def make_handler(runner: ModelRunner, batches: BatchManager | None = None) -> type[BaseHTTPRequestHandler]:
    """The request handler over `runner`; files and batches in `batches` (by default: a temp folder, no faults)."""
    if batches is None:
        batches = BatchManager(FileStore(), lambda body: chat_completion(runner, body), model=runner.name)
    return type("Handler", (_Handler,), {"runner": runner, "batches": batches})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the client went away (killed, timed out): nothing to report
        super().handle_error(request, client_address)



def _listen(runner: ModelRunner, host: str, port: int, files_dir: str | Path | None,
            faults: BatchFaults | None) -> tuple[_Server, BatchManager]:
    manager = BatchManager(FileStore(files_dir), lambda body: chat_completion(runner, body), faults, runner.name)
    try:
        return _Server((host, port), make_handler(runner, manager)), manager
    except (OSError, OverflowError) as e:  # address in use, unknown host, port out of range
        raise UserError(f"cannot listen on {host}:{port}: {e}") from None


def serve(model: str, host: str = "127.0.0.1", port: int = 8000, name: str | None = None,
          device: str | None = None, ready: threading.Event | None = None, files_dir: str | Path | None = None,
          faults: BatchFaults | None = None) -> None:
    """Serve `model` until Ctrl-C; files in `files_dir` (default: a new temp folder), batches with `faults`."""
    runner = ModelRunner(model, name=name, device=device)
    server, manager = _listen(runner, host, port, files_dir, faults)
    print(f"serving {runner.name} on http://{host}:{server.server_address[1]}/v1", flush=True)
    if faults is not None and faults.any():
        print(f"batch faults: {faults}", flush=True)
    if ready:
        ready.set()
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # Ctrl-C: the way to stop it
        pass
    finally:
        manager.close()
        server.server_close()
        manager.files.cleanup()


@contextlib.contextmanager
def start_server(model: str | Path | ModelRunner, faults: BatchFaults | None = None,
                 files_dir: str | Path | None = None, host: str = "127.0.0.1", port: int = 0,
                 name: str | None = None) -> Iterator[str]:
    """A server in this process (a background thread) for tests and benchmarks; yields its base URL
    (http://HOST:PORT/v1) and stops it on exit. Pass a ModelRunner to share one loaded model between servers."""
    runner = model if isinstance(model, ModelRunner) else ModelRunner(str(model), name=name)
    server, manager = _listen(runner, host, port, files_dir, faults)
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="alpagasus-serve")
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        manager.close()
        server.server_close()
        manager.files.cleanup()
