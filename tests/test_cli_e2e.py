"""End to end: `alpagasus rate` on 20 real Alpaca rows with the embedded judge, offline, then `select`."""

import json
import os
import subprocess
import sys

import pytest

from conftest import SHARED_DATA, plain

pytestmark = pytest.mark.slow  # the CLI in subprocesses with the embedded judge and predictor loaded


def run(*args, env):
    return subprocess.run(
        [sys.executable, "-m", "alpagasus.cli", *args], capture_output=True, text=True, env=env, timeout=900
    )


def test_rate_then_select_with_embedded_judge(tmp_path):
    rows = json.loads((SHARED_DATA / "alpaca" / "alpaca_random_9k.json").read_text())[:20]
    rows.append(dict(rows[0]))  # a duplicate: rated once
    rows.append({"instruction": "x", "input": "", "output": ""})  # bad data: status `empty`, not sent
    rows.append({"instruction": "y", "input": "", "output": 42})  # a broken row: listed with --skip-invalid
    data = tmp_path / "alpaca20.json"
    data.write_text(json.dumps(rows))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    store = tmp_path / "store.sqlite"
    out = tmp_path / "ratings.jsonl"
    emb = ("--judge", "embedded:smollm2")
    r = run("rate", str(data), "-o", str(out), "--store", str(store), "--skip-invalid", *emb, env=env)
    assert r.returncode == 0, r.stderr
    got = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(got) == 22  # 20 unique + 1 empty + 1 invalid row
    rated = [g for g in got if g["status"] not in ("invalid_input", "empty")]
    assert {g["judge"] for g in rated} == {"embedded:smollm2#logprob"}
    assert all(g["status"] == "ok" and 0 <= g["score"] <= 5 for g in rated)
    assert [g["instruction"] for g in rated] == [x["instruction"] for x in rows[:20]]
    bad = [g for g in got if g["status"] == "invalid_input"]
    assert bad[0]["row"] == 23 and bad[0]["field"] == "output"
    assert [(g["row"], g["score"]) for g in got if g["status"] == "empty"] == [(22, None)]
    err = plain(r.stderr)
    assert "row 23, field 'output': must be a string" in err and "duplicates (rated once) 1" in err
    assert "empty instruction or output (not sent) 1" in err

    # a second run finds everything in the store and loads no model
    r2 = run(
        "rate", str(data), "-o", str(tmp_path / "again.jsonl"), "--store", str(store), "--skip-invalid", *emb, env=env
    )
    assert r2.returncode == 0 and "requests sent 0" in plain(r2.stderr)
    assert "Loading weights" not in r2.stderr

    sel = tmp_path / "sel.json"
    r3 = run("select", str(out), "-o", str(sel), "--top-k", "5", env=env)
    assert r3.returncode == 0, r3.stderr
    kept = json.loads(sel.read_text())
    best = sorted((g["score"] for g in rated), reverse=True)[:5]
    assert len(kept) == 5 and set(kept[0]) == {"instruction", "input", "output"}
    assert sorted(g["score"] for g in rated if g["instruction"] in {k["instruction"] for k in kept}) == sorted(best)
    assert "kept 5 of 22" in " ".join(r3.stderr.split())

    # bad input without --skip-invalid: a clear error naming the file, the row and the field
    r4 = run("rate", str(data), "-o", str(tmp_path / "x.jsonl"), "--store", str(store), *emb, env=env)
    assert r4.returncode == 2 and "row 23, field 'output'" in " ".join(r4.stderr.split())
    assert "Traceback" not in r4.stderr


def test_default_judge_is_the_distilled_predictor(tmp_path):
    from alpagasus import judges

    assert judges.default_rating_judge("accuracy") == "predictor:alpaca-claude-accuracy"
    assert judges.default_rating_judge("helpfulness") == "predictor:alpaca-chatgpt-helpfulness"
    assert judges.default_rating_judge("accuracy", mode="logprob") == "embedded:smollm2"
    assert judges.default_rating_judge("accuracy", prompt="mine.txt") == "embedded:smollm2"
    rows = json.loads((SHARED_DATA / "alpaca" / "alpaca_random_9k.json").read_text())[:30]
    data = tmp_path / "a.json"
    data.write_text(json.dumps(rows))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = run("rate", str(data), "-o", str(tmp_path / "r.jsonl"), "--store", str(tmp_path / "s.sqlite"), env=env)
    assert r.returncode == 0, r.stderr
    got = [json.loads(l) for l in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert {g["judge"].split("@")[0] for g in got} == {"predictor:alpaca-claude-accuracy"}
    assert all(g["status"] == "ok" and 0 <= g["score"] <= 5 for g in got)


def test_rate_and_compare_share_one_session_so_a_bad_store_is_the_same_clean_error(tmp_path):
    """The store that cannot be opened (a directory) is one message, no traceback, in both commands."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    bad_store = tmp_path / "a_directory"
    bad_store.mkdir()
    answers = SHARED_DATA / "responses" / "vicuna_alpagasus2_vs_alpaca2.json"
    r = run(
        "rate", "sample:alpaca", "-o", str(tmp_path / "r.jsonl"), "--limit", "2", "--store", str(bad_store), env=env
    )
    c = run(
        "compare",
        str(answers),
        "--model-a",
        "alpagasus2",
        "--model-b",
        "alpaca2",
        "-o",
        str(tmp_path / "cmp"),
        "--store",
        str(bad_store),
        "--judge",
        "openai:m",
        "--base-url",
        "http://127.0.0.1:9/v1",
        env=env,
    )
    for proc in (r, c):
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert "cannot open the store" in proc.stderr and "a_directory" in proc.stderr
