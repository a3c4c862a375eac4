"""Selection rules and the paper's score bins."""

import json

import pytest

from alpagasus.errors import UserError
from alpagasus.select import select_file
from alpagasus.select.rules import bin_counts, score_bin, select, training_rows


def rows():
    out = []
    for i, s in enumerate([5, 4.5, 4.7, 4.0, 3.2, 2.9, None, 4.5, 3.5, 1.0]):
        out.append(
            {
                "instruction": f"i{i}",
                "input": "",
                "output": "x" * (i + 1),
                "cat": i,
                "id": f"id{i}",
                "score": s,
                "status": "ok" if s is not None else "unparsed",
                "judge": "j",
                "raw": "r",
            }
        )
    out.append({"id": None, "row": 99, "status": "invalid_input", "score": None, "explanation": "missing"})
    return out


@pytest.mark.parametrize(
    "score,b",
    [(0, "<3"), (2.99, "<3"), (3, "3"), (3.49, "3"), (3.5, "3.5"), (4.2, "4"), (4.5, "4.5"), (4.99, "4.5"), (5, "5")],
)
def test_bins(score, b):
    assert score_bin(score) == b


def test_bin_counts_skip_unrated():
    assert bin_counts(rows()) == {"<3": 2, "3": 1, "3.5": 1, "4": 1, "4.5": 3, "5": 1}


def test_threshold_keeps_input_order():
    assert [r["instruction"] for r in select(rows(), "threshold", threshold=4.5)] == ["i0", "i1", "i2", "i7"]


def test_top_k_and_fraction():
    assert [r["instruction"] for r in select(rows(), "top_k", k=3)] == ["i0", "i1", "i2"]
    assert len(select(rows(), "keep_fraction", fraction=0.5)) == round(0.5 * 9)


def test_random_is_seeded_and_excludes_invalid():
    a, b = select(rows(), "random", k=4, seed=1), select(rows(), "random", k=4, seed=1)
    assert a == b and len(a) == 4 and all(r["status"] != "invalid_input" for r in a)


def test_longest_and_all():
    assert [r["instruction"] for r in select(rows(), "longest", k=2)] == ["i8", "i9"]
    assert len(select(rows(), "all")) == 10


def test_training_rows_drop_rating_columns():
    t = training_rows(select(rows(), "top_k", k=1))
    assert t == [{"instruction": "i0", "input": "", "output": "x", "cat": 0}]


def test_select_file(tmp_path):
    src = tmp_path / "r.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows()))
    res = select_file(src, tmp_path / "sel.json", "threshold", 4.5)
    assert res["kept"] == 4 and res["rows"] == 11 and res["unparsed"] == 1
    assert len(json.loads((tmp_path / "sel.json").read_text())) == 4
    with pytest.raises(UserError, match="needs a size"):
        select_file(src, tmp_path / "x.json", "top_k", None)


def test_exclude_flagged(tmp_path):
    rs = rows()
    rs[0]["flags"] = ["injection: asks for a score"]
    src = tmp_path / "r.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rs))
    assert select_file(src, tmp_path / "a.json", "threshold", 4.5)["kept"] == 4
    res = select_file(src, tmp_path / "b.json", "threshold", 4.5, exclude_flagged=True)
    assert res["kept"] == 3 and res["flagged"] == 1 and res["excluded_flagged"] == 1
    assert "i0" not in {r["instruction"] for r in json.loads((tmp_path / "b.json").read_text())}


# ---- the user's rows, as they were: clashing column names and empty outputs --------------------------------
def _users_file(tmp_path, alpaca_rows):
    """Real Alpaca rows with columns named like the rating's fields, plus the sample's real empty outputs."""
    rows = [dict(r) for r in alpaca_rows[:36]]
    for i, r in enumerate(rows[:30]):  # the usual columns of an exported dataset
        r.update(id=f"user-{i}", model="text-davinci-003", score=i % 5, status="draft", judge="human", raw=[i])
    empties = [dict(alpaca_rows[i]) for i in (1461, 3587, 6234, 8990)]  # empty outputs in the real sample
    assert all(not r["output"].strip() for r in empties)
    empties.append({"instruction": "  ", "input": "", "output": "An answer to nothing.", "model": "x"})
    src = tmp_path / "users.json"
    src.write_text(json.dumps(rows + empties))
    return src, rows, empties


@pytest.mark.slow
def test_rate_keeps_every_user_value_and_marks_empty_outputs(tmp_path, alpaca_rows):
    from alpagasus.rate import rate_file
    from alpagasus.ratings_file import RATING_PREFIX, rating_field

    src, rows, empties = _users_file(tmp_path, alpaca_rows)
    out = tmp_path / "ratings.jsonl"
    s = rate_file(src, out, store_path=tmp_path / "s.sqlite")  # no flags: the empty outputs do not stop it
    assert s.empty == len(empties) and s.run.to_judge == len(rows) and s.run.ok == len(rows)
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(got) == len(rows) + len(empties)
    for user, row in zip(rows + empties, got):
        assert {k: row[k] for k in user} == user  # every user value, under its own name
        rated = RATING_PREFIX + "status" in row
        assert rated == any(k in user for k in ("id", "model", "score", "status", "judge", "raw"))
    assert [rating_field(r, "status") for r in got[len(rows) :]] == ["empty"] * len(empties)
    assert "output is empty" in rating_field(got[len(rows)], "explanation")
    assert "instruction is empty" in rating_field(got[-1], "explanation")
    again = rate_file(src, tmp_path / "again.jsonl", store_path=tmp_path / "s.sqlite", rate_empty=True)
    assert again.run.to_judge == len(empties) and again.already_rated == len(rows)  # asked for: rated


@pytest.mark.slow
@pytest.mark.parametrize(
    "rule,value",
    [("threshold", 0.0), ("top_k", 100), ("keep_fraction", 1.0), ("random", 100), ("longest", 100), ("all", None)],
)
def test_every_rule_returns_the_users_rows_unchanged_and_never_an_empty_one(tmp_path, alpaca_rows, rule, value):
    from alpagasus.rate import rate_file

    src, rows, empties = _users_file(tmp_path, alpaca_rows)
    rate_file(src, tmp_path / "ratings.jsonl", store_path=tmp_path / "s.sqlite", rate_empty=True)  # even rated
    res = select_file(tmp_path / "ratings.jsonl", tmp_path / "train.json", rule, value)
    picked = json.loads((tmp_path / "train.json").read_text())
    assert res["kept"] == len(picked) == len(rows)  # every usable row, none of the empty ones
    assert picked == rows  # the user's rows exactly: same keys, same values, input order
