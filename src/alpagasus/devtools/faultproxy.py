"""A fault-injecting HTTP proxy for an OpenAI-compatible server: the failures a hosted API really has, on demand.

It sits on 127.0.0.1 in front of a real server (`alpagasus serve`, vLLM...) and, by rule, answers 429 with
Retry-After, 500/502/503, hangs past the client's timeout, drops the connection mid-response, returns 200 with
empty content, `finish_reason=length` or a garbage body, or replaces the reply's content with given text (fuzzed
replies). A rule fires by seeded rate, by request index, by time window or on requests containing some text.
The proxy can go down (connection refused) and come back up, by call or on a schedule, and can add lognormal
latency (median ~1 s, heavy tail) to model a hosted API in benchmarks. Every request is logged with timestamps:
received, completed (the whole response written), and a key hashing its messages, so that the same item is
recognised across retries.

Library: `with FaultProxy(upstream, [Rule("429", rate=0.3, retry_after=2)]) as p: ... p.events`.
Command: `python -m alpagasus.devtools.faultproxy --upstream http://127.0.0.1:8000 --port 9000 --fault 429:0.3`.
stdlib only (asyncio in a background thread); HTTP/1.1 with keep-alive towards the client.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import math
import random
import re
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Container
from urllib.parse import urlsplit

ERRORS = ("429", "500", "502", "503")
FAULTS = ERRORS + ("hang", "drop", "empty", "length", "garbage", "content")
REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


@dataclass
class Rule:
    """One fault, applied to the requests that meet every condition given (and then with probability `rate`)."""

    fault: str
    rate: float = 1.0
    requests: Container[int] | None = None  # request indices, 0-based in arrival order
    window: tuple[float, float] | None = None  # seconds since start() / reset()
    match: str | None = None  # text the request body must contain
    times: int | None = None  # fire at most this often
    retry_after: float | None = None  # 429/503: the Retry-After header
    content: str | Callable[[dict], str] | None = None  # "content"/"length": the reply text (or f(request))
    hang_s: float = 600.0  # "hang": how long to hold the request unanswered
    hits: int = 0

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; one of {', '.join(FAULTS)}")


@dataclass
class Event:
    index: int
    key: str  # hash of the request's messages: one item across its retries
    fault: str | None
    received: float  # time.monotonic() when the request was read
    done: float | None = None  # when the whole response was written; None if it never was
    status: int | None = None
    sent: float | None = None  # when the response started to be written (the client cannot have it sooner)


@dataclass
class Lognormal:
    """Latency of a hosted API: lognormal with this median; sigma 1 puts p99 near 10x the median."""

    median: float = 1.0
    sigma: float = 1.0
    cap: float = 60.0

    def sample(self, rng: random.Random) -> float:
        return min(self.cap, rng.lognormvariate(math.log(self.median), self.sigma))


def request_key(body: bytes | dict) -> str:
    """The key an item's requests share: a hash of the chat messages (not temperature or max_tokens)."""
    try:
        obj = json.loads(body) if isinstance(body, (bytes, str)) else body
        payload = json.dumps(obj.get("messages"), sort_keys=True, ensure_ascii=False).encode("utf-8", "replace")
    except (ValueError, AttributeError):
        payload = body if isinstance(body, bytes) else repr(body).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


class FaultProxy:
    def __init__(
        self,
        upstream: str | None,
        rules: list[Rule] | tuple[Rule, ...] = (),
        *,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: Lognormal | None = None,
        outages: list[tuple[float, float]] | tuple = (),
        canned: str = "4\nA canned review.",
    ):
        u = urlsplit(upstream) if upstream else None
        self.upstream = (u.hostname or "127.0.0.1", u.port or 80) if u else None  # None: answer with `canned`
        self.rules, self.seed, self.host, self.port = list(rules), seed, host, port
        self.latency, self.outages, self.canned = latency, list(outages), canned
        self.rng = random.Random(seed)
        self._events: list[Event] = []
        self._t0 = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()
        self._schedule: concurrent.futures.Future[None] | None = None

    # ---- control (from any thread) ------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> str:
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="faultproxy", daemon=True).start()
        self._call(self._listen())
        self.reset()
        return self.url

    def stop(self) -> None:
        if self._loop is None:
            return
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop = None

    def reset(self, rules: list[Rule] | None = None) -> None:
        """Forget the log, restart the clock (windows, outages) and the seeded draws; optionally new rules."""
        if rules is not None:
            self.rules = list(rules)
        for r in self.rules:
            r.hits = 0
        self._events, self._t0, self.rng = [], time.monotonic(), random.Random(self.seed)
        if self._loop is not None:
            if self._schedule is not None:
                self._schedule.cancel()
            self._schedule = asyncio.run_coroutine_threadsafe(self._run_outages(), self._loop)

    def down(self) -> None:
        """Stop listening and cut every connection: clients get 'connection refused' until up()."""
        self._call(self._close())

    def up(self) -> None:
        self._call(self._listen())

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---- what happened ---------------------------------------------------------------------------------
    @property
    def t0(self) -> float:
        """time.monotonic() of start() / reset(): the zero of windows and outages."""
        return self._t0

    @property
    def events(self) -> list[Event]:
        return list(self._events)

    @property
    def received(self) -> int:
        return len(self._events)

    @property
    def completed(self) -> int:
        return sum(e.done is not None for e in self._events)

    def by_key(self) -> dict[str, list[Event]]:
        out: dict[str, list[Event]] = {}
        for e in self._events:
            out.setdefault(e.key, []).append(e)
        return out

    def summary(self) -> dict[str, Any]:
        ev = self.events
        faults: dict[str, int] = {}
        for e in ev:
            faults[e.fault or "none"] = faults.get(e.fault or "none", 0) + 1
        return {
            "received": len(ev),
            "completed": sum(e.done is not None for e in ev),
            "items": len({e.key for e in ev}),
            "faults": faults,
        }

    # ---- the server ----------------------------------------------------------------------------------------
    def _call(self, coro: Any) -> Any:
        assert self._loop is not None, "the proxy is not started"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle, self.host, self.port, reuse_address=True, limit=1 << 24
            )
            self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        for t in list(self._tasks):
            t.cancel()

    async def _run_outages(self) -> None:
        for a, b in sorted(self.outages):
            await asyncio.sleep(max(0.0, self._t0 + a - time.monotonic()))
            await self._close()
            await asyncio.sleep(max(0.0, self._t0 + b - time.monotonic()))
            await self._listen()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # a connection's handler runs as a task
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            while True:
                req = await _read_request(reader)
                if req is None or not await self._serve(req, writer):
                    break
        except (
            ConnectionError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,
            asyncio.CancelledError,
        ):
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    def _pick(self, index: int, t: float, text: str) -> Rule | None:
        for r in self.rules:
            if (
                (r.requests is None or index in r.requests)
                and (r.window is None or r.window[0] <= t < r.window[1])
                and (r.match is None or r.match in text)
                and (r.times is None or r.hits < r.times)
                and (r.rate >= 1 or self.rng.random() < r.rate)
            ):
                r.hits += 1
                return r
        return None

    async def _serve(self, req: dict, writer: asyncio.StreamWriter) -> bool:
        now = time.monotonic()
        ev = Event(len(self._events), request_key(req["body"]), None, now)
        self._events.append(ev)
        keep = req["headers"].get("connection", "").lower() != "close"
        rule = self._pick(ev.index, now - self._t0, req["body"].decode("utf-8", "replace"))
        fault = ev.fault = rule.fault if rule else None
        delay = self.latency.sample(self.rng) if self.latency else 0.0
        if rule is not None and fault in ERRORS:
            status, headers = int(fault), {}
            body = json.dumps({"error": {"message": f"injected {fault}", "type": "fault_proxy"}}).encode()
            if rule.retry_after is not None:
                headers = {"retry-after": f"{rule.retry_after:g}", "retry-after-ms": f"{rule.retry_after * 1000:.0f}"}
        elif rule is not None and fault == "hang":
            await asyncio.sleep(rule.hang_s)
            return False
        elif fault == "garbage":
            status, headers, body = 200, {}, b"<html>\x00\xff upstream exploded {{{ not json"
        else:
            t = time.monotonic()
            status, headers, body = await self._forward(req)
            await asyncio.sleep(max(0.0, delay - (time.monotonic() - t)))  # the modelled latency, at least
            if rule is not None and status == 200 and fault in ("empty", "length", "content"):
                body = _rewrite(body, fault, rule.content, req)
        head = _head(status, {**headers, "content-type": "application/json"}, len(body), keep)
        ev.sent, ev.status = time.monotonic(), status
        if fault == "drop":
            writer.write(head + body[: len(body) // 2])
            await writer.drain()
            writer.transport.abort()
            return False
        writer.write(head + body)
        await writer.drain()
        ev.done = time.monotonic()
        return keep

    async def _forward(self, req: dict) -> tuple[int, dict, bytes]:
        if self.upstream is None:
            return 200, {}, _canned(req, self.canned)
        try:
            r, w = await asyncio.open_connection(*self.upstream, limit=1 << 24)
        except OSError as e:
            return 502, {}, json.dumps({"error": {"message": f"upstream unreachable: {e}"}}).encode()
        hdrs = {k: v for k, v in req["headers"].items() if k in ("content-type", "authorization", "accept")}
        lines = [
            f"{req['method']} {req['path']} HTTP/1.1",
            f"host: {self.upstream[0]}:{self.upstream[1]}",
            f"content-length: {len(req['body'])}",
            "connection: close",
            *(f"{k}: {v}" for k, v in hdrs.items()),
        ]
        try:
            w.write(("\r\n".join(lines) + "\r\n\r\n").encode() + req["body"])
            await w.drain()
            raw = await r.read()
        finally:
            w.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = _dechunk(body)
        keep = {k: v for k, v in headers.items() if k.startswith(("retry-after", "x-"))}
        return int(status_line.split()[1]), keep, body


async def _read_request(reader: asyncio.StreamReader) -> dict | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if not e.partial.strip():
            return None
        raise
    first, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    method, path, _ = first.split(" ", 2)
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    else:
        body = await reader.readexactly(int(headers.get("content-length") or 0))
    return {"method": method, "path": path, "headers": headers, "body": body}


def _dechunk(data: bytes) -> bytes:
    out, i = b"", 0
    while True:
        j = data.index(b"\r\n", i)
        size = int(data[i:j].split(b";")[0], 16)
        if size == 0:
            return out
        out += data[j + 2 : j + 2 + size]
        i = j + 2 + size + 2


def _head(status: int, headers: dict, length: int, keep: bool) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}",
        f"content-length: {length}",
        f"connection: {'keep-alive' if keep else 'close'}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _rewrite(body: bytes, fault: str, content: Any, req: dict) -> bytes:
    """Replace the completion's text; in logprob requests the first token's logprobs follow the new text."""
    try:
        obj, request = json.loads(body), json.loads(req["body"] or b"{}")
        choice = obj["choices"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return body
    text = content(request) if callable(content) else content
    if fault == "empty":
        text, choice["finish_reason"] = "", "stop"
    elif fault == "length":
        old = choice["message"].get("content") or ""
        text, choice["finish_reason"] = (old[: len(old) // 2] if text is None else text), "length"
    choice["message"]["content"] = text
    if request.get("logprobs"):
        tok = (text or "").split()[0] if (text or "").split() else ""
        entry = {
            "token": tok,
            "logprob": 0.0,
            "bytes": None,
            "top_logprobs": [{"token": tok, "logprob": 0.0, "bytes": None}],
        }
        choice["logprobs"] = {"content": [entry] if tok else []}
    return json.dumps(obj).encode()


def _canned(req: dict, text: str) -> bytes:
    """A completion made up by the proxy itself (no upstream): for benchmarks of the client alone."""
    try:
        request = json.loads(req["body"] or b"{}")
    except ValueError:
        request = {}
    obj = {
        "id": "chatcmpl-proxy",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", "canned"),
        "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}, "logprobs": None}
        ],
        "usage": {
            "prompt_tokens": len(req["body"]) // 4,
            "completion_tokens": len(text) // 4 + 1,
            "total_tokens": len(req["body"]) // 4 + len(text) // 4 + 1,
        },
    }
    return (
        _rewrite(json.dumps(obj).encode(), "content", text, req)
        if request.get("logprobs")
        else json.dumps(obj).encode()
    )


SPEC = re.compile(
    r"^(?P<fault>\w+)(?::(?P<rate>[\d.]+))?(?:@(?P<t0>[\d.]+)-(?P<t1>[\d.]+))?(?:#(?P<n0>\d+)-(?P<n1>\d+))?$"
)


def parse_rule(spec: str, retry_after: float | None = None, content: str | None = None, hang_s: float = 600.0) -> Rule:
    """`KIND[:RATE][@T0-T1][#N0-N1]`: e.g. `429:0.3`, `503@10-70` (seconds), `hang#5-7` (request indices)."""
    m = SPEC.match(spec)
    if not m:
        raise ValueError(f"bad fault spec {spec!r}: expected KIND[:RATE][@T0-T1][#N0-N1]")
    g = m.groupdict()
    return Rule(
        g["fault"],
        rate=float(g["rate"] or 1),
        retry_after=retry_after,
        content=content,
        hang_s=hang_s,
        window=(float(g["t0"]), float(g["t1"])) if g["t0"] else None,
        requests=range(int(g["n0"]), int(g["n1"]) + 1) if g["n0"] else None,
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m alpagasus.devtools.faultproxy", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--upstream", required=True, help="the real server, e.g. http://127.0.0.1:8000 ('none': canned replies)"
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument(
        "--fault", action="append", default=[], help="KIND[:RATE][@T0-T1][#N0-N1]; kinds: " + ", ".join(FAULTS)
    )
    ap.add_argument("--retry-after", type=float, default=None, help="Retry-After of 429/503 answers (seconds)")
    ap.add_argument("--content", default=None, help="reply text for the content/length faults")
    ap.add_argument("--hang", type=float, default=600.0, help="seconds a 'hang' holds a request")
    ap.add_argument("--down", action="append", default=[], help="T0-T1: refuse connections in this window (seconds)")
    ap.add_argument("--latency-median", type=float, default=None, help="add lognormal latency with this median (s)")
    ap.add_argument("--latency-sigma", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log", default=None, help="write every request's event as JSONL here on exit")
    a = ap.parse_args(argv)
    rules = [parse_rule(s, a.retry_after, a.content, a.hang) for s in a.fault]
    outages = [(float(lo), float(hi)) for lo, hi in (w.split("-", 1) for w in a.down)]
    latency = Lognormal(a.latency_median, a.latency_sigma) if a.latency_median else None
    proxy = FaultProxy(
        None if a.upstream == "none" else a.upstream,
        rules,
        seed=a.seed,
        host=a.host,
        port=a.port,
        latency=latency,
        outages=outages,
    )
    print(f"fault proxy on {proxy.start()} -> {a.upstream}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        if a.log:
            with open(a.log, "w", encoding="utf-8") as f:
                for e in proxy.events:
                    f.write(json.dumps(asdict(e)) + "\n")
        print(json.dumps(proxy.summary()), flush=True)
        proxy.stop()


if __name__ == "__main__":
    main()
