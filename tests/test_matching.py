"""The length-matched random baseline (select.matching, `select --random K --match-length REF`)."""

from __future__ import annotations

import json
import random

import pytest

from alpagasus.errors import UserError
from alpagasus.select import select_file
from alpagasus.select.matching import ks_distance, match_lengths
from alpagasus.select.rules import Columns, choose


def _ratings(rows: list[dict], path):
    with open(path, "w") as f:
        for i, r in enumerate(rows):
            f.write(json.dumps({**r, "id": f"x{i}", "status": "ok", "score": 3.0}) + "\n")
    return path


def _columns(rows: list[dict]) -> Columns:
    cols = Columns()
    for r in rows:
        cols.add({**r, "status": "ok", "score": 3.0})
    return cols


def test_ks_distance_is_zero_for_equal_samples_and_one_for_disjoint():
    assert ks_distance([1, 2, 3], [3, 2, 1]) == 0
    assert ks_distance([1, 2], [10, 20]) == 1


def test_matched_draw_follows_a_short_reference_where_plain_random_does_not(alpaca_rows):
    rows = alpaca_rows[:3000]
    cols = _columns(rows)
    lengths = sorted(len(r["output"]) for r in rows)
    reference = [x for x in lengths if x < 120][::3][:300]  # a terse 'filtered' set, like the accuracy judge's
    matched = match_lengths(cols, reference, 300, seed=0)
    plain = [cols.lengths[i] for i in choose(cols, "random", k=300, seed=0)]
    assert len(matched.positions) == 300 and len(set(matched.positions)) == 300
    assert matched.ks_distance < 0.05
    assert ks_distance(plain, reference) > 0.4
    assert abs(matched.median_drawn - matched.median_reference) <= 0.1 * matched.median_reference


def test_matched_draw_is_seeded_and_random_within_a_length():
    rows = [{"instruction": f"q{i}", "output": "x" * (10 + i % 5)} for i in range(500)]
    cols = _columns(rows)
    ref = [10, 11, 12] * 10
    a, b = match_lengths(cols, ref, 30, seed=1), match_lengths(cols, ref, 30, seed=1)
    c = match_lengths(cols, ref, 30, seed=2)
    assert a.positions == b.positions and a.positions != c.positions
    assert a.ks_distance == 0 and a.off == 0


def test_a_thin_pool_takes_the_nearest_lengths_and_counts_them():
    rows = [{"instruction": f"q{i}", "output": "x" * n} for i, n in enumerate([5, 6, 100, 101, 102])]
    m = match_lengths(_columns(rows), [5, 5, 5], 3, seed=0)
    assert sorted(_columns(rows).lengths[i] for i in m.positions) == [5, 6, 100]
    assert m.off == 2  # 6 is more than 10% off 5; 100 is far off


def test_select_file_match_length_writes_the_draw_and_reports_it(tmp_path, alpaca_rows):
    rows = alpaca_rows[:1500]
    ratings = _ratings(rows, tmp_path / "r.jsonl")
    ref_rows = sorted(rows, key=lambda r: len(r["output"]))[:100]
    (tmp_path / "filtered.json").write_text(json.dumps(ref_rows))
    res = select_file(ratings, tmp_path / "m.json", "random", 100, match_length=tmp_path / "filtered.json")
    out = json.loads((tmp_path / "m.json").read_text())
    assert res["kept"] == 100 and len(out) == 100
    assert res["matched"]["ks_distance"] < 0.1
    assert set(out[0]) == {"instruction", "input", "output"}  # training format: no rating columns
    side = json.loads((tmp_path / "m.selection.json").read_text())
    assert side["matched"]["reference"].endswith("filtered.json") and len(side["kept_ids"]) == 100
    with pytest.raises(UserError, match="--match-length goes with --random"):
        select_file(ratings, tmp_path / "t.json", "top_k", 10, match_length=tmp_path / "filtered.json")


def test_a_reference_without_outputs_names_the_file_row_and_field(tmp_path):
    ratings = _ratings([{"instruction": "a", "output": "b"}], tmp_path / "r.jsonl")
    (tmp_path / "bad.json").write_text(json.dumps([{"instruction": "a", "output": "b"}, {"instruction": "c"}]))
    with pytest.raises(UserError, match=r"bad.json, row 2, field 'output'"):
        select_file(ratings, tmp_path / "m.json", "random", 1, match_length=tmp_path / "bad.json")


def test_the_cli_prints_the_match(tmp_path, alpaca_rows):
    from typer.testing import CliRunner

    from alpagasus.cli import app

    rows = random.Random(0).sample(alpaca_rows, 600)
    ratings = _ratings(rows, tmp_path / "r.jsonl")
    (tmp_path / "ref.json").write_text(json.dumps(rows[:50]))
    res = CliRunner().invoke(
        app,
        [
            "select",
            str(ratings),
            "-o",
            str(tmp_path / "m.jsonl"),
            "--random",
            "50",
            "--match-length",
            str(tmp_path / "ref.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "length-matched to" in res.output and "KS distance" in res.output
