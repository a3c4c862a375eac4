"""Issue 22, the client's side: no key reaches the store whatever path a reply takes, a slow server is told from a
dead one, a name that does not resolve stops the run at once, a waiting batch's request counts and the logprob
fallbacks reach the progress, and `--skip-invalid` with nothing valid is no success. Every server is real, on
127.0.0.1 (tests/openai_stub.py); nothing here replaces the client."""

from __future__ import annotations

import io
import json
import random
import socket
import sqlite3
import string
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from alpagasus.cli import app
from alpagasus.cli._progress import ProgressBars
from alpagasus.engine import RunOptions
from alpagasus.errors import UserError
from alpagasus.rate import rate_file
from alpagasus.ratings_file import rating_field
from alpagasus.redact import REDACTED, redact
from openai_stub import OpenAIStub

# a key no pattern of redact() recognises (not sk-..., not hf_...): only knowing it redacts it
KEY = "zq" + "".join(random.Random(22).choices(string.ascii_uppercase + string.digits, k=38))
PAD0 = 135  # row i's echoed body has PAD0 + i pad characters: the cut at 200 falls at every position of the key


@pytest.fixture(scope="module")
def rows(alpaca_rows) -> list[dict]:
    return [r for r in alpaca_rows if r["output"].strip() and r["instruction"].strip()][:48]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def collect(snapshots: list):
    """A progress factory recording what each callback is given."""

    def factory(label, total):
        return lambda s: snapshots.append(
            (
                s.done,
                s.fallbacks,
                *(
                    getattr(s, f"batch_{n}", None)  # new fields
                    for n in ("completed", "failed", "total")
                ),
                s.note,
            )
        )

    return factory


def leaked(data: bytes | str) -> list[int]:
    """Lengths n (>= 4) such that the key's first n characters appear in `data`."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return [n for n in range(4, len(KEY) + 1) if KEY[:n] in text]


# ---- 1. a key echoed in a batch output line ------------------------------------------------------------------
def test_a_key_echoed_in_a_malformed_batch_reply_never_reaches_the_store_or_the_ratings(rows, tmp_path):
    """A 200 batch line whose body is no completion, echoing the request's Authorization header at every cut
    position around the 200-character excerpt of the error text: the store and the ratings file hold no
    character of the key, and the rating says why it failed."""

    def echo(i: int, cid: str, headers) -> dict:
        return {"pad": "x" * (PAD0 + i), "echo": headers.get("Authorization", "")[len("Bearer ") :]}

    data = write_rows(tmp_path / "in.jsonl", rows)
    out, store = tmp_path / "out.jsonl", tmp_path / "s.sqlite"
    with OpenAIStub(batch_line=echo) as s:
        rate_file(
            data,
            out,
            judge="openai:stub",
            mode="generate",
            store_path=store,
            judge_options={"base_url": s.url, "api_key": KEY},
            options=RunOptions(batch=True, batch_poll_s=0.01, max_attempts=1),
        )
        assert s.batches, "the batch API was used"
    ratings = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(ratings) == len(rows) and {rating_field(r, "status") for r in ratings} == {"error"}
    assert all("malformed response" in rating_field(r, "raw") for r in ratings)
    assert leaked(out.read_bytes()) == []
    assert any(REDACTED in rating_field(r, "raw") for r in ratings)
    with sqlite3.connect(store) as db:
        raws = "\n".join(x or "" for (x,) in db.execute("SELECT raw FROM replies"))
        logged = "\n".join(str(x) for row in db.execute("SELECT * FROM attempts") for x in row)
    assert leaked(raws) == [] and leaked(logged) == []
    for f in tmp_path.glob("s.sqlite*"):  # the database and its WAL, byte for byte
        assert leaked(f.read_bytes()) == [], f.name


def test_redact_catches_a_known_key_cut_at_the_end_of_a_text():
    """Text someone else truncated inside a key: the trailing prefix of a known key is redacted too."""
    for n in range(4, len(KEY)):
        assert leaked(redact("error: " + KEY[:n], [KEY])) == [], n


# ---- 3. slow is not dead ---------------------------------------------------------------------------------------
def run_until_outage(rows, tmp_path, url: str, timeout: float = 0.3) -> tuple[str, list]:
    snapshots: list = []
    with pytest.raises(UserError) as err:
        rate_file(
            write_rows(tmp_path / "in.jsonl", rows[:6]),
            tmp_path / "out.jsonl",
            judge="openai:stub",
            mode="generate",
            store_path=tmp_path / "s.sqlite",
            progress=collect(snapshots),
            judge_options={"base_url": url, "timeout": timeout, "concurrency": 4},
            options=RunOptions(outage_after=2, max_outage_s=1.0, backoff_s=0.05, probe_every_s=0.2, max_attempts=100),
        )
    return str(err.value), [s[-1] for s in snapshots if s[-1]]


def test_a_server_that_answers_too_slowly_is_busy_not_unreachable(rows, tmp_path):
    with OpenAIStub(delay=3.0) as s:
        msg, notes = run_until_outage(rows, tmp_path, s.url)
    assert "busy" in msg and "--concurrency" in msg and "--timeout" in msg, msg
    assert "unreachable" not in msg, msg
    assert notes and all("busy" in n for n in notes), notes


def test_a_server_that_refuses_connections_is_unreachable(rows, tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    msg, notes = run_until_outage(rows, tmp_path, f"http://127.0.0.1:{port}/v1")
    assert "unreachable" in msg and "busy" not in msg, msg
    assert notes and all("unreachable" in n for n in notes), notes


# ---- 4. a name that does not resolve -----------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("batch", [False, True])
def test_a_host_that_does_not_resolve_stops_at_once_with_the_reason(rows, tmp_path, batch):
    """`.invalid` never resolves (RFC 6761). With --max-outage at 30 s the old code paused 30 s and then said
    "unreachable"; now the first failure is the end, with the resolver's reason."""
    with pytest.raises(UserError) as err:
        rate_file(
            write_rows(tmp_path / "in.jsonl", rows[:3]),
            tmp_path / "out.jsonl",
            judge="openai:stub",
            mode="generate",
            store_path=tmp_path / "s.sqlite",
            judge_options={"base_url": "http://judge.invalid:8000/v1"},
            options=RunOptions(max_outage_s=30.0, batch=batch),
        )
    msg = str(err.value)
    assert "does not resolve" in msg and "judge.invalid" in msg and "not known" in msg, msg
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM replies").fetchone()[0] == 0  # nothing stored as a failure


# ---- 5. a waiting batch's request counts ---------------------------------------------------------------------
def test_a_waiting_batch_shows_the_request_counts_the_provider_reports(rows, tmp_path):
    snapshots: list = []
    with OpenAIStub(batch_line=lambda i, cid, h: {**json.loads(json.dumps(completion_body())), "id": cid}) as s:
        rate_file(
            write_rows(tmp_path / "in.jsonl", rows[:6]),
            tmp_path / "out.jsonl",
            judge="openai:stub",
            mode="generate",
            store_path=tmp_path / "s.sqlite",
            progress=collect(snapshots),
            judge_options={"base_url": s.url},
            options=RunOptions(batch=True, batch_poll_s=0.01),
        )
    counts = [(c, f, t) for done, _, c, f, t, _ in snapshots if done == 0]
    assert (0, 0, 6) in counts and (3, 1, 6) in counts, counts  # the move while the status stayed in_progress
    assert any("3/6 done, 1 failed" in s[-1] for s in snapshots), [s[-1] for s in snapshots]
    assert snapshots[-1][0] == 6


def completion_body() -> dict:
    from openai_stub import completion

    return completion("4\nA fine answer.")


def test_the_progress_bar_shows_batch_counts_and_fallbacks():
    from alpagasus.engine.types import RunCounts

    console = Console(file=io.StringIO(), width=250, force_terminal=False)
    with ProgressBars(console) as bars:
        update = bars("rating", 6)
        update(RunCounts(batch_completed=3, batch_failed=1, batch_total=6, fallbacks=2, elapsed_s=1.0))
    text = console.file.getvalue()
    assert "batch 3/6 done, 1 failed" in text and "re-asked in generate mode 2" in text, text


# ---- 6. logprob fallbacks as they happen ---------------------------------------------------------------------
def test_logprob_fallbacks_reach_the_progress_as_they_happen(rows, tmp_path):
    """The stub's logprob replies hold no label: every row is asked again in generate mode. The count reaches
    the progress callback while rows are still being rated, and the CLI's bar shows it."""
    snapshots: list = []
    console = Console(file=io.StringIO(), width=250, force_terminal=False)
    with OpenAIStub() as s, ProgressBars(console) as bars:

        def factory(label, total):
            shown = bars(label, total)
            return lambda c: (snapshots.append((c.done, c.fallbacks)), shown(c))

        summary = rate_file(
            write_rows(tmp_path / "in.jsonl", rows[:5]),
            tmp_path / "out.jsonl",
            judge="openai:stub",
            mode="logprob",
            store_path=tmp_path / "s.sqlite",
            progress=factory,
            judge_options={"base_url": s.url, "concurrency": 1},
        )
    assert summary.run.fallbacks == 5 and summary.run.ok == 5
    assert any(0 < f and d < 5 for d, f in snapshots), snapshots  # seen before the run ended
    assert "re-asked in generate mode 5" in console.file.getvalue()


# ---- 7. --skip-invalid with nothing valid --------------------------------------------------------------------
def test_skip_invalid_with_every_row_invalid_exits_2_with_the_reason(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"q{i}"}) + "\n" for i in range(3)))  # no output field
    out = tmp_path / "out.jsonl"
    res = CliRunner().invoke(
        app,
        [
            "rate",
            str(data),
            "-o",
            str(out),
            "--judge",
            "openai:stub",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--store",
            str(tmp_path / "s.sqlite"),
            "--skip-invalid",
        ],
    )
    assert res.exit_code == 2, res.output
    assert "nothing was rated" in res.output and "3 rows" in res.output, res.output
    assert "ratings written" not in res.output
    listed = [json.loads(x) for x in out.read_text().splitlines()]  # the invalid rows are still listed
    assert len(listed) == 3 and {rating_field(r, "status") for r in listed} == {"invalid_input"}
