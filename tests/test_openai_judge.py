"""The openai: judge against a real OpenAI-compatible HTTP server on 127.0.0.1 (`alpagasus serve`)."""

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from alpagasus import judges
from alpagasus.engine import RunOptions
from alpagasus.prompts import load_template
from alpagasus.rate.loop import rate
from alpagasus.records import Example
from alpagasus.store import Store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_model):
    port = free_port()
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
            "--name",
            "tiny-served",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/models", timeout=1)
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"alpagasus serve exited with {proc.returncode}") from None
            time.sleep(0.3)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def examples(alpaca_rows):
    return [Example.alpaca(r["instruction"], r["input"], r["output"]) for r in alpaca_rows[:6] if r["output"].strip()]


@pytest.mark.slow
def test_generate_mode_through_http(server, examples, tmp_path):
    j = judges.get("openai:tiny-served", base_url=server, concurrency=3)
    assert j.mode == "generate"  # API judges default to the paper's way
    t = load_template("accuracy")
    with Store(tmp_path / "s.sqlite") as st:
        s = rate(examples, j, t, st)
        got = st.get_many([e.id for e in examples], j.id, t.version)
        assert s.run.ok + s.run.unparsed == len(examples) and s.run.error == 0
        assert s.run.tokens_in > 0 and s.run.tokens_out > 0
        for r in got.values():
            assert r.model == "tiny-served"  # the name the server reports is recorded
            assert r.raw is not None and (r.score is None) == (r.status == "unparsed")
        again = rate(examples, judges.get("openai:tiny-served", base_url=server), t, st)
        assert again.run.requests_sent == 0 and again.already_rated == len(examples)


@pytest.mark.slow
def test_logprob_mode_reads_top_logprobs(server, examples, tmp_path):
    j = judges.get("openai:tiny-served", base_url=server, mode="logprob", top_logprobs=800)
    t = load_template("accuracy")
    with Store(tmp_path / "s.sqlite") as st:
        # no label-mass floor: the random model holds little probability on the digits (tests/test_batch.py)
        s = rate(examples, j, t, st, RunOptions(min_label_mass=0.0))
        got = st.get_many([e.id for e in examples], j.id, t.version)
    # with the whole vocabulary in top_logprobs, every label has a probability
    assert s.run.ok == len(examples)
    for r in got.values():
        assert abs(sum(r.probs.values()) - 1) < 1e-6 and 0 <= r.score <= 5 and r.tokens_out == 1


def test_server_speaks_the_openai_protocol(server):
    from openai import OpenAI

    client = OpenAI(base_url=server, api_key="x")
    resp = client.chat.completions.create(
        model="tiny-served",
        max_tokens=3,
        logprobs=True,
        top_logprobs=2,
        messages=[{"role": "user", "content": "Say 4"}],
    )
    assert resp.model == "tiny-served" and resp.usage.completion_tokens <= 3
    assert len(resp.choices[0].logprobs.content[0].top_logprobs) == 2
    with pytest.raises(Exception, match="messages is required"):
        client.chat.completions.create(model="tiny-served", messages=[])


@pytest.mark.slow
def test_unreachable_server_pauses_then_stops_resumably(examples, tmp_path):
    from alpagasus.engine import RunOptions
    from alpagasus.judges.base import OutageError

    j = judges.get("openai:x", base_url=f"http://127.0.0.1:{free_port()}/v1", timeout=2)
    t = load_template("accuracy")
    with Store(tmp_path / "s.sqlite") as st:
        t0 = time.time()
        with pytest.raises(OutageError, match="unreachable.*run the same command again"):
            rate(examples[:2], j, t, st, RunOptions(max_outage_s=3, backoff_s=0.01))
        assert 3 <= time.time() - t0 < 30
        assert st.count() == 0  # connection refused is an outage, not a failed item
