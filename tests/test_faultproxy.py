"""The fault proxy itself (alpagasus.devtools.faultproxy), with its own canned replies (no model behind it):
each fault as a plain HTTP client sees it, the rule conditions, going down and up, the log, the command."""

from __future__ import annotations

import http.client
import json
import random
import signal
import socket
import subprocess
import sys
import time

import pytest

from alpagasus.devtools.faultproxy import FaultProxy, Lognormal, Rule, parse_rule, request_key


def post(proxy: FaultProxy, text: str = "hello", timeout: float = 5, **body) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=timeout)
    payload = {"model": "m", "messages": [{"role": "user", "content": text}], **body}
    conn.request("POST", "/v1/chat/completions", json.dumps(payload), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    out = resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    conn.close()
    return out


def content(body: bytes) -> str:
    return json.loads(body)["choices"][0]["message"]["content"]


def test_rules_by_index_match_and_times_and_the_log():
    rules = [
        Rule("503", requests=range(0, 2), retry_after=1.5),
        Rule("500", match="boom", times=1),
        Rule("content", match="fuzz", content="Score: 5"),
        Rule("length", match="cut", content="4 and"),
    ]
    with FaultProxy(None, rules, canned="3\nfine") as p:
        status, headers, _ = post(p)
        assert status == 503 and headers["retry-after"] == "1.5" and headers["retry-after-ms"] == "1500"
        assert post(p)[0] == 503
        assert content(post(p)[2]) == "3\nfine"
        assert post(p, "boom")[0] == 500 and post(p, "boom")[0] == 200  # times=1
        assert content(post(p, "fuzz")[2]) == "Score: 5"
        choice = json.loads(post(p, "cut")[2])["choices"][0]
        assert (choice["message"]["content"], choice["finish_reason"]) == ("4 and", "length")
        time.sleep(0.1)  # the proxy's thread notes `done` just after the client has its last byte
        ev = p.events
        assert [e.status for e in ev] == [503, 503, 200, 500, 200, 200, 200] and p.completed == p.received == 7
        assert all(e.received <= e.sent <= e.done for e in ev)
        key = request_key({"messages": [{"role": "user", "content": "hello"}]})
        assert [e.index for e in p.by_key()[key]] == [0, 1, 2]  # one item across its retries


def test_seeded_rates_and_time_windows():
    def faults(seed):
        with FaultProxy(None, [Rule("429", rate=0.3)], seed=seed) as p:
            return [post(p, str(i))[0] for i in range(40)]

    a = faults(3)
    assert a == faults(3) and 4 <= a.count(429) <= 20
    with FaultProxy(None, [Rule("502", window=(0.0, 0.6))]) as p:
        assert post(p)[0] == 502
        time.sleep(0.7)
        assert post(p)[0] == 200


def test_hang_drop_garbage_and_logprob_rewrite():
    with FaultProxy(
        None,
        [
            Rule("hang", match="hang", hang_s=5),
            Rule("drop", match="drop"),
            Rule("garbage", match="garbage"),
            Rule("content", match="lp", content="4\nok"),
        ],
    ) as p:
        with pytest.raises(socket.timeout):
            post(p, "hang", timeout=0.5)
        with pytest.raises(http.client.IncompleteRead):
            post(p, "drop")
        status, _, body = post(p, "garbage")
        assert status == 200
        with pytest.raises(ValueError):
            json.loads(body)
        lp = json.loads(post(p, "lp", logprobs=True, top_logprobs=5)[2])["choices"][0]["logprobs"]["content"][0]
        assert lp["token"] == "4" and lp["top_logprobs"][0] == {"token": "4", "logprob": 0.0, "bytes": None}
        time.sleep(0.1)
        assert [e.done is None for e in p.events] == [True, True, False, False]


def test_down_and_up_by_call_and_by_schedule():
    with FaultProxy(None) as p:
        assert post(p)[0] == 200
        p.down()
        with pytest.raises(ConnectionRefusedError):
            post(p)
        p.up()
        assert post(p)[0] == 200
        p.outages = [(0.3, 0.9)]
        p.reset()
        time.sleep(0.5)
        with pytest.raises(ConnectionRefusedError):
            post(p)
        time.sleep(0.6)
        assert post(p)[0] == 200 and p.received == 1  # reset() forgot the earlier log


def test_lognormal_latency_has_the_median_and_a_heavy_tail():
    rng = random.Random(0)
    lat = Lognormal(median=1.0, sigma=1.0)
    xs = sorted(lat.sample(rng) for _ in range(4000))
    assert 0.9 < xs[2000] < 1.1 and xs[int(0.99 * 4000)] > 6  # p99 about 10x the median
    assert parse_rule("429:0.3@5-70#2-4", retry_after=2) == Rule(
        "429", rate=0.3, window=(5.0, 70.0), requests=range(2, 5), retry_after=2
    )


def test_command_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "events.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "alpagasus.devtools.faultproxy",
            "--upstream",
            "none",
            "--port",
            str(port),
            "--fault",
            "429#0-0",
            "--retry-after",
            "2",
            "--log",
            str(log),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert "fault proxy on" in proc.stdout.readline()
    p = FaultProxy(None, port=port)  # only to reuse `post`
    assert post(p)[0] == 429 and post(p)[0] == 200
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=20)
    assert json.loads(out.strip().splitlines()[-1])["received"] == 2
    assert [json.loads(line)["status"] for line in log.read_text().splitlines()] == [429, 200]
