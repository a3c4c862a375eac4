"""An API key never reaches a file, the store, a log or a message.

Real HTTP servers on 127.0.0.1: one refuses every request with a 401 whose body echoes the key it was sent (as
OpenAI's "Incorrect API key provided: sk-..." does), one answers like an OpenAI-compatible server. The commands
run as subprocesses with a sentinel key (in the environment, or only in a recipe); then every byte they wrote
(output directories, run directory, the SQLite store's file and its rows) and everything they printed is
searched for the sentinel.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from alpagasus.errors import UserError
from alpagasus.redact import REDACTED, redact, redact_config
from alpagasus.store import Store

SENTINEL = "sk-SENTINEL-0123456789abcdef"
ROWS = [{"instruction": f"Name a colour, number {i}.", "input": "", "output": f"Colour {i} is blue."} for i in range(4)]


# ---- the servers -----------------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    refuse = False  # True: 401 with the key echoed back
    seen: list[str] = []  # Authorization headers received

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        auth = self.headers.get("Authorization") or ""
        type(self).seen.append(auth)
        if self.refuse:
            key = auth.removeprefix("Bearer ")
            self._send(
                401,
                {
                    "error": {
                        "message": f"Incorrect API key provided: {key}. You can find your API key "
                        "at https://platform.openai.com/account/api-keys.",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "invalid_api_key",
                    }
                },
            )
        elif self.path.endswith("/chat/completions"):
            text = "8 6\nAssistant 1 is more helpful." if "Assistant 1" in json.dumps(body) else "Score: 4\nGood."
            self._send(
                200,
                {
                    "id": "c1",
                    "object": "chat.completion",
                    "model": body.get("model"),
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
                },
            )
        else:  # /completions: generate's Alpaca prompt
            self._send(
                200,
                {
                    "id": "c2",
                    "object": "text_completion",
                    "model": body.get("model"),
                    "choices": [{"index": 0, "text": " Blue is a colour.", "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
                },
            )

    def _send(self, code: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _serve(refuse: bool) -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("Refusing" if refuse else "Answering", (_Handler,), {"refuse": refuse, "seen": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def refusing() -> Iterator[tuple[str, type[_Handler]]]:
    yield from _serve(refuse=True)


@pytest.fixture
def answering() -> Iterator[tuple[str, type[_Handler]]]:
    yield from _serve(refuse=False)


# ---- running and searching -------------------------------------------------------------------------------
class Runs:
    """Runs `alpagasus` in subprocesses and keeps everything they printed."""

    def __init__(self, tmp: Path, key_in_env: bool = True):
        self.tmp, self.printed = tmp, []
        self.env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
        if key_in_env:
            self.env["OPENAI_API_KEY"] = SENTINEL

    def __call__(self, *args: str, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
        p = subprocess.run(
            [sys.executable, "-m", "alpagasus.cli", *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.tmp,
            timeout=300,
        )
        self.printed.append(f"alpagasus {args[0]} (run {len(self.printed) + 1})\n{p.stdout}\n{p.stderr}")
        assert p.returncode in ok, p.stdout[-2000:] + p.stderr[-3000:]
        assert "Traceback" not in p.stderr, p.stderr[-3000:]
        return p


def leaks(root: Path, printed: list[str]) -> list[str]:
    """Where the sentinel (or its head: servers may mask the middle of a key) appears: files under `root`
    (bytes), the rows of every SQLite database there, and what was printed."""
    needles = (SENTINEL, SENTINEL[:12])
    found = [f"printed by: {text.splitlines()[0]}" for text in printed if any(n in text for n in needles)]
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if any(n.encode() in data for n in needles):
            found.append(str(path.relative_to(root)))
        if data[:16] == b"SQLite format 3\x00":
            found += [f"{path.name}: {row}" for row in _sqlite_rows(path) if any(n in row for n in needles)]
    return found


def _sqlite_rows(path: Path) -> list[str]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute("select name from sqlite_master where type = 'table'")]
        return [f"{t}: {row!r}" for t in tables for row in con.execute(f'select * from "{t}"')]
    finally:
        con.close()


def _dataset(tmp: Path) -> Path:
    path = tmp / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def _answers(tmp: Path) -> tuple[Path, Path]:
    files = []
    for model in ("model_a", "model_b"):
        path = tmp / f"vicuna_{model}.jsonl"
        path.write_text(
            "".join(
                json.dumps(
                    {
                        "testset": "vicuna",
                        "question_id": str(i),
                        "question": f"Question {i}?",
                        "answer": f"{model} says {i}.",
                        "model": model,
                    }
                )
                + "\n"
                for i in range(1, 4)
            )
        )
        files.append(path)
    return files[0], files[1]


# ---- the commands against a server that echoes the key in its 401 ---------------------------------------
def test_a_refused_key_echoed_by_the_server_is_never_written_or_printed(tmp_path, refusing):
    url, server = refusing
    run = Runs(tmp_path)
    out, store = tmp_path / "out", tmp_path / "out" / "store.sqlite"
    judge = ("--judge", "openai:m", "--base-url", url, "--store", str(store))
    # a refused key stops the run at once (exit 2) with a message that stays useful without the key
    rated = run("rate", str(_dataset(tmp_path)), "-o", str(out / "ratings.jsonl"), *judge, ok=(2,))
    assert "refused" in rated.stderr and "401" in rated.stderr and REDACTED in rated.stderr
    assert "API key" in rated.stderr and not (out / "ratings.jsonl").exists()
    with Store(store) as st:  # nothing stored as a rating (a rerun asks again); the refusal is in the attempt log
        assert st.count() == 0
        attempts = st.attempts()
        assert attempts and {a[4] for a in attempts} == {"refused"} and all(REDACTED in a[5] for a in attempts)
    assert len(server.seen) < len(ROWS) + 8  # stopped at the first refusals, not retried row after row
    a, b = _answers(tmp_path)
    compared = run("compare", str(a), str(b), "-o", str(out / "compare"), *judge, ok=(2,))
    assert "refused" in compared.stderr
    gen = run(
        "generate",
        "m",
        "--backend",
        "openai",
        "--base-url",
        url,
        "-t",
        "vicuna",
        "--limit",
        "2",
        "-o",
        str(out / "answers.jsonl"),
        ok=(1,),
    )
    assert "questions have no answer" in gen.stderr and "401" in gen.stderr
    assert server.seen and all(h == f"Bearer {SENTINEL}" for h in server.seen)  # the key did go out
    assert leaks(tmp_path, run.printed) == []


def test_a_key_given_only_in_a_recipe_stays_out_of_the_run_directory(tmp_path, refusing, answering):
    """Rate (refused: the 401 echoes the key) and rate + select (answered) from a recipe holding the key."""
    run = Runs(tmp_path, key_in_env=False)
    data = _dataset(tmp_path)
    for name, (url, server), until in (("refused", refusing, "rate"), ("answered", answering, "select")):
        recipe = tmp_path / f"{name}.yaml"
        recipe.write_text(
            f"name: {name}\ndata: {{path: {data}}}\n"
            f"rate: {{judge: 'openai:m', base_url: '{url}', api_key: '{SENTINEL}', "
            f"store: '{tmp_path / 'runs' / 'store.sqlite'}'}}\n"
            "select: {top_k: 2}\n"
        )
        run(
            "run",
            str(recipe),
            "--run-dir",
            str(tmp_path / "runs" / name),
            "--until",
            until,
            ok=(2,) if name == "refused" else (0,),
        )
        assert server.seen and all(h == f"Bearer {SENTINEL}" for h in server.seen)
        resolved = json.loads((tmp_path / "runs" / name / "recipe.resolved.json").read_text())
        assert resolved["rate"]["api_key"] == REDACTED
    assert (tmp_path / "runs" / "answered" / "sets" / "filtered.json").exists()
    recipe_files = {tmp_path / "refused.yaml", tmp_path / "answered.yaml"}  # the user's own files hold it
    for f in recipe_files:
        f.unlink()
    assert leaks(tmp_path, run.printed) == []


# ---- the commands against a server that answers -----------------------------------------------------------
@pytest.mark.slow
def test_a_working_key_is_sent_but_never_written(tmp_path, answering):
    url, server = answering
    run = Runs(tmp_path)
    out, store = tmp_path / "out", tmp_path / "out" / "store.sqlite"
    judge = ("--judge", "openai:m", "--base-url", url, "--store", str(store))
    run("rate", str(_dataset(tmp_path)), "-o", str(out / "ratings.jsonl"), *judge)
    rows = [json.loads(line) for line in (out / "ratings.jsonl").read_text().splitlines()]
    assert [r["score"] for r in rows] == [4.0] * len(ROWS)
    run("report", str(out / "ratings.jsonl"), "-o", str(out / "report"))
    a, b = _answers(tmp_path)
    run("compare", str(a), str(b), "-o", str(out / "compare"), *judge)
    assert json.loads((out / "compare" / "summary.json").read_text())["results"]
    run(
        "generate",
        "m",
        "--backend",
        "openai",
        "--base-url",
        url,
        "-t",
        "vicuna",
        "--limit",
        "2",
        "-o",
        str(out / "answers.jsonl"),
    )
    run(
        "generate",
        "m",
        "--backend",
        "openai",
        "--base-url",
        url,
        "-t",
        "koala",
        "--limit",
        "1",
        "--api-key",
        SENTINEL,
        "-o",
        str(out / "answers.jsonl"),
    )  # given as a flag
    assert len((out / "answers.jsonl").read_text().splitlines()) == 3
    assert server.seen and all(h == f"Bearer {SENTINEL}" for h in server.seen)
    assert leaks(tmp_path, run.printed) == [], leaks(tmp_path, run.printed)


def test_a_key_given_in_code_is_redacted_from_the_store(tmp_path, refusing, monkeypatch):
    """The library: `api_key` passed as a judge option (no environment variable) is not stored."""
    from alpagasus import rate_file

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    url, server = refusing
    out = tmp_path / "out"
    with pytest.raises(UserError) as refused:
        rate_file(
            _dataset(tmp_path),
            out / "r.jsonl",
            judge="openai:m",
            store_path=out / "s.sqlite",
            judge_options={"base_url": url, "api_key": SENTINEL},
        )
    assert "401" in str(refused.value) and SENTINEL not in str(refused.value)
    assert server.seen and set(server.seen) == {f"Bearer {SENTINEL}"}
    with Store(out / "s.sqlite") as st:
        assert st.count() == 0 and {a[4] for a in st.attempts()} == {"refused"}
    assert leaks(tmp_path, []) == []


# ---- the helper ------------------------------------------------------------------------------------------
def test_redact_replaces_keys_tokens_and_url_passwords(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "plain-key-without-prefix")
    text = (
        f"Incorrect API key provided: {SENTINEL}. masked sk-SENTI****************cdef, "
        "env plain-key-without-prefix, Bearer abc.def-123456, http://me:hunter2@host/v1, hf_" + "a" * 30
    )
    out = redact(text)
    for secret in (SENTINEL, "sk-SENTI*", "plain-key-without-prefix", "abc.def-123456", "hunter2", "hf_aaa"):
        assert secret not in out
    assert out.startswith("Incorrect API key provided: [redacted].") and "http://[redacted]@host/v1" in out
    assert redact("my-own-secret-value here", ["my-own-secret-value"]) == "[redacted] here"
    assert redact("/data/sk-learn.json and EMPTY", ["EMPTY"]) == "/data/sk-learn.json and EMPTY"
    cfg = {
        "rate": {"api_key": "x" * 8, "base_url": "http://u:p@h/v1", "store": None},
        "compare": {"api_key": None},
        "list": [SENTINEL],
    }
    assert redact_config(cfg) == {
        "rate": {"api_key": REDACTED, "base_url": "http://[redacted]@h/v1", "store": None},
        "compare": {"api_key": None},
        "list": [REDACTED],
    }


def test_user_error_messages_are_redacted():
    from alpagasus.errors import UserError

    assert (
        str(UserError(f"the judge said: Incorrect API key provided: {SENTINEL}"))
        == "the judge said: Incorrect API key provided: [redacted]"
    )
