"""AlpacaEval's published verdicts: the reader (JSON list, JSONL.gz of several models), its win rate recomputed
exactly (draws as 1.5 and as 0, nulls left out as alpaca_eval does), and `compare --annotations`."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alpagasus.cli import app
from alpagasus.compare.alpacaeval import by_model, outcome, read_annotations, win_rate, win_rates
from alpagasus.data import DataError
from conftest import SHARED_DATA

runner = CliRunner()
PREFS = SHARED_DATA / "preferences"


def record(i: int, pref, model: str = "alpaca-7b", out2: str | None = None) -> dict:
    return {
        "instruction": f"instruction {i}",
        "output_1": f"reference answer {i}",
        "generator_1": "text_davinci_003",
        "output_2": out2 if out2 is not None else f"answer {i} of {model}",
        "generator_2": model,
        "annotator": "alpaca_eval_gpt4",
        "preference": pref,
        "dataset": "helpful_base",
    }


def alpaca_7b(zero_draws: int = 8, extra: list | None = None) -> list[dict]:
    """alpaca-7b's published counts: 205 wins, 584 losses, 16 draws (`zero_draws` of them written as 0)."""
    prefs = [2] * 205 + [1] * 584 + [0] * zero_draws + [1.5] * (16 - zero_draws) + (extra or [])
    return [record(i, p) for i, p in enumerate(prefs)]


def write_json(path: Path, rows: list[dict]) -> Path:
    path.write_text(json.dumps(rows))
    return path


@pytest.mark.parametrize("zero_draws", [0, 8, 16])
def test_alpaca_7b_published_win_rate_from_its_counts(tmp_path, zero_draws):
    verdicts = read_annotations(write_json(tmp_path / "annotations.json", alpaca_7b(zero_draws)))
    r = win_rate(verdicts)
    assert (r.model, r.n_wins, r.n_wins_base, r.n_draws, r.n_total, r.n_null) == ("alpaca-7b", 205, 584, 16, 805, 0)
    assert round(r.win_rate, 2) == 26.46
    board = {row[""]: row for row in csv.DictReader((PREFS / "alpaca_eval_gpt4_leaderboard.csv").open())}
    published = board["alpaca-7b"]
    assert r.win_rate == pytest.approx(float(published["win_rate"]), abs=1e-9)
    assert r.standard_error == pytest.approx(float(published["standard_error"]), abs=1e-9)
    assert r.discrete_win_rate == pytest.approx(float(published["discrete_win_rate"]), abs=1e-9)
    assert (r.n_wins, r.n_wins_base, r.n_draws, r.n_total) == tuple(
        int(published[k]) for k in ("n_wins", "n_wins_base", "n_draws", "n_total")
    )


def test_null_preferences_are_left_out_not_counted_as_draws(tmp_path):
    # alpaca_eval drops NaN (validate_alpacaeval_preference(..., is_allow_nan=False)): n_total stays 805
    r = win_rate(read_annotations(write_json(tmp_path / "a.json", alpaca_7b(8, extra=[None, None]))))
    assert (r.n_total, r.n_null, r.n_draws) == (805, 2, 16) and round(r.win_rate, 2) == 26.46
    assert [outcome(p) for p in (1, 2, 1.5, 0, None, 1.25)] == [0.0, 1.0, 0.5, 0.5, None, 0.25]


def test_soft_preferences_and_several_models_in_one_gzipped_jsonl(tmp_path):
    rows = [
        record(0, 1.75, "m1"),
        record(1, 1.25, "m1"),
        record(2, 1.5, "m1"),
        record(0, 1.9, "m2"),
        record(1, 1.0, "m2"),
    ]
    path = tmp_path / "prefs.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write("\n".join(json.dumps(r) for r in rows) + "\n")
    verdicts = read_annotations([path])
    assert list(by_model(verdicts)) == ["m1", "m2"] and verdicts[0].source == f"{path}, row 1"
    rates = win_rates(verdicts)
    assert rates["m1"].win_rate == pytest.approx(100 * (0.75 + 0.25 + 0.5) / 3)
    assert (rates["m1"].n_wins, rates["m1"].n_wins_base, rates["m1"].n_draws) == (1, 1, 1)
    assert rates["m1"].discrete_win_rate == pytest.approx(100 * (1 + 0 + 0.5) / 3)
    assert rates["m2"].win_rate == pytest.approx(45.0) and rates["m2"].n_total == 2
    assert [v.side for v in by_model(verdicts)["m1"]] == ["2", "1", "tie"]


@pytest.mark.parametrize(
    "bad,message", [("abc", "field 'preference'"), (3, "outside [1, 2]"), (True, "field 'preference'")]
)
def test_a_bad_preference_names_the_file_row_and_field(tmp_path, bad, message):
    path = write_json(tmp_path / "a.json", [record(0, 2), record(1, bad)])
    with pytest.raises(DataError, match=r"a\.json, row 2") as e:
        read_annotations(path)
    assert message in str(e.value)


def test_a_missing_field_is_named(tmp_path):
    rows = [record(0, 2)]
    del rows[0]["output_2"]
    with pytest.raises(DataError, match="row 1, field 'output_2': missing"):
        read_annotations(write_json(tmp_path / "a.json", rows))


def test_compare_annotations_writes_each_models_raw_and_length_controlled_win_rate(tmp_path):
    # two files, one model each (the layout of results/<model>/<annotator>/annotations.json)
    f1 = write_json(tmp_path / "alpaca-7b.json", alpaca_7b(8))
    long_rows = [record(i, 2 if i % 3 else 1, "verbose", "x" * (400 + 7 * i)) for i in range(60)]
    f2 = write_json(tmp_path / "verbose.json", long_rows)
    out = tmp_path / "out"
    res = runner.invoke(app, ["compare", "--annotations", str(f1), "--annotations", str(f2), "-o", str(out)])
    assert res.exit_code == 0, res.output
    s = json.loads((out / "summary.json").read_text())
    a7 = s["models"]["alpaca-7b"]
    assert round(a7["win_rate"], 2) == 26.46 and (a7["n_wins"], a7["n_draws"], a7["n_total"]) == (205, 16, 805)
    assert 0 < a7["length_controlled_winrate"] < 100 and s["annotators"] == ["alpaca_eval_gpt4"]
    assert list(s["models"]) == ["verbose", "alpaca-7b"]  # highest win rate first
    assert "alpaca-7b" in res.output and "26.46" in res.output and "LC" in res.output


def test_compare_annotations_refuses_a_bad_file_with_exit_2(tmp_path):
    path = write_json(tmp_path / "a.json", [record(0, "x")])
    res = runner.invoke(app, ["compare", "--annotations", str(path), "-o", str(tmp_path / "out")])
    assert res.exit_code == 2 and "row 1, field 'preference'" in res.output


def test_the_shared_development_file_reads_and_the_reference_against_itself_is_even():
    verdicts = read_annotations(PREFS / "alpaca_eval_weighted_alpaca_eval_gpt4_turbo_dev.jsonl.gz")
    rates = win_rates(verdicts)
    assert len(verdicts) == 27490 and len(rates) == 46
    ref = rates["gpt4_1106_preview"]  # judged against its own answers: every verdict 1.5
    assert ref.win_rate == 50.0 and ref.n_draws == ref.n_total == 585


def test_lc_calibration_by_the_same_verdicts_changes_nothing_and_needs_annotations(tmp_path):
    from alpagasus.compare.lc import alpaca_eval_lc

    rows = [
        record(i, 2 if (i * 7 + k) % 5 < k + 1 else 1, f"m{k}", "o" * (100 + 13 * i * (k + 1)))
        for k in range(4)
        for i in range(40)
    ]
    path = write_json(tmp_path / "a.json", rows)
    verdicts = read_annotations(path)
    assert alpaca_eval_lc(verdicts, verdicts) == alpaca_eval_lc(verdicts)
    out = tmp_path / "out"
    res = runner.invoke(app, ["compare", "--annotations", str(path), "--lc-calibration", str(path), "-o", str(out)])
    assert res.exit_code == 0, res.output
    s = json.loads((out / "summary.json").read_text())
    assert s["inputs"]["lc_calibration"] == [str(path)]
    assert {m: r["length_controlled_winrate"] for m, r in s["models"].items()} == alpaca_eval_lc(verdicts)
    res = runner.invoke(app, ["compare", "--lc-calibration", str(path), "-o", str(out)])
    assert res.exit_code == 2 and "--lc-calibration goes with --annotations" in res.output
