"""replay:FILE: recorded ratings answered back by content, on real Alpaca rows and published label decisions."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from alpagasus import judges
from alpagasus.data import read_jsonl
from alpagasus.judges.base import JudgeError, JudgeOptionError
from alpagasus.rate import rate_file
from alpagasus.records import Example, Request, content_id
from conftest import SHARED_DATA

LABELS = SHARED_DATA / "labels" / "alpaca_llm_labels.jsonl"
RECORDED = [5.0, 4.5, 3.0, 2.0]  # rows 0-3; row 4 is recorded as `error`, row 5 with a null score


def _triplet(r: dict) -> dict:
    return {"instruction": r["instruction"], "input": r["input"], "output": r["output"]}


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def replay_file(tmp_path: Path, alpaca_rows: list[dict]) -> Path:
    """A ratings file as `rate` writes it: the triplet, then id/score/status; two rows hold no usable score."""
    rows = [
        {**_triplet(r), "id": content_id(r["instruction"], r["input"], r["output"]), "score": s, "status": "ok"}
        for r, s in zip(alpaca_rows, RECORDED)
    ]
    rows.append({**_triplet(alpaca_rows[4]), "score": None, "status": "error"})
    rows.append({**_triplet(alpaca_rows[5]), "score": None, "status": "ok"})
    return _write_jsonl(tmp_path / "recorded.jsonl", rows)


def _by_id(path: Path) -> dict[str, dict]:
    return {r["id"] if "id" in r else r["alpagasus_id"]: r for r in read_jsonl(path)}


def test_rate_replays_recorded_scores_and_errors_on_the_rest(tmp_path, alpaca_rows, replay_file):
    src = tmp_path / "in.json"
    rows = [_triplet(r) for r in alpaca_rows[:8]]  # 0-3 recorded, 4-5 not usable, 6-7 absent from the file
    src.write_text(json.dumps(rows))
    store, out = tmp_path / "store.db", tmp_path / "ratings.jsonl"
    summary = rate_file(src, out, judge=f"replay:{replay_file}", store_path=store)
    judge_id = summary.judge
    assert judge_id.startswith("replay:recorded@") and len(judge_id.split("@")[1]) == 10
    assert (summary.run.ok, summary.run.error, summary.run.requests_sent) == (4, 4, 8)
    got = _by_id(out)
    for r, score in zip(rows, RECORDED):
        rec = got[content_id(r["instruction"], r["input"], r["output"])]
        assert (rec["score"], rec["status"], rec["judge"]) == (score, "ok", judge_id)
    for r in rows[4:]:
        rec = got[content_id(r["instruction"], r["input"], r["output"])]
        assert rec["status"] == "error" and rec["score"] is None
        assert rec["raw"] == f"not in the replay file {replay_file}"

    # a rerun never sends the ok rows again (final in the store); the error rows are asked again, because
    # `error` is not a final status (a transport error may pass), and being still absent they stay `error`
    again = rate_file(src, out, judge=f"replay:{replay_file}", store_path=store)
    assert (again.already_rated, again.run.requests_sent, again.run.error, again.run.ok) == (4, 4, 4, 0)
    assert [r["status"] for r in read_jsonl(out)] == ["ok"] * 4 + ["error"] * 4

    # the recorded rows alone: all in the store, nothing is sent
    only_ok = tmp_path / "ok.json"
    only_ok.write_text(json.dumps(rows[:4]))
    last = rate_file(only_ok, tmp_path / "ok.jsonl", judge=f"replay:{replay_file}", store_path=store)
    assert (last.already_rated, last.run.requests_sent) == (4, 0)


def test_namespaced_rating_fields_of_a_real_ratings_file_are_replayed(tmp_path, alpaca_rows, replay_file):
    # the user's rows have their own `score` column, so `rate` writes alpagasus_score / alpagasus_status
    src = tmp_path / "own_score.json"
    src.write_text(json.dumps([{**_triplet(r), "score": "user value"} for r in alpaca_rows[:4]]))
    first = tmp_path / "first.jsonl"
    rate_file(src, first, judge=f"replay:{replay_file}", store_path=tmp_path / "a.db")
    assert all("alpagasus_score" in r and r["score"] == "user value" for r in read_jsonl(first))

    again = tmp_path / "again.jsonl"
    summary = rate_file(src, again, judge=f"replay:{first}", store_path=tmp_path / "b.db")
    assert summary.run.ok == 4
    assert [r["alpagasus_score"] for r in read_jsonl(again)] == RECORDED


def test_boolean_decision_column_replays_as_keep_and_drop(tmp_path):
    labels = list(read_jsonl(LABELS))[:40]
    decisions = [r["claude_accuracy_ge_4_5"] for r in labels]
    assert True in decisions and False in decisions
    src = tmp_path / "in.jsonl"
    _write_jsonl(src, [_triplet(r) for r in labels])
    out = tmp_path / "ratings.jsonl"
    summary = rate_file(
        src,
        out,
        judge=f"replay:{LABELS}",
        store_path=tmp_path / "s.db",
        judge_options={"column": "claude_accuracy_ge_4_5"},
    )
    assert summary.run.ok == 40
    assert [r["score"] for r in read_jsonl(out)] == [5.0 if d else 3.0 for d in decisions]


def test_csv_cells_and_custom_keep_drop(tmp_path, alpaca_rows):
    csv = tmp_path / "decisions.csv"
    lines = ["instruction,input,output,keep,score"]
    for r, keep in zip(alpaca_rows[:3], ("true", "False", "")):
        lines.append(",".join(json.dumps(r[k]) for k in ("instruction", "input", "output")) + f",{keep},4")
    csv.write_text("\n".join(lines) + "\n")
    judge = judges.get(f"replay:{csv}", column="keep", keep=4.5, drop=1.0)
    reqs = [
        Request(key=str(i), system="", user="", example=Example.alpaca(r["instruction"], r["input"], r["output"]))
        for i, r in enumerate(alpaca_rows[:3])
    ]
    replies = asyncio.run(judge.score(reqs))
    assert [r.score for r in replies] == [4.5, 1.0, None]
    assert replies[2].error and not replies[2].retryable
    # numbers are used as they are (the default column here: `score`)
    assert [r.score for r in asyncio.run(judges.get(f"replay:{csv}").score(reqs))] == [4.0] * 3


def test_a_missing_file_or_score_column_is_an_error_naming_the_file(tmp_path, alpaca_rows):
    with pytest.raises(JudgeError, match="/no/such.jsonl"):
        judges.get("replay:/no/such.jsonl").load()
    bare = _write_jsonl(tmp_path / "bare.jsonl", [_triplet(r) for r in alpaca_rows[:2]])
    with pytest.raises(JudgeError, match=r"bare\.jsonl.*instruction, input, output"):
        judges.get(f"replay:{bare}").load()
    with pytest.raises(JudgeError, match="'verdict'"):
        judges.get(f"replay:{bare}", column="verdict").load()


def test_options_other_backends_take_are_rejected():
    with pytest.raises(JudgeOptionError, match="base_url"):
        judges.get("replay:x", base_url="http://localhost:1")
    with pytest.raises(JudgeError, match="mode 'predict'"):
        judges.get("replay:x", mode="generate")


def test_different_files_never_share_an_id(tmp_path, alpaca_rows):
    a = _write_jsonl(tmp_path / "r.jsonl", [{**_triplet(alpaca_rows[0]), "score": 5}])
    id_a = judges.get(f"replay:{a}").id
    _write_jsonl(a, [{**_triplet(alpaca_rows[0]), "score": 3}])
    assert judges.get(f"replay:{a}").id != id_a
