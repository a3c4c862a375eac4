"""A small OpenAI-compatible server over a local causal LM (`alpagasus serve`).

It lets the `openai:` judge (and `generate --backend openai`) run against the embedded model with no network,
and gives the tests a real HTTP server on 127.0.0.1. Endpoints: GET /v1/models, POST /v1/chat/completions
(temperature, max_tokens, logprobs/top_logprobs, a final assistant message continued), /v1/files (upload, list,
retrieve, content, delete) and /v1/batches (create, retrieve, list, cancel), with injectable batch faults: see
alpagasus.serve.batches; and Anthropic's /v1/messages and Message Batches (alpagasus.serve.anthropic_api). Chat
requests run in dynamic batches on one model thread (alpagasus.serve.runner).
Every request passes the guard first (API key, Host, Origin: alpagasus.serve.security), then its
Content-Length is checked against the endpoint's limit before its body is read (alpagasus.serve.upload).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import select
import shutil
import signal
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

from alpagasus.errors import UserError
from alpagasus.serve.anthropic_api import MessagesApi, key_headers
from alpagasus.serve.batches import BatchFaults, BatchManager
from alpagasus.serve.files import PURPOSES, ApiError, FileStore, count_requests
from alpagasus.serve.runner import ClientGone, ModelRunner, chat_completion
from alpagasus.serve.security import Guard, check_bind
from alpagasus.serve.server import MAX_THREADS, BoundedServer
from alpagasus.serve.upload import MAX_JSON_BYTES, MAX_UPLOAD_BYTES, Body, content_length, stream_upload

SOCKET_TIMEOUT_S = 30.0  # any read or write of a connection that stalls this long ends it
KEEPALIVE_S = 15.0  # an idle keep-alive connection is closed after this (clients' pools expire sooner)


def _route(path: str) -> list[str]:
    """/v1/batches/ID/cancel -> ["batches", "ID", "cancel"] (the /v1 prefix is optional, as for chat)."""
    parts = [p for p in path.split("/") if p]
    return parts[1:] if parts[:1] == ["v1"] else parts


class _Handler(BaseHTTPRequestHandler):
    """Routes to the model (chat), the files and the batches of one server; make_handler binds them."""

    server: BoundedServer  # what serve binds it to (typeshed says BaseServer, whose address may be a path)
    runner: ModelRunner
    batches: BatchManager
    messages: MessagesApi  # Anthropic's /v1/messages and Message Batches (serve/anthropic_api.py)
    guard: Guard | None = None  # None: the address the server is bound to, no key
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT_S
    body: Body | None = None

    def log_message(self, *args: Any) -> None:  # quiet: tests start this server often
        pass

    def handle(self) -> None:
        """One request, then more while the client keeps the connection and sends them within KEEPALIVE_S."""
        self.close_connection = True
        self.handle_one_request()
        while not self.close_connection:
            self.connection.settimeout(KEEPALIVE_S)
            self.handle_one_request()

    def parse_request(self) -> bool:
        self.connection.settimeout(self.timeout)  # the request line came: back to the stall timeout
        return super().parse_request()

    def _send(self, code: int, obj: dict | bytes | Path, ctype: str = "application/json") -> None:
        data = obj if isinstance(obj, (bytes, Path)) else json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(data.stat().st_size if isinstance(data, Path) else len(data)))
        if code == 401:
            self.send_header("WWW-Authenticate", "Bearer")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if isinstance(data, Path):
            with open(data, "rb") as f:
                shutil.copyfileobj(f, self.wfile, 1 << 20)
        else:
            self.wfile.write(data)

    def _client_alive(self) -> bool:
        """False once the client closed its connection (a queued request nobody waits for any more)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return not readable or self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
        except BlockingIOError:
            return True
        except OSError:
            return False

    def _answer(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        route = _route(url.path)
        self.body = None
        try:
            anthropic = route[:1] == ["messages"]  # its client sends the key as x-api-key
            (self.guard or Guard(*self.server.server_address[:2])).check(
                key_headers(self.headers) if anthropic else self.headers
            )
            upload = method == "POST" and route == ["files"]
            self.body = Body(self.rfile, content_length(self.headers, MAX_UPLOAD_BYTES if upload else MAX_JSON_BYTES))
            code, obj = self._dispatch(method, route, query)
        except ApiError as e:
            code, obj = e.status, e.body()
        except ClientGone:  # its client closed the connection while the request was queued: nobody to answer
            self.close_connection = True
            return
        if self.body is None or self.body.left:  # a body left unread would be taken for the next request
            self.close_connection = True
        self._send(code, obj, "application/octet-stream" if isinstance(obj, (bytes, Path)) else "application/json")

    def _dispatch(self, method: str, r: list[str], q: dict) -> tuple[int, dict | bytes | Path]:
        if r == ["health"]:  # and what the model thread did: requests computed, dropped, cut; the batch size
            return 200, {
                "status": "ok",
                "queued": self.runner.queued(),
                "batch_cap": self.runner.batch_cap,
                **dataclasses.asdict(self.runner.stats),
            }
        if method == "GET" and r in (["models"], []):
            return 200, {"object": "list", "data": [{"id": self.runner.name, "object": "model", "owned_by": "local"}]}
        if method == "POST" and r == ["chat", "completions"]:
            return chat_completion(self.runner, self.body.json(), self._client_alive)  # type: ignore[union-attr]
        if r[:1] == ["messages"]:
            base = f"http://{self.headers.get('Host')}"
            return self.messages.dispatch(method, r[1:], q, self.body, base, self._client_alive)
        if r[:1] == ["files"]:
            return self._files(method, r[1:], q)
        if r[:1] == ["batches"]:
            return self._batches(method, r[1:], q)
        raise ApiError(404, f"no route {method} {url_path(self.path)}", "not_found")

    def _upload(self) -> dict:
        store = self.batches.files
        tmp = store.temp_path()
        try:
            purpose, filename = stream_upload(self.headers.get("Content-Type") or "", self.body, tmp)  # type: ignore
            if purpose not in PURPOSES:
                raise ApiError(400, f"Invalid purpose {purpose!r}: one of {', '.join(PURPOSES)}.", param="purpose")
            if purpose == "batch":
                count_requests(tmp, source=filename)  # a bad line is a 400 naming it, before anything is stored
            return store.add_file(tmp, filename, purpose)
        finally:
            tmp.unlink(missing_ok=True)

    def _files(self, method: str, r: list[str], q: dict) -> tuple[int, dict | Path]:
        if method == "POST" and not r:
            return 200, self._upload()
        if method == "GET" and not r:
            return 200, self.batches.files.list(q.get("purpose"))
        if method == "GET" and len(r) == 1:
            return 200, self.batches.files.get(r[0])
        if method == "GET" and len(r) == 2 and r[1] == "content":
            return 200, self.batches.files.path(r[0])
        if method == "DELETE" and len(r) == 1:
            return 200, self.batches.files.delete(r[0])
        raise ApiError(404, f"no route {method} {url_path(self.path)}", "not_found")

    def _batches(self, method: str, r: list[str], q: dict) -> tuple[int, dict]:
        if method == "POST" and not r:
            return 200, self.batches.create(self.body.json())  # type: ignore[union-attr]
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
        raise ApiError(404, f"no route {method} {url_path(self.path)}", "not_found")

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def do_DELETE(self) -> None:
        self._answer("DELETE")

    def do_OPTIONS(self) -> None:  # a browser's CORS preflight: refused, with no CORS header
        self._answer("OPTIONS")


def url_path(path: str) -> str:
    return urlsplit(path).path[:200]


def make_handler(
    runner: ModelRunner,
    batches: BatchManager | None = None,
    guard: Guard | None = None,
    messages: MessagesApi | None = None,
) -> type[BaseHTTPRequestHandler]:
    """The request handler over `runner`; files and batches in `batches` (by default: a temp folder, no faults);
    requests checked by `guard` (by default: Host must be the address the server is bound to; no key)."""
    if batches is None:
        batches = BatchManager(FileStore(), lambda body: chat_completion(runner, body), model=runner.name)
    messages = messages or MessagesApi(runner, batches)
    return type("Handler", (_Handler,), {"runner": runner, "batches": batches, "guard": guard, "messages": messages})


def _listen(
    runner: ModelRunner,
    host: str,
    port: int,
    files_dir: str | Path | None,
    faults: BatchFaults | None,
    api_key: str | None,
    allow_hosts: tuple[str, ...],
    max_threads: int,
) -> tuple[HTTPServer, BatchManager, MessagesApi]:
    check_bind(host, api_key)
    try:
        server = BoundedServer((host, port), None, max_threads)
    except (OSError, OverflowError) as e:  # address in use, unknown host, port out of range
        raise UserError(f"cannot listen on {host}:{port}: {e}") from None
    manager = BatchManager(FileStore(files_dir), lambda body: chat_completion(runner, body), faults, runner.name)
    messages = MessagesApi(runner, manager)
    server.RequestHandlerClass = make_handler(
        runner, manager, Guard(host, server.server_address[1], api_key, tuple(allow_hosts)), messages
    )
    return server, manager, messages


class _Terminated(KeyboardInterrupt):
    """SIGTERM: stop as for Ctrl-C (the temporary files folder is removed on the way out)."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated()


def serve(
    model: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    name: str | None = None,
    device: str | None = None,
    ready: threading.Event | None = None,
    files_dir: str | Path | None = None,
    faults: BatchFaults | None = None,
    api_key: str | None = None,
    allow_hosts: tuple[str, ...] = (),
    max_batch: int = 8,
    max_threads: int = MAX_THREADS,
) -> None:
    """Serve `model` until Ctrl-C or SIGTERM; files in `files_dir` (default: a new temp folder, removed at
    exit), batches with `faults`; requests need `api_key` when given (it is required off loopback)."""
    check_bind(host, api_key)  # before the model loads: a refusal is immediate
    runner = ModelRunner(model, name=name, device=device, max_batch=max_batch)
    server, manager, messages = _listen(runner, host, port, files_dir, faults, api_key, allow_hosts, max_threads)
    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if on_main else None
    print(
        f"serving {runner.name} on http://{host}:{server.server_address[1]}/v1"
        f"{' (API key required)' if api_key else ''}; batches of up to {max_batch} requests",
        flush=True,
    )
    if faults is not None and faults.any():
        print(f"batch faults: {faults}", flush=True)
    if ready:
        ready.set()
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the ways to stop it
        pass
    finally:
        if on_main:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup short
        manager.close()
        messages.close()
        server.server_close()
        manager.files.cleanup()
        if on_main:
            signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def start_server(
    model: str | Path | ModelRunner,
    faults: BatchFaults | None = None,
    files_dir: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    name: str | None = None,
    api_key: str | None = None,
    allow_hosts: tuple[str, ...] = (),
    max_batch: int = 8,
    max_threads: int = MAX_THREADS,
) -> Iterator[str]:
    """A server in this process (a background thread) for tests and benchmarks; yields its base URL
    (http://HOST:PORT/v1) and stops it on exit. Pass a ModelRunner to share one loaded model between servers."""
    runner = model if isinstance(model, ModelRunner) else ModelRunner(str(model), name=name, max_batch=max_batch)
    server, manager, messages = _listen(runner, host, port, files_dir, faults, api_key, allow_hosts, max_threads)
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="alpagasus-serve")
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        manager.close()
        messages.close()
        server.server_close()
        manager.files.cleanup()
