"""Selection rules and the paper's score bins."""
import json

import pytest

from alpagasus.errors import UserError
from alpagasus.select import select_file
from alpagasus.select.rules import bin_counts, score_bin, select, training_rows


def rows():
    out = []
    for i, s in enumerate([5, 4.5, 4.7, 4.0, 3.2, 2.9, None, 4.5, 3.5, 1.0]):
        out.append({"instruction": f"i{i}", "input": "", "output": "x" * (i + 1), "cat": i, "id": f"id{i}",
                    "score": s, "status": "ok" if s is not None else "unparsed", "judge": "j", "raw": "r"})
    out.append({"id": None, "row": 99, "status": "invalid_input", "score": None, "explanation": "missing"})
    return out


@pytest.mark.parametrize("score,b", [(0, "<3"), (2.99, "<3"), (3, "3"), (3.49, "3"), (3.5, "3.5"), (4.2, "4"),
                                     (4.5, "4.5"), (4.99, "4.5"), (5, "5")])
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
