"""Helpers shared by the bench scripts. A BENCHMARK HARNESS ONLY: nothing here is part of the tool.

- An instant-reply OpenAI-compatible server: POST /v1/chat/completions answered at once (GET /v1/models, and
  GET /v1/stats: requests served and TCP connections accepted, to check keep-alive), with a score that is a
  deterministic function of the request's messages (so a selection has a spread and a re-run gets the same
  scores). It honours `logprobs`/`top_logprobs` the way the `openai:` judge reads them (the top log-probabilities
  of the first token, over the digits) and answers generate-mode requests the paper's way ("4\\nexplanation").
  Raw asyncio protocol, HTTP/1.1 keep-alive: several thousand requests/second on one core, so a benchmark against
  it measures the client, not the server.
- Starting servers and proxies on free ports (the instant server in its own process, the fault proxy with
  lognormal latency as a hosted-API model, `alpagasus serve`), and peak-RSS helpers.

    python bench/harness.py serve --port 8123          # the instant server, until Ctrl-C
    python bench/harness.py loadtest                   # its requests/second from a raw keep-alive client
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import resource
import socket
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]
ALPACA = Path(os.environ.get("ALPAGASUS_SHARED_DATA") or REPO.parent / "shared" / "data") / "alpaca" / \
    "alpaca_random_9k.json"

# score distribution of the instant judge: roughly the shape a strong LLM gives Alpaca rows (mostly 4s and 5s)
WEIGHTS = (0.02, 0.03, 0.08, 0.17, 0.45, 0.25)
EXPLANATION = ("The response follows the instruction and the input, is mostly accurate and clearly written, "
               "though it could give more detail and justify its claims a little better.").split()


# ---- the instant judge --------------------------------------------------------------------------------------
def instant_score(text: str) -> tuple[int, dict[str, float]]:
    """The digit the instant server answers for this text, and its probabilities over "0".."5" (a peak on
    the digit, the rest on its neighbours) so that the expected score is continuous."""
    h = zlib.crc32(text.encode("utf-8", "replace"))
    u, v = (h & 0xFFFF) / 65536.0, (h >> 16) / 65536.0
    acc, digit = 0.0, 5
    for d, w in enumerate(WEIGHTS):
        acc += w
        if u < acc:
            digit = d
            break
    probs = dict.fromkeys("012345", 1e-4)
    probs[str(digit)] = 0.5 + 0.45 * v
    neighbours = [str(n) for n in (digit - 1, digit + 1) if 0 <= n <= 5]
    for n in neighbours:
        probs[n] += (0.5 - 0.45 * v) / len(neighbours)
    return digit, probs


def completion(request: dict) -> dict:
    """The chat completion the instant server returns for one request body (as a dict)."""
    messages = request.get("messages") or []
    text = "\n".join(str(m.get("content") or "") for m in messages if m.get("role") != "assistant")
    digit, probs = instant_score(text)
    max_tokens = int(request.get("max_completion_tokens") or request.get("max_tokens") or 256)
    words = [str(digit), *EXPLANATION]  # a word stands for a token
    finish = "stop" if max_tokens >= len(words) else "length"
    content = words[0] + ("\n" + " ".join(words[1:max_tokens]) if max_tokens > 1 else "")
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None,
                              "message": {"role": "assistant", "content": content}}
    if request.get("logprobs"):
        n = int(request.get("top_logprobs") or 0)
        top = sorted(probs.items(), key=lambda kv: -kv[1])[:n]
        entry = {"token": str(digit), "logprob": math.log(probs[str(digit)]), "bytes": None,
                 "top_logprobs": [{"token": t, "logprob": math.log(p), "bytes": None} for t, p in top]}
        choice["logprobs"] = {"content": [entry]}
    n_in = sum(len(str(m.get("content") or "")) for m in messages) // 4 + 8
    n_out = min(max_tokens, len(words))
    return {"id": f"chatcmpl-instant-{zlib.crc32(text.encode('utf-8', 'replace')):08x}",
            "object": "chat.completion", "created": int(time.time()), "model": request.get("model") or "instant",
            "choices": [choice], "usage": {"prompt_tokens": n_in, "completion_tokens": n_out,
                                           "total_tokens": n_in + n_out}}


REASON = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 411: b"Length Required"}
MODELS = json.dumps({"object": "list", "data": [{"id": "instant", "object": "model", "owned_by": "bench"}]}).encode()


class _Http(asyncio.Protocol):
    """Minimal HTTP/1.1 server side: content-length bodies, keep-alive, pipelined requests in order."""

    def __init__(self, server: "InstantServer"):
        self.server, self.buf, self.transport = server, b"", None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.server.connections += 1

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            first, _, rest = head.partition("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in rest.split("\r\n"))}
            length = int(headers.get("content-length") or 0)
            if len(self.buf) < end + 4 + length:
                return  # the body is still coming
            body, self.buf = self.buf[end + 4:end + 4 + length], self.buf[end + 4 + length:]
            parts = first.split(" ")
            keep = headers.get("connection", "").lower() != "close" and parts[-1] != "HTTP/1.0"
            status, payload = self.server.answer(parts[0], parts[1] if len(parts) > 1 else "/", body,
                                                 "transfer-encoding" in headers)
            self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                                 b"connection: %s\r\n\r\n" % (status, REASON.get(status, b"Error"), len(payload),
                                                              b"keep-alive" if keep else b"close") + payload)
            if not keep:
                self.transport.close()
                return


class InstantServer:
    """The instant-reply server on 127.0.0.1, in a background thread of this process (tests) or as the main
    loop of its own process (`serve()`, what benchmarks use: then it does not share the client's GIL)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host, self.port, self.served, self.connections = host, port, 0, 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def answer(self, method: str, path: str, body: bytes, chunked: bool) -> tuple[int, bytes]:
        if method == "GET" and path.rstrip("/").endswith("/models"):
            return 200, MODELS
        if method == "GET" and path.rstrip("/").endswith("/stats"):  # how many requests, on how many connections
            return 200, json.dumps({"served": self.served, "connections": self.connections}).encode()
        if method != "POST" or not path.rstrip("/").endswith("/chat/completions"):
            return 404, b'{"error": {"message": "not found", "type": "invalid_request_error"}}'
        if chunked:
            return 411, b'{"error": {"message": "send a content-length", "type": "invalid_request_error"}}'
        try:
            reply = completion(json.loads(body))
        except (ValueError, TypeError, AttributeError) as e:
            return 400, json.dumps({"error": {"message": f"bad request body: {e}", "type": "invalid_request_error"}}).encode()
        self.served += 1
        return 200, json.dumps(reply).encode()

    async def _start(self) -> None:
        self._server = await asyncio.get_running_loop().create_server(lambda: _Http(self), self.host, self.port,
                                                                      reuse_address=True, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    def start(self) -> str:
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="instant-server", daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self.url

    def stop(self) -> None:
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop = None

    async def _stop(self) -> None:
        self._server.close()

    def __enter__(self) -> "InstantServer":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def serve(self) -> None:
        """Run in the calling thread until interrupted (the `serve` command)."""
        async def main() -> None:
            await self._start()
            print(f"instant server on {self.url}", flush=True)
            await asyncio.Event().wait()
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(main())


# ---- processes on free ports ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


URL = re.compile(r"(http://[\w.:-]+/v1)")


@contextlib.contextmanager
def spawn(cmd: list[str], timeout: float = 120.0, env: dict | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start a server process that prints its URL (http://HOST:PORT/v1) on stdout; yield (url, process);
    stop it on exit. Its output after the URL is drained in a thread so that the pipe never fills."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})
    lines: list[str] = []
    try:
        deadline = time.monotonic() + timeout
        url = None
        while url is None:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{' '.join(cmd)} exited (rc {proc.wait()}) before printing its URL:\n"
                                   + "".join(lines[-30:]))
            lines.append(line)
            m = URL.search(line)
            url = m.group(1) if m else None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{' '.join(cmd)} printed no URL in {timeout:.0f} s")
        threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def instant_server_process(port: int = 0) -> contextlib.AbstractContextManager[tuple[str, subprocess.Popen]]:
    """The instant server in its own process (so it never competes for the client's GIL)."""
    return spawn([sys.executable, str(Path(__file__).resolve()), "serve", "--port", str(port)])


def latency_proxy_process(upstream: str, median: float = 1.0, sigma: float = 0.6, seed: int = 0,
                          port: int = 0) -> contextlib.AbstractContextManager[tuple[str, subprocess.Popen]]:
    """The fault proxy (alpagasus.devtools.faultproxy) in front of `upstream`, adding lognormal latency only:
    a hosted API's response times. The draws are seeded, in arrival order."""
    base = upstream.rsplit("/v1", 1)[0]
    return spawn([sys.executable, "-m", "alpagasus.devtools.faultproxy", "--upstream", base, "--port", str(port),
                  "--latency-median", str(median), "--latency-sigma", str(sigma), "--seed", str(seed)])


def alpagasus_serve_process(model: str = "embedded:smollm2", port: int = 0,
                            timeout: float = 300.0) -> contextlib.AbstractContextManager[tuple[str, subprocess.Popen]]:
    """`alpagasus serve` (our own OpenAI-compatible server over a local model)."""
    return spawn([sys.executable, "-m", "alpagasus.cli", "serve", "--model", model, "--port", str(port)],
                 timeout=timeout, env={"HF_HUB_OFFLINE": "1"})


# ---- memory -------------------------------------------------------------------------------------------------
def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def process_peak_rss_mb(pid: int) -> float | None:
    """Peak resident memory of a running process (VmHWM), or None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_measured(cmd: list[str], env: dict | None = None, timeout: float | None = None) -> dict:
    """Run a command to the end; its exit code, output, wall time and peak RSS (via wait4). Linux starts a
    child's peak at its parent's resident size when it execs, so the figure is an upper bound: max(the
    child's own peak, this process's size at the spawn). Keep the parent small (bench/memory.py: ~40 MB)."""
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env={**os.environ, **(env or {})})
        timer = threading.Timer(timeout, proc.kill) if timeout is not None else None
        if timer:
            timer.start()
        _, status, usage = os.wait4(proc.pid, 0)  # reaps the child and gives its own rusage
        if timer:
            timer.cancel()
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        return {"rc": proc.returncode, "stdout": out.read(), "stderr": err.read(), "wall_s": wall,
                "peak_rss_mb": usage.ru_maxrss / 1024}


def load_avg() -> str:
    """The machine's load (1, 5, 15 min) and cores, to print beside every figure."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def alpaca_rows(n: int | None = None) -> list[dict]:
    """The first `n` real Alpaca rows the tool accepts as they are (instruction and output not empty, no
    duplicates), so that a baseline and the tool rate exactly the same rows."""
    seen, rows = set(), []
    for r in json.loads(ALPACA.read_text(encoding="utf-8")):
        key = (r.get("instruction", ""), r.get("input", ""), r.get("output", ""))
        if key[0].strip() and key[2].strip() and key not in seen:
            seen.add(key)
            rows.append(r)
    return rows if n is None else rows[:n]


# ---- a judge loaded once, for runs that must not time model loading ----------------------------------------
PRELOADED: dict[str, Any] = {}


def preloaded_judge(arg: str, mode: str | None = None, backend: str = "", **_: Any) -> Any:
    """A judge factory for `alpagasus.judges.register("preloaded", "harness:preloaded_judge")`: the spec
    `preloaded:NAME` gives back the judge object stored in PRELOADED[NAME] (already loaded), so the real rate
    pipeline runs on it without loading the model again."""
    return PRELOADED[arg]


# ---- a raw keep-alive load generator (to show the server is not the bottleneck) ----------------------------
async def _hammer(host: str, port: int, body: bytes, n: int, conns: int) -> float:
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
           b"content-length: %d\r\n\r\n" % len(body)) + body

    async def one_conn(k: int) -> None:
        r, w = await asyncio.open_connection(host, port)
        for _ in range(k):
            w.write(req)
            head = await r.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"content-length: (\d+)", head).group(1))
            await r.readexactly(length)
        w.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one_conn(n // conns) for _ in range(conns)))
    return (n // conns) * conns / (time.perf_counter() - t0)


def loadtest(n: int = 20000, conns: int = 32, logprobs: bool = True) -> float:
    """Requests/second the instant server (own process) answers to a raw keep-alive client (own process)."""
    row = alpaca_rows(1)[0]
    body = json.dumps({"model": "instant", "messages": [{"role": "user", "content": json.dumps(row)}],
                       "max_tokens": 1, "logprobs": logprobs, "top_logprobs": 20}).encode()
    with instant_server_process() as (url, _):
        host, port = url.split("//")[1].split("/")[0].split(":")
        return asyncio.run(_hammer(host, int(port), body, n, conns))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the instant-reply OpenAI-compatible server")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8123, help="0 picks a free port (printed)")
    lt = sub.add_parser("loadtest", help="requests/second of the instant server from a raw keep-alive client")
    lt.add_argument("--requests", type=int, default=20000)
    lt.add_argument("--connections", type=int, default=32)
    a = ap.parse_args(argv)
    if a.cmd == "serve":
        InstantServer(a.host, a.port).serve()
    else:
        rate = loadtest(a.requests, a.connections)
        print(f"instant server: {rate:.0f} requests/s ({a.connections} keep-alive connections, {load_avg()})")
        print(json.dumps({"requests_per_s": round(rate)}))


if __name__ == "__main__":
    main()
