"""The benchmark harness (bench/harness.py): the instant-reply server as the real `openai` client and our
`openai:` judge see it, the process helpers, and small end-to-end runs of the bench scripts."""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import harness  # noqa: E402
from batch5_baseline import messages_for, run_baseline  # noqa: E402

from alpagasus import judges  # noqa: E402
from alpagasus.prompts import load_template  # noqa: E402
from alpagasus.prompts.parse import parse_score  # noqa: E402
from alpagasus.rate.loop import build_request  # noqa: E402
from alpagasus.records import Example  # noqa: E402


@pytest.fixture(scope="module")
def server():
    with harness.InstantServer() as s:
        yield s


def get(server, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
    conn.request("GET", path)
    resp = conn.getresponse()
    return resp.status, resp.read()


def test_the_openai_client_reads_logprobs_and_replies(server):
    from openai import OpenAI

    client = OpenAI(base_url=server.url, api_key="x", max_retries=0)
    msgs = [{"role": "system", "content": "judge"}, {"role": "user", "content": "Rate: 2+2=4"}]
    digit, probs = harness.instant_score("judge\nRate: 2+2=4")
    r = client.chat.completions.create(model="m", messages=msgs, max_tokens=1, logprobs=True, top_logprobs=20)
    top = r.choices[0].logprobs.content[0].top_logprobs
    assert r.choices[0].logprobs.content[0].token == str(digit) == top[0].token
    assert {t.token for t in top} == set("012345") and all(
        math.isclose(math.exp(t.logprob), probs[t.token]) for t in top
    )
    assert (
        len(
            client.chat.completions.create(model="m", messages=msgs, max_tokens=1, logprobs=True, top_logprobs=2)
            .choices[0]
            .logprobs.content[0]
            .top_logprobs
        )
        == 2
    )
    r = client.chat.completions.create(model="m", messages=msgs)
    text = r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop" and text.startswith(f"{digit}\n") and len(text.split()) > 10
    assert parse_score(text).score == digit
    short = client.chat.completions.create(model="m", messages=msgs, max_tokens=3)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3
    assert client.models.list().data[0].id == "instant"
    # deterministic: the same messages get the same answer; other messages spread over the scale
    assert client.chat.completions.create(model="m", messages=msgs).choices[0].message.content == text
    assert len({harness.instant_score(f"row {i}")[0] for i in range(200)}) == 6


def test_keep_alive_and_bad_requests(server):
    before = json.loads(get(server, "/v1/stats")[1])
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
    for i in range(20):  # one connection, twenty requests
        conn.request(
            "POST",
            "/v1/chat/completions",
            json.dumps({"messages": [{"role": "user", "content": str(i)}]}),
            {"Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("connection") == "keep-alive"
        resp.read()
    conn.request("POST", "/v1/chat/completions", b"{not json", {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 400 and b"bad request body" in resp.read()
    conn.close()
    after = json.loads(get(server, "/v1/stats")[1])
    assert after["served"] - before["served"] == 20
    assert after["connections"] - before["connections"] == 2  # this connection and the first stats request's
    assert get(server, "/v1/nothing")[0] == 404


def test_our_openai_judge_in_both_modes(server):
    template = load_template("accuracy")
    ex = Example.alpaca(instruction="Name a primary colour.", input="", output="Blue.")
    for mode in ("logprob", "generate"):
        j = judges.get("openai:instant", mode=mode, base_url=server.url)
        req = build_request(ex, template, mode)
        rep = asyncio.run(j.score([req]))[0]
        digit, probs = harness.instant_score(req.system + "\n" + req.user)
        if mode == "logprob":
            assert rep.error is None and math.isclose(
                rep.score, sum(int(k) * p for k, p in probs.items()) / sum(probs.values())
            )
            assert rep.extra["argmax"] == str(digit)
        else:
            assert parse_score(rep.text).score == digit


def test_rate_file_against_the_instant_server_spreads_scores(server, tmp_path):
    from alpagasus.rate.files import rate_file

    rows = harness.alpaca_rows(150)
    src = tmp_path / "rows.json"
    src.write_text(json.dumps(rows))
    s = rate_file(
        src,
        tmp_path / "out.jsonl",
        judge="openai:instant",
        mode="logprob",
        judge_options={"base_url": server.url, "concurrency": 32},
        store_path=tmp_path / "s.sqlite",
    )
    assert s.run.ok == 150
    scores = [json.loads(line)["score"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len({round(x) for x in scores}) >= 4 and 3.0 < sum(scores) / len(scores) < 4.5
    base = run_baseline(rows[:10], server.url)  # the official scheme, same server: the same digits
    expected = [
        float(harness.instant_score("\n".join(m["content"] for m in msgs))[0]) for msgs in messages_for(rows[:10])
    ]
    assert base["parsed"] == 10 and base["scores"] == expected


def test_latency_proxy_process_and_run_measured():
    with (
        harness.instant_server_process() as (url, proc),
        harness.latency_proxy_process(url, median=0.2, sigma=0.1) as (purl, _),
    ):
        assert proc.poll() is None and purl != url
        from openai import OpenAI

        client = OpenAI(base_url=purl, api_key="x", max_retries=0)
        t = time.perf_counter()
        r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert 0.1 < time.perf_counter() - t < 2 and r.choices[0].message.content[0].isdigit()
        assert harness.process_peak_rss_mb(proc.pid) > 5
    assert proc.poll() is not None  # stopped on exit
    out = harness.run_measured(
        [sys.executable, "-c", "b = b'x' * (150 * 2**20); print('ok')"]
    )  # touched pages: resident
    # at least the child's own 150 MB (Linux may add the parent's size at the spawn: an upper bound)
    assert out["rc"] == 0 and out["stdout"].strip() == "ok" and out["peak_rss_mb"] > 150


@pytest.mark.slow
def test_alpagasus_serve_process(tiny_model):
    with harness.alpagasus_serve_process(str(tiny_model)) as (url, _):
        from openai import OpenAI

        r = OpenAI(base_url=url, api_key="x", max_retries=0).chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        assert r.choices[0].message.content is not None


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_concurrency_script_smoke(tmp_path):
    png = tmp_path / "c.png"
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "concurrency.py"),
            "--rows",
            "64",
            "--baseline-rows",
            "10",
            "--levels",
            "1",
            "16",
            "--per-level",
            "2",
            "--median",
            "0.05",
            "--sigma",
            "0.5",
            "--plot",
            str(png),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    res = last_json(out.stdout)
    assert set(res["curve"]) == {"1", "16"} and res["batch5_per_s"] > 0 and res["ratio"] > 1
    assert res["curve"]["16"] > res["curve"]["1"] and png.stat().st_size > 10_000


@pytest.mark.slow
def test_overhead_script_smoke(tiny_model):
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "overhead.py"),
            "--rows",
            "32",
            "--passes",
            "1",
            "--judge",
            f"hf:{tiny_model}",
            "--batch-size",
            "8",
            "--instant-rows",
            "200",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    res = last_json(out.stdout)
    assert res["embedded"]["max_score_diff"] < 1e-4 and res["embedded"]["rows"] == 32
    assert isinstance(res["overhead_fraction"], float) and res["instant"]["tool_ms_per_row"] > 0
