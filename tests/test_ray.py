"""Rating on a local Ray cluster (2 CPUs): every row rated once, resume sends nothing, a killed worker loses only
its block in flight, Ctrl-C stops with what was stored kept.

Judges: the tiny local model (`hf:`, loaded once per Ray actor), and `openai:` against the fault proxy answering
by itself (no upstream) with a modelled latency, which counts every request the workers really send.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import ray

from alpagasus import judges
from alpagasus.data import read_examples
from alpagasus.devtools.faultproxy import FaultProxy, Lognormal
from alpagasus.engine import RunOptions
from alpagasus.prompts import load_template
from alpagasus.rate import RateSummary
from alpagasus.rate.loop import rate
from alpagasus.rate.ray import RayRateError, rate_on_ray
from alpagasus.store import Store

pytestmark = pytest.mark.slow  # a local Ray cluster per module, workers killed and resumed

ROWS = 300
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster with 2 CPUs, shared by the tests of this file (each start costs seconds)."""
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": ENV}, logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def examples():
    ex = read_examples("sample:alpaca").examples
    assert len(ex) == ROWS
    return ex


@pytest.fixture
def proxy():
    """An instant OpenAI-compatible server (the proxy's own canned reply, score 4) with ~0.15 s latency."""
    with FaultProxy(None, latency=Lognormal(median=0.15, sigma=0.2)) as p:
        yield p


def on_ray(examples, spec: str, store: Store, *, options: dict | None = None, judge=None, **kw) -> RateSummary:
    options = options or {}
    judge = judge or judges.get(spec, **options)
    return rate_on_ray(
        (e for e in examples),
        judge=judge,
        judge_spec=spec,
        judge_options=options,
        template=load_template("accuracy"),
        store=store,
        options=RunOptions(),
        **kw,
    )


def stored(path: Path) -> list[tuple]:
    """(item_id, status) of every row, read with a plain sqlite3 connection (primary key or not)."""
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(path)) as db:
        try:
            return list(db.execute("SELECT item_id, status FROM replies"))
        except sqlite3.OperationalError:  # the store's file exists, its tables not yet
            return []


def map_workers() -> list[int]:
    """Pids of this test's Ray Data map actors (descendants of this process named after rate.workers.BlockRater)."""
    out = []
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "BlockRater" in " ".join(p.cmdline()):
                out.append(p.pid)
    return out


def wait_for(cond, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_ray_is_not_imported_with_alpagasus():
    code = "import sys, alpagasus, alpagasus.rate.ray, alpagasus.cli; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr[-2000:]


def test_missing_ray_is_a_clear_error(monkeypatch, examples, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where the extra is not installed
    with Store(tmp_path / "s.sqlite") as st, pytest.raises(RayRateError, match=r"pip install 'alpagasus\[ray\]'"):
        on_ray(examples[:5], "openai:canned", st, options={"base_url": "http://127.0.0.1:9/v1"})


def test_every_row_rated_once_like_one_machine_and_resume_starts_nothing(cluster, tiny_model, examples, tmp_path):
    spec = f"hf:{tiny_model}"
    path = tmp_path / "store.sqlite"
    with Store(path) as st:
        t = time.perf_counter()
        s = on_ray(examples, spec, st, block_rows=64)
        took = time.perf_counter() - t
        assert (s.run.to_judge, s.run.ok, s.run.requests_sent, s.already_rated) == (ROWS, ROWS, ROWS, 0)
        rows = stored(path)
        assert len(rows) == ROWS and {i for i, _ in rows} == {e.id for e in examples}
        assert {st for _, st in rows} == {"ok"}

        # the same scores as the single-machine path. Blocks batch other rows together, and the tiny model's digits
        # hold ~1% of the probability (renormalised), so float noise shows: measured 1e-7 to 4e-5, once > 1e-4.
        judge = judges.get(spec)
        with Store(tmp_path / "one.sqlite") as one:
            rate(examples[:24], judge, load_template("accuracy"), one)
            ours = st.get_many([e.id for e in examples[:24]], judge.id, load_template("accuracy").version)
            theirs = one.get_many([e.id for e in examples[:24]], judge.id, load_template("accuracy").version)
        assert len(ours) == len(theirs) == 24
        gap = max(abs(ours[k].score - theirs[k].score) for k in ours)
        assert gap < 2e-3, gap
        print(
            f"\nFIGURES ray_local: {json.dumps({'rows': ROWS, 'seconds': round(took, 1), 'rows_per_s': round(ROWS / took, 1), 'max_score_gap': gap})}"
        )

        # resume: nothing pending, so no worker may start: a spec no worker could load proves none did
        t = time.perf_counter()
        s2 = on_ray(examples, "hf:/no/such/model", st, judge=judges.get(spec))
        assert (s2.run.to_judge, s2.already_rated, s2.run.requests_sent, s2.run.ok) == (0, ROWS, 0, 0)
        assert time.perf_counter() - t < 5
        assert len(stored(path)) == ROWS


def test_killed_worker_loses_only_its_block_and_every_row_is_rated_once(cluster, examples, proxy, tmp_path):
    path, block = tmp_path / "store.sqlite", 16
    killed: list[tuple[int, int]] = []  # (pid, rows stored when it was killed)

    def killer() -> None:
        """Once a few blocks are stored (both actors busy), SIGKILL one map actor: deterministic, mid-run."""
        with contextlib.suppress(AssertionError):
            wait_for(lambda: len(stored(path)) >= 4 * block and map_workers(), timeout=150)
            pid = map_workers()[0]
            n = len(stored(path))
            os.kill(pid, signal.SIGKILL)
            killed.append((pid, n))

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    with Store(path) as st:
        s = on_ray(examples, "openai:canned", st, options={"base_url": proxy.url, "concurrency": 4}, block_rows=block)
    th.join(5)
    assert killed, "the worker was never killed"
    pid, at = killed[0]
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert at < ROWS - 2 * block, "killed too late to prove anything"
    rows = stored(path)
    assert len(rows) == ROWS and len({i for i, _ in rows}) == ROWS
    assert {st for _, st in rows} == {"ok"} and s.run.ok == ROWS
    # requests beyond one per row: only the killed actor's block in flight was sent again
    extra = proxy.received - ROWS
    again = sum(len(v) - 1 for v in proxy.by_key().values())
    assert 0 <= extra <= block and again == extra
    print(
        f"\nFIGURES ray_kill: {json.dumps({'rows': ROWS, 'requests': proxy.received, 'extra': extra, 'block_rows': block, 'stored_at_kill': at})}"
    )


DRIVER = """
import json, sys
from alpagasus import judges
from alpagasus.data import read_examples
from alpagasus.engine import Interrupted, RunOptions
from alpagasus.prompts import load_template
from alpagasus.rate.ray import rate_on_ray
from alpagasus.store import Store
address, url, path = sys.argv[1:4]
opts = {"base_url": url, "concurrency": 4}
code = 0
try:
    counts = rate_on_ray((e for e in read_examples("sample:alpaca").examples), judge=judges.get("openai:canned", **opts),
                         judge_spec="openai:canned", judge_options=opts, template=load_template("accuracy"),
                         store=Store(path), options=RunOptions(), address=address, block_rows=16).run
except Interrupted as e:
    counts, code = e.counts, 130
print(json.dumps({"ok": counts.ok, "requests_sent": counts.requests_sent}))
sys.exit(code)
"""


def test_ctrl_c_keeps_what_was_stored_and_a_rerun_completes(cluster, examples, proxy, tmp_path):
    """A second driver joins the cluster by address; Ctrl-C stops it after the blocks it had started."""
    path, block = tmp_path / "store.sqlite", 16
    script = tmp_path / "drive.py"
    script.write_text(DRIVER)
    err = open(tmp_path / "driver.stderr", "w")
    p = subprocess.Popen(
        [sys.executable, str(script), cluster, proxy.url, str(path)],
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
        env={**os.environ, **ENV},
    )
    try:
        wait_for(lambda: len(stored(path)) >= 2 * block or p.poll() is not None, timeout=150)
        at = len(stored(path))
        p.send_signal(signal.SIGINT)
        t = time.monotonic()
        out, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    stopped_in = time.monotonic() - t
    assert p.returncode == 130, (tmp_path / "driver.stderr").read_text()[-3000:]
    rows = stored(path)
    n = len(rows)
    # stopped early: the blocks started (one per actor) and those already on their way back are stored, no more
    assert at <= n <= at + 4 * block < ROWS
    assert {st for _, st in rows} == {"ok"} and json.loads(out)["ok"] == n
    assert proxy.received == n  # every request sent belongs to a stored row: queued blocks were never started
    with Store(path) as st:
        s = on_ray(examples, "openai:canned", st, options={"base_url": proxy.url, "concurrency": 4}, block_rows=block)
    assert (s.already_rated, s.run.to_judge) == (n, ROWS - n)
    assert len(stored(path)) == ROWS and proxy.received == ROWS  # nothing requested twice across the two runs
    print(
        f"\nFIGURES ray_ctrl_c: {json.dumps({'stored_at_signal': at, 'stored_after': n, 'stop_s': round(stopped_in, 1)})}"
    )


def test_cli_rate_with_ray_address_then_ray_alone_resumes(cluster, examples, proxy, tmp_path):
    """`alpagasus rate --ray ADDRESS` joins the cluster; `--ray` alone (a local cluster) finds nothing left."""
    store, out = tmp_path / "store.sqlite", tmp_path / "ratings.jsonl"
    base = [
        sys.executable,
        "-m",
        "alpagasus.cli",
        "rate",
        "sample:alpaca",
        "-o",
        str(out),
        "--store",
        str(store),
        "--judge",
        "openai:canned",
        "--base-url",
        proxy.url,
        "--mode",
        "generate",
        "--concurrency",
        "4",
    ]
    env = {**os.environ, **ENV}
    r = subprocess.run([*base, "--ray", cluster], capture_output=True, text=True, timeout=240, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == ROWS and {x["status"] for x in rows} == {"ok"} and {x["score"] for x in rows} == {4.0}
    assert len(stored(store)) == ROWS and proxy.received == ROWS
    r = subprocess.run([*base, "--ray"], capture_output=True, text=True, timeout=240, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert proxy.received == ROWS and len(out.read_text().splitlines()) == ROWS


def test_a_worker_that_cannot_build_the_judge_fails_the_run_with_its_reason(cluster, tiny_model, examples, tmp_path):
    """Workers check that they build the driver's judge (ratings are stored under its id): this one cannot."""
    with Store(tmp_path / "store.sqlite") as st, pytest.raises(RayRateError) as e:
        on_ray(examples[:20], "hf:/no/such/model", st, judge=judges.get(f"hf:{tiny_model}"))
    msg = str(e.value)
    assert "this worker's judge is hf:/no/such/model" in msg and "run the same command again" in msg
    assert "Traceback" not in msg and len(msg) < 800


def test_a_key_given_in_code_reaches_the_workers_through_their_environment_not_their_arguments(
    cluster, examples, tmp_path
):
    """The stub answers only requests carrying the key: every row rated means each worker had it, and the
    actors' constructor arguments (pickled into Ray's task specs) never held it (rate.ray.split_secrets)."""
    from alpagasus.rate.ray import SECRET_ENV, split_secrets
    from openai_stub import OpenAIStub

    key = "zq-ray-" + "K" * 30
    public, env = split_secrets({"base_url": "http://x/v1", "api_key": key, "concurrency": 4})
    assert public == {"base_url": "http://x/v1", "concurrency": 4} and env == {SECRET_ENV + "API_KEY": key}
    assert key not in repr(public)
    with OpenAIStub(key=key) as s, Store(tmp_path / "store.sqlite") as st:
        got = on_ray(examples[:20], "openai:stub", st, options={"base_url": s.url, "api_key": key}, actors=1)
        assert got.run.ok == 20, got.run
        assert all(status == "ok" for _, status in stored(tmp_path / "store.sqlite"))
