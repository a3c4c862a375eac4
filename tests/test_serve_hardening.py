"""`alpagasus serve` for its owner only, with bounded resources (issue 22): API key, Host/Origin checks, body
limits and streamed uploads, damaged metadata, bounded threads, parameter checks, dynamic batching, dropped work of
departed clients, batches across a restart, SIGTERM. Real servers on 127.0.0.1 over the tiny model; raw sockets
and http.client for what a well-behaved client never sends."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from openai import OpenAI

from alpagasus.errors import UserError
from alpagasus.serve import BatchFaults, ModelRunner, read_requests, start_server
from alpagasus.serve.files import MAX_LINE_BYTES, ApiError
from alpagasus.serve.security import check_bind
from alpagasus.serve.upload import MAX_JSON_BYTES, MAX_UPLOAD_BYTES

CHAT = "/v1/chat/completions"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def runner(tiny_model):
    return ModelRunner(str(tiny_model), name="tiny", max_batch=8)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def call(url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """(status, parsed JSON or raw bytes, headers) of one request through http.client (Host as given)."""
    c = http.client.HTTPConnection("127.0.0.1", port_of(url), timeout=30)
    c.putrequest(method, path, skip_host="Host" in (headers or {}))
    for k, v in {"Content-Length": str(len(body or b"")), **(headers or {})}.items():
        c.putheader(k, v)
    c.endheaders(body)
    r = c.getresponse()
    data = r.read()
    c.close()
    try:
        data = json.loads(data)
    except ValueError:
        pass
    return r.status, data, {k.lower(): v for k, v in r.getheaders()}


def raw(url: str, head: str, body: bytes = b"", timeout: float = 5.0) -> bytes:
    """Send a hand-written request; the status line and headers of the answer (fails if none comes in time)."""
    with socket.create_connection(("127.0.0.1", port_of(url)), timeout=timeout) as s:
        s.sendall(head.encode() + body)
        out = b""
        while b"\r\n\r\n" not in out:
            chunk = s.recv(4096)
            assert chunk, f"connection closed without an answer: {out!r}"
            out += chunk
        return out


def chat_body(text: str = "hi", **extra) -> bytes:
    return json.dumps({"messages": [{"role": "user", "content": text}], "max_tokens": 2, **extra}).encode()


def multipart(data: bytes, purpose: str = "batch") -> tuple[bytes, dict]:
    b = "bNd"
    body = (
        f'--{b}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n{purpose}\r\n--{b}\r\n'
        f'Content-Disposition: form-data; name="file"; filename="f.jsonl"\r\n\r\n'
    ).encode()
    return body + data + f"\r\n--{b}--\r\n".encode(), {"Content-Type": f"multipart/form-data; boundary={b}"}


# ---- 1. the key -------------------------------------------------------------------------------------------------
def test_api_key_checked_on_every_route(runner):
    with start_server(runner, api_key="s3cret") as url:
        for method, path in (
            ("GET", "/v1/models"),
            ("GET", "/v1/files"),
            ("GET", "/v1/batches"),
            ("POST", CHAT),
            ("GET", "/health"),
        ):
            status, body, headers = call(url, method, path, chat_body() if method == "POST" else None)
            assert status == 401 and body["error"]["code"] == "invalid_api_key", (method, path)
            assert headers["www-authenticate"] == "Bearer"
        assert call(url, "GET", "/v1/models", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert call(url, "GET", "/v1/models", headers={"Authorization": "Basic s3cret"})[0] == 401
        reply = OpenAI(base_url=url, api_key="s3cret", max_retries=0).chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        assert reply.choices[0].message.content is not None


def test_a_key_is_required_off_loopback(tiny_model):
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1"):
        check_bind(host, None)
    for host in ("0.0.0.0", "192.168.1.10", "example.org"):
        with pytest.raises(UserError, match="--api-key"):
            check_bind(host, None)
        check_bind(host, "k")
    # the command refuses before loading the model (a model that does not exist: the refusal comes first)
    out = subprocess.run(
        [sys.executable, "-m", "alpagasus.cli", "serve", "--host", "0.0.0.0", "--model", "/nonexistent/model"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert out.returncode == 2 and "give an API key" in out.stdout + out.stderr


# ---- 2. Host and Origin -----------------------------------------------------------------------------------------
def test_host_and_origin_checks_and_no_cors(runner):
    with start_server(runner, allow_hosts=("myhost.lan",)) as url:
        port = port_of(url)
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", f"myhost.lan:{port}"):
            assert call(url, "GET", "/v1/models", headers={"Host": host})[0] == 200, host
        for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1:{port + 1}", "127.0.0.1"):
            status, body, _ = call(url, "GET", "/v1/models", headers={"Host": host})
            assert status == 403 and body["error"]["code"] == "forbidden_host", host
        assert b" 400 " in raw(url, "GET /v1/models HTTP/1.0\r\n\r\n")  # no Host at all
        for origin in ("http://evil.example", "null", f"http://127.0.0.1:{port + 1}"):
            status, body, headers = call(url, "POST", CHAT, chat_body(), {"Origin": origin})
            assert status == 403 and body["error"]["code"] == "forbidden_origin"
            assert not [h for h in headers if h.startswith("access-control")]
        status, _, headers = call(
            url, "OPTIONS", CHAT, headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
        )
        assert status == 403 and not [h for h in headers if h.startswith("access-control")]
        status, _, headers = call(url, "POST", CHAT, chat_body(), {"Origin": f"http://127.0.0.1:{port}"})
        assert status == 200 and not [h for h in headers if h.startswith("access-control")]


# ---- 3. limits and streamed uploads -----------------------------------------------------------------------------
def test_bad_content_length_and_limits_answered_at_once(runner):
    with start_server(runner) as url:
        host = f"Host: 127.0.0.1:{port_of(url)}\r\n"
        for value in ("abc", "-1", "1e3", "99999999999999999999"):
            assert b" 400 " in raw(url, f"POST {CHAT} HTTP/1.1\r\n{host}Content-Length: {value}\r\n\r\n", b"{}")
        assert b" 400 " in raw(url, f"POST {CHAT} HTTP/1.1\r\n{host}Content-Length: 2\r\nContent-Length: 3\r\n\r\n")
        # over the limit: 413 before the body is sent at all (the client waits for the answer, sends nothing)
        assert b" 413 " in raw(url, f"POST {CHAT} HTTP/1.1\r\n{host}Content-Length: {MAX_JSON_BYTES + 1}\r\n\r\n")
        assert b" 413 " in raw(
            url,
            f"POST /v1/files HTTP/1.1\r\n{host}Content-Type: multipart/form-data; "
            f"boundary=x\r\nContent-Length: {MAX_UPLOAD_BYTES + 1}\r\n\r\n",
        )
        assert b" 411 " in raw(url, f"POST {CHAT} HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\n\r\n")
        assert call(url, "POST", CHAT, chat_body())[0] == 200  # and the server is fine


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_large_upload_streamed_to_disk(runner, tmp_path):
    """A 64 MB upload, sent in 1 MB chunks, does not raise this process's peak memory by anything near its size
    (the server streams it to disk), and comes back byte for byte."""
    size_mb = 64
    with start_server(runner, files_dir=tmp_path / "files") as url:
        head, tail = multipart(b"", "user_data")[0].split(b"\r\n--bNd--")[0], b"\r\n--bNd--\r\n"
        total = len(head) + size_mb * (1 << 20) + len(tail)
        chunk = b"abcdefgh" * (1 << 17)
        before = _peak_rss_mb()
        with socket.create_connection(("127.0.0.1", port_of(url)), timeout=60) as s:
            s.sendall(
                f"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1:{port_of(url)}\r\nContent-Type: multipart/"
                f"form-data; boundary=bNd\r\nContent-Length: {total}\r\n\r\n".encode()
                + head
            )
            for _ in range(size_mb):
                s.sendall(chunk)
            s.sendall(tail)
            answer = http.client.HTTPResponse(s)
            answer.begin()
            meta = json.loads(answer.read())
        grown = _peak_rss_mb() - before
        assert answer.status == 200 and grown < size_mb / 2, (meta, grown)
        stored = tmp_path / "files" / meta["id"]
        assert meta["bytes"] == stored.stat().st_size == size_mb << 20
        with open(stored, "rb") as f:
            assert f.read(len(chunk)) == chunk
        assert not list((tmp_path / "files").glob(".*.tmp"))  # no temporary file left behind


# ---- 4. metadata ------------------------------------------------------------------------------------------------
def test_one_damaged_metadata_file_does_not_hide_the_others(runner, tmp_path):
    with start_server(runner, files_dir=tmp_path) as url:
        client = OpenAI(base_url=url, api_key="none", max_retries=0)
        good = client.files.create(file=("a.txt", b"a"), purpose="user_data")
        bad = client.files.create(file=("b.txt", b"b"), purpose="user_data")
        (tmp_path / f"{bad.id}.json").write_text('{"id": "file-')  # cut short
        assert [f.id for f in client.files.list()] == [good.id]
        status, body, _ = call(url, "GET", f"/v1/files/{bad.id}")
        assert status == 500 and body["error"]["code"] == "damaged_file"
        assert client.files.retrieve(good.id).filename == "a.txt"
        assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == sorted(
            [good.id, f"{good.id}.json", bad.id, f"{bad.id}.json"]
        )  # no .tmp left


# ---- 5. threads, parameters, JSON -------------------------------------------------------------------------------
def _serve_threads() -> int:
    return sum(t.name.startswith("serve-worker-") for t in threading.enumerate())


def test_idle_connections_hold_no_thread_and_threads_are_capped(runner):
    workers = _serve_threads()  # of servers of earlier tests, still ending
    with start_server(runner, max_threads=3) as url:
        before = threading.active_count()
        idle = [socket.create_connection(("127.0.0.1", port_of(url))) for _ in range(300)]
        try:
            time.sleep(1.0)
            assert threading.active_count() - before < 5
            assert call(url, "GET", "/v1/models")[0] == 200  # still answered at once
            results = []
            ts = [
                threading.Thread(target=lambda: results.append(call(url, "POST", CHAT, chat_body())[0]))
                for _ in range(8)
            ]
            for t in ts:
                t.start()
            for t in ts:
                t.join(60)
            assert results == [200] * 8 and _serve_threads() - workers <= 3
        finally:
            for s in idle:
                s.close()


@pytest.mark.parametrize(
    "field,value",
    [
        ("max_tokens", "abc"),
        ("max_tokens", 0),
        ("max_tokens", True),
        ("messages", "notalist"),
        ("messages", ["x"]),
        ("temperature", "hot"),
        ("temperature", 9),
        ("top_p", [1]),
        ("logprobs", "yes"),
        ("top_logprobs", -1),
        ("seed", 1.5),
    ],
)
def test_bad_parameters_are_400_naming_the_field(runner, field, value):
    with start_server(runner) as url:
        body = json.loads(chat_body())
        body[field] = value
        status, answer, _ = call(url, "POST", CHAT, json.dumps(body).encode())
        assert status == 400 and answer["error"]["param"].startswith(field) and field in answer["error"]["message"]
        assert "Error:" not in answer["error"]["message"]  # no internal exception text


def test_deep_json_and_u2028_lines(runner):
    with start_server(runner) as url:
        status, answer, _ = call(url, "POST", CHAT, b"[" * 100_000 + b"]" * 100_000)
        assert status == 400 and "nested too deeply" in answer["error"]["message"]
        line = {
            "custom_id": "a\u2028b",
            "method": "POST",
            "url": CHAT,
            "body": {"messages": [{"role": "user", "content": "x\u2028y\u0085z"}], "max_tokens": 2},
        }
        data = (json.dumps(line, ensure_ascii=False) + "\n").encode()
        client = OpenAI(base_url=url, api_key="none", max_retries=0)
        f = client.files.create(file=("u.jsonl", data), purpose="batch")
        b = client.batches.create(input_file_id=f.id, endpoint=CHAT, completion_window="24h")
        deadline = time.time() + 60
        while (b := client.batches.retrieve(b.id)).status not in ("completed", "failed"):
            assert time.time() < deadline
            time.sleep(0.05)
        assert b.status == "completed" and b.request_counts.completed == 1
        nested = json.dumps({"custom_id": "n", "method": "POST", "url": CHAT, "body": {}})[:-1] + ', "x": '
        with pytest.raises(ApiError, match="line 1: not valid JSON"):
            read_requests((nested + "[" * 100_000 + "]" * 100_000 + "}\n").encode())
    with pytest.raises(ApiError, match=f"line 2: longer than {MAX_LINE_BYTES}"):
        read_requests(data + b"x" * (MAX_LINE_BYTES + 10) + b"\n")


# ---- 7. dynamic batching, dropped work ---------------------------------------------------------------------------
PROMPTS = [
    "Rate this answer",
    "Give three tips for staying healthy.",
    "What is 2+2?",
    "Write a long, detailed and careful explanation of photosynthesis for a child",
    "hi",
    "Score: 7",
]


def test_concurrent_requests_run_in_one_batch_with_the_unbatched_answers(runner):
    with start_server(runner) as url:
        client = OpenAI(base_url=url, api_key="none", max_retries=0)

        def ask(text: str):
            return client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": text}], max_tokens=6, logprobs=True, top_logprobs=3
            )

        alone = [ask(p) for p in PROMPTS]
        batches_before = runner.stats.batches
        received = runner.stats.received
        together: dict[int, object] = {}
        with runner.lock:  # the model is busy: the six requests queue up, then run as one batch
            ts = [
                threading.Thread(target=lambda i=i: together.__setitem__(i, ask(PROMPTS[i])))
                for i in range(len(PROMPTS))
            ]
            for t in ts:
                t.start()
            while runner.stats.received < received + len(PROMPTS):
                time.sleep(0.01)
        for t in ts:
            t.join(60)
        assert runner.stats.batches == batches_before + 1 and runner.stats.largest >= len(PROMPTS)
        for i, a in enumerate(alone):
            b = together[i]
            assert b.choices[0].message.content == a.choices[0].message.content
            assert b.choices[0].finish_reason == a.choices[0].finish_reason
            assert b.usage.prompt_tokens == a.usage.prompt_tokens
            assert b.usage.completion_tokens == a.usage.completion_tokens
            for x, y in zip(a.choices[0].logprobs.content, b.choices[0].logprobs.content):
                assert x.token == y.token and x.logprob == pytest.approx(y.logprob, abs=1e-4)


def test_queued_request_of_a_departed_client_is_not_computed(runner):
    with start_server(runner) as url:
        port = port_of(url)
        body = chat_body("this client leaves")
        computed, dropped, received = runner.stats.computed, runner.stats.dropped, runner.stats.received
        with runner.lock:
            gone = socket.create_connection(("127.0.0.1", port))
            gone.sendall(
                f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            while runner.stats.received < received + 1:
                time.sleep(0.01)
            gone.close()  # the client gives up while its request waits
            stays: list = []
            t = threading.Thread(target=lambda: stays.append(call(url, "POST", CHAT, chat_body("this one stays"))))
            t.start()
            while runner.stats.received < received + 2:
                time.sleep(0.01)
        t.join(60)
        assert stays[0][0] == 200
        assert runner.stats.computed == computed + 1 and runner.stats.dropped == dropped + 1
        health = call(url, "GET", "/health")[1]
        assert health["dropped"] == runner.stats.dropped and health["queued"] == 0 and health["batch_cap"] >= 1


# ---- 6. restart and SIGTERM -------------------------------------------------------------------------------------
def test_batch_resumes_after_a_restart_on_the_same_folder(runner, tmp_path):
    lines = "".join(
        json.dumps({"custom_id": f"r{i}", "method": "POST", "url": CHAT, "body": json.loads(chat_body(f"row {i}"))})
        + "\n"
        for i in range(6)
    ).encode()
    with start_server(runner, files_dir=tmp_path, faults=BatchFaults(delay=0.3)) as url:
        client = OpenAI(base_url=url, api_key="none", max_retries=0)
        f = client.files.create(file=("in.jsonl", lines), purpose="batch")
        bid = client.batches.create(input_file_id=f.id, endpoint=CHAT, completion_window="24h").id
        while client.batches.retrieve(bid).request_counts.completed < 2:
            time.sleep(0.05)
    while any(t.name == bid for t in threading.enumerate()):  # the old server's batch thread has stopped
        time.sleep(0.05)
    saved = json.loads((tmp_path / "batches" / f"{bid}.json").read_text())["batch"]
    done_before = len((tmp_path / "batches" / f"{bid}.output.partial").read_text().splitlines())
    assert saved["status"] == "in_progress" and 2 <= done_before < 6
    (tmp_path / "batches" / "batch_damaged.json").write_text("{")  # skipped, not fatal
    computed = runner.stats.computed
    with start_server(runner, files_dir=tmp_path) as url:
        client = OpenAI(base_url=url, api_key="none", max_retries=0)
        deadline = time.time() + 60
        while (b := client.batches.retrieve(bid)).status != "completed":
            assert time.time() < deadline and b.status in ("in_progress", "finalizing"), b.status
            time.sleep(0.1)
        out = [json.loads(x) for x in client.files.content(b.output_file_id).text.splitlines()]
        assert [x["custom_id"] for x in out] == [f"r{i}" for i in range(6)]
        assert b.request_counts.completed == 6 and b.usage.input_tokens > 0
        assert runner.stats.computed - computed == 6 - done_before  # the answered ones were not run again
        assert [x.id for x in client.batches.list()] == [bid]


@pytest.mark.slow
def test_sigterm_removes_the_temporary_folder_and_the_env_key_is_read(tiny_model, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**ENV, "TMPDIR": str(tmp_path), "ALPAGASUS_SERVE_API_KEY": "from-env"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "alpagasus.cli", "serve", "--model", str(tiny_model), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 120
        while True:
            try:
                status = call(url, "GET", "/v1/models")[0]
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline
                time.sleep(0.2)
        assert status == 401
        client = OpenAI(base_url=url, api_key="from-env", max_retries=0)
        client.files.create(file=("a.txt", b"a"), purpose="user_data")
        folders = list(tmp_path.glob("alpagasus-files-*"))
        assert len(folders) == 1 and len(list(folders[0].glob("file-*"))) == 2
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and not folders[0].exists(), out
    assert "from-env" not in out and "API key required" in out


def test_a_row_whose_client_left_stops_generating(runner):
    """The stopping criterion asks each row's client every few tokens: a departed one is cut short (None), the
    others run to their end; when every client has left the generation ends at once."""
    from alpagasus.serve import parse_chat

    p = parse_chat({"messages": [{"role": "user", "content": "Write a story"}], "max_tokens": 40})
    kept, cut = runner.generate_batch([p, p], [None, lambda: False])
    assert cut is None and kept["usage"]["completion_tokens"] >= 1
    assert runner.generate_batch([p], [None])[0]["choices"][0]["message"] == kept["choices"][0]["message"]
    assert runner.generate_batch([p], [lambda: False]) == [None]


def test_batch_size_halves_when_clients_leave_and_grows_back(tiny_model):
    r = ModelRunner(str(tiny_model), max_batch=8)
    r.note_batch(8, cut=3)
    assert r.batch_cap == 4
    r.note_batch(4, cut=4)
    r.note_batch(2, cut=1)
    assert r.batch_cap == 1
    r.note_batch(1, cut=1)
    assert r.batch_cap == 1
    r.note_batch(1, cut=0)
    r.note_batch(1, cut=0)  # a batch smaller than the cap (no more requests queued): no growth
    assert r.batch_cap == 2
    for _ in range(10):
        r.note_batch(r.batch_cap, cut=0)
    assert r.batch_cap == 8
