"""`alpagasus serve`'s Files and Batches endpoints, driven by the real `openai` client against a real server on
127.0.0.1 over the tiny model: uploads, a batch's statuses and files, list paging, cancel, and each fault."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from openai import BadRequestError, NotFoundError, OpenAI

from alpagasus.serve import BatchFaults, ModelRunner, start_server

CHAT = "/v1/chat/completions"
TERMINAL = ("completed", "failed", "expired", "cancelled")


@pytest.fixture(scope="module")
def runner(tiny_model):
    """One loaded model shared by every server of this module (each test starts its own, with its faults)."""
    return ModelRunner(str(tiny_model), name="tiny")


def client_for(url: str) -> OpenAI:
    return OpenAI(base_url=url, api_key="none", max_retries=0)


def requests_jsonl(n: int, **extra) -> bytes:
    lines = [
        {
            "custom_id": f"row-{i}",
            "method": "POST",
            "url": CHAT,
            "body": {"model": "tiny", "max_tokens": 2, "messages": [{"role": "user", "content": f"Rate {i}"}], **extra},
        }
        for i in range(n)
    ]
    return "".join(json.dumps(x) + "\n" for x in lines).encode()


def submit(client: OpenAI, data: bytes, **kw):
    f = client.files.create(file=("in.jsonl", data), purpose="batch")
    return client.batches.create(input_file_id=f.id, endpoint=CHAT, completion_window="24h", **kw)


def wait(client: OpenAI, batch_id: str, until=TERMINAL, timeout: float = 60.0):
    """Poll like a client does; returns the batch and every status seen on the way."""
    seen, deadline = [], time.time() + timeout
    while True:
        b = client.batches.retrieve(batch_id)
        if not seen or seen[-1] != b.status:
            seen.append(b.status)
        if b.status in until:
            return b, seen
        assert time.time() < deadline, f"batch still {b.status} after {timeout}s"
        time.sleep(0.05)


def lines(client: OpenAI, file_id: str | None) -> list[dict]:
    return [] if file_id is None else [json.loads(x) for x in client.files.content(file_id).text.splitlines()]


def test_files_upload_retrieve_content_and_bad_input(runner):
    with start_server(runner) as url:
        client = client_for(url)
        data = requests_jsonl(2)
        f = client.files.create(file=("in.jsonl", data), purpose="batch")
        assert f.purpose == "batch" and f.bytes == len(data) and f.filename == "in.jsonl"
        assert client.files.retrieve(f.id).id == f.id
        assert client.files.content(f.id).content == data
        bad = data + b'{"custom_id": "row-9", "method": "POST", "url": "/v1/embeddings", "body": {}}\n'
        with pytest.raises(BadRequestError, match="line 3: field 'url'") as e:
            client.files.create(file=("bad.jsonl", bad), purpose="batch")
        assert e.value.body["param"] == "url"  # the OpenAI error shape: message, type, param, code
        with pytest.raises(BadRequestError, match="line 2: custom_id 'row-0' is used twice"):
            client.files.create(file=("dup.jsonl", data.splitlines(True)[0] * 2), purpose="batch")
        with pytest.raises(BadRequestError, match="line 1: not valid JSON"):
            client.files.create(file=("x.jsonl", b"{nope\n"), purpose="batch")
        with pytest.raises(NotFoundError):
            client.files.retrieve("file-missing")
        with pytest.raises(BadRequestError, match="completion_window"):
            client.batches.create(input_file_id=f.id, endpoint=CHAT, completion_window="1h")
        with pytest.raises(NotFoundError):
            client.batches.create(input_file_id="file-missing", endpoint=CHAT, completion_window="24h")


def test_batch_runs_to_completed_with_output_and_error_files(runner):
    with start_server(runner) as url:
        client = client_for(url)
        data = requests_jsonl(3, logprobs=True, top_logprobs=3)
        no_messages = {"custom_id": "row-bad", "method": "POST", "url": CHAT, "body": {"model": "tiny"}}
        b = submit(client, data + (json.dumps(no_messages) + "\n").encode(), metadata={"run": "t1"})
        assert b.status == "validating" and b.metadata == {"run": "t1"} and b.expires_at == b.created_at + 86400
        done, seen = wait(client, b.id)
        assert seen[-1] == "completed" and set(seen) <= {"validating", "in_progress", "finalizing", "completed"}
        assert done.request_counts.model_dump() == {"total": 4, "completed": 3, "failed": 1}
        assert done.in_progress_at and done.finalizing_at and done.completed_at and done.metadata == {"run": "t1"}
        assert done.usage.input_tokens > 0 and done.usage.output_tokens > 0
        out, err = lines(client, done.output_file_id), lines(client, done.error_file_id)
        assert [x["custom_id"] for x in out] == ["row-0", "row-1", "row-2"]
        assert all(
            x["error"] is None and x["response"]["status_code"] == 200 and x["id"].startswith("batch_req_") for x in out
        )
        # each line is what /v1/chat/completions answers to the same request (greedy), logprobs included
        direct = client.chat.completions.create(**json.loads(data.splitlines()[0])["body"])
        body = out[0]["response"]["body"]
        assert body["choices"][0]["message"] == direct.choices[0].message.model_dump(exclude_none=True)
        assert len(body["choices"][0]["logprobs"]["content"][0]["top_logprobs"]) == 3
        assert [(x["custom_id"], x["response"]["status_code"]) for x in err] == [("row-bad", 400)]
        assert "messages is required" in err[0]["response"]["body"]["error"]["message"]
        assert client.files.retrieve(done.output_file_id).purpose == "batch_output"


def test_list_pages_newest_first(runner):
    with start_server(runner) as url:
        client = client_for(url)
        ids = [submit(client, requests_jsonl(1)).id for _ in range(5)]
        first = client.batches.list(limit=2)
        assert [b.id for b in first.data] == ids[:-3:-1] and first.has_more
        assert [b.id for b in client.batches.list(limit=2, after=ids[3]).data] == [ids[2], ids[1]]
        assert [b.id for b in client.batches.list(limit=2)] == ids[::-1]  # the client pages through all
        with pytest.raises(BadRequestError):
            client.batches.list(limit=0)
        for i in ids:
            wait(client, i)


def test_cancel_keeps_finished_lines(runner):
    with start_server(runner, faults=BatchFaults(delay=0.3)) as url:
        client = client_for(url)
        b = submit(client, requests_jsonl(8))
        wait(client, b.id, until=("in_progress",))
        while client.batches.retrieve(b.id).request_counts.completed < 2:
            time.sleep(0.05)
        assert client.batches.cancel(b.id).status in ("cancelling", "cancelled")
        done, _ = wait(client, b.id)
        assert done.status == "cancelled" and done.cancelling_at and done.cancelled_at
        out = lines(client, done.output_file_id)
        assert 2 <= len(out) == done.request_counts.completed < 8 and done.error_file_id is None
        assert [x["custom_id"] for x in out] == [f"row-{i}" for i in range(len(out))]
        with pytest.raises(BadRequestError, match="Cannot cancel"):
            client.batches.cancel(submit_and_wait(client).id)


def submit_and_wait(client: OpenAI):
    return wait(client, submit(client, requests_jsonl(1)).id)[0]


def test_fault_expire_after_n_requests(runner):
    with start_server(runner, faults=BatchFaults(expire_after=2, batches=1)) as url:
        client = client_for(url)
        done, _ = wait(client, submit(client, requests_jsonl(5)).id)
        assert done.status == "expired" and done.expired_at and done.request_counts.completed == 2
        assert [x["custom_id"] for x in lines(client, done.output_file_id)] == ["row-0", "row-1"]
        err = lines(client, done.error_file_id)
        assert [x["custom_id"] for x in err] == ["row-2", "row-3", "row-4"]
        assert all(x["response"] is None and x["error"]["code"] == "batch_expired" for x in err)
        assert submit_and_wait(client).status == "completed"  # the fault was for the first batch only


def test_fault_fail_every_kth_request(runner):
    with start_server(runner, faults=BatchFaults(fail_every=2)) as url:
        client = client_for(url)
        done, _ = wait(client, submit(client, requests_jsonl(5)).id)
        assert done.status == "completed" and done.request_counts.model_dump() == {
            "total": 5,
            "completed": 3,
            "failed": 2,
        }
        err = lines(client, done.error_file_id)
        assert [(x["custom_id"], x["response"]["status_code"]) for x in err] == [("row-1", 500), ("row-3", 500)]
        assert err[0]["response"]["body"]["error"]["type"] == "server_error"
        assert [x["custom_id"] for x in lines(client, done.output_file_id)] == ["row-0", "row-2", "row-4"]


def test_fault_and_real_validation_failures(runner):
    with start_server(runner, faults=BatchFaults(fail_validation=True, batches=1)) as url:
        client = client_for(url)
        done, _ = wait(client, submit(client, requests_jsonl(2)).id)
        assert done.status == "failed" and done.failed_at and done.errors.data[0].message
        assert done.output_file_id is None and done.error_file_id is None
        # a file not checked on upload (purpose user_data) fails the batch's own validation, naming the line
        f = client.files.create(file=("u.jsonl", requests_jsonl(1) + b'{"custom_id": "x"}\n'), purpose="user_data")
        b = client.batches.create(input_file_id=f.id, endpoint=CHAT, completion_window="24h")
        done, _ = wait(client, b.id)
        assert done.status == "failed" and done.errors.data[0].line == 2 and "method" in done.errors.data[0].message


def test_fault_vanish(runner):
    with start_server(runner, faults=BatchFaults(vanish=True, batches=1)) as url:
        client = client_for(url)
        gone = submit(client, requests_jsonl(2))
        assert gone.status == "validating"
        with pytest.raises(NotFoundError):
            client.batches.retrieve(gone.id)
        with pytest.raises(NotFoundError):
            client.batches.cancel(gone.id)
        kept = submit_and_wait(client)
        assert [b.id for b in client.batches.list()] == [kept.id] and kept.status == "completed"


@pytest.mark.slow
def test_command_flags_and_files_dir(tiny_model, tmp_path):
    """The faults as flags of `alpagasus serve`, files kept in --files-dir (a real process)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "alpagasus.cli",
            "serve",
            "--model",
            str(tiny_model),
            "--port",
            str(port),
            "--files-dir",
            str(tmp_path / "files"),
            "--fault-fail-every",
            "1",
            "--fault-delay",
            "0.01",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        text=True,
    )
    try:
        url, deadline = f"http://127.0.0.1:{port}/v1", time.time() + 120
        while True:
            try:
                urllib.request.urlopen(url + "/models", timeout=1)
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
                time.sleep(0.2)
        client = client_for(url)
        done, _ = wait(client, submit(client, requests_jsonl(2)).id)
        assert done.request_counts.failed == 2 and done.output_file_id is None
        on_disk = (tmp_path / "files" / done.error_file_id).read_bytes()
        assert on_disk == client.files.content(done.error_file_id).content
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert "batch faults: BatchFaults(" in out and "fail_every=1" in out
