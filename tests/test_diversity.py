"""Diversity-aware selection (DEITA walk, facility location), near-duplicate removal, stored embeddings, the
selection sidecar and the report's selections section: real Alpaca rows, the real MiniLM encoder."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from alpagasus.cli import app
from alpagasus.errors import UserError
from alpagasus.records import content_id
from alpagasus.report import build_report
from alpagasus.select import select_file
from alpagasus.select.dedup import find_duplicates, normalise
from alpagasus.select.diverse import DeitaWalk, facility_location, redundancy
from alpagasus.select.embed import ENCODER_KEY, embedding_text, stored_count
from alpagasus.store import Store

N = 36  # real rows in the ratings file: small, so encoding stays a few seconds


def near_copy(row: dict, drop: int = 1) -> dict:
    """A word dropped from the response, the case and the spacing changed."""
    words = row["output"].split(" ")
    del words[min(drop, len(words) - 1)]
    return {**row, "instruction": row["instruction"].upper() + "  ", "output": "  ".join(words)}


def ratings_row(row: dict, i: int, score: float) -> dict:
    r = {k: row[k] for k in ("instruction", "input", "output")}
    return {
        **r,
        "id": content_id(r["instruction"], r["input"], r["output"]),
        "row": i,
        "score": score,
        "status": "ok",
        "judge": "test",
    }


@pytest.fixture(scope="module")
def rated(tmp_path_factory, alpaca_rows):
    """N real rows with descending scores, then a near copy of the best row scored just below it (so a
    score-first walk meets it second), then a near copy of row 5 scored above its original."""
    d = tmp_path_factory.mktemp("div")
    real = [r for r in alpaca_rows[:200] if len(r["output"].split()) > 12][:N]
    rows = [ratings_row(r, i, 4.9 - 0.05 * i) for i, r in enumerate(real)]
    rows.insert(1, ratings_row(near_copy(real[0]), N, 4.88))
    rows.append(ratings_row(near_copy(real[5], 3), N + 1, 5.0))
    path = d / "ratings.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"dir": d, "path": path, "rows": rows, "store": d / "store.sqlite"}


def test_deita_walk_skips_near_rows_and_fills_a_short_budget():
    v = np.array([[1, 0], [0.99, 0.141], [0, 1], [0.6, 0.8]], dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    walk = DeitaWalk(budget=3, threshold=0.9, dim=2)
    walk.feed([10, 11, 12, 13], v)
    assert walk.kept == [10, 12, 13] and walk.skipped == [11]
    short = DeitaWalk(budget=4, threshold=0.5, dim=2)
    short.feed([10, 11, 12, 13], v)  # 13 is within 0.8 of both 10 and 12
    assert short.kept == [10, 12] and short.fill() == 2 and short.kept == [10, 12, 11, 13]


def test_facility_location_covers_each_cluster():
    rng = np.random.default_rng(0)
    centres = np.eye(8, dtype=np.float32)[:3]
    pts = np.vstack([c + 0.05 * rng.standard_normal((20, 8)) for c in centres]).astype(np.float32)
    pts /= np.linalg.norm(pts, axis=1, keepdims=True)
    chosen = facility_location(pts, 3)
    assert sorted(i // 20 for i in chosen) == [0, 1, 2]
    assert redundancy(pts[chosen]) < 0.2 < redundancy(pts[:20])


def test_dedup_finds_planted_copies_and_keeps_the_best_rated(alpaca_rows):
    real = alpaca_rows[:120]
    copies = [near_copy(real[i]) for i in (3, 40, 77)]
    texts = [(i, embedding_text(r), 3.0) for i, r in enumerate(real)]
    texts += [
        (120, embedding_text(copies[0]), 4.0),
        (121, embedding_text(copies[1]), 2.0),
        (122, embedding_text(copies[2]), 3.0),
    ]
    d = find_duplicates(texts)
    # the better-rated copy survives; on a tie, the first in the file
    assert d.removed.keys() == {3, 121, 122}
    assert d.removed[3][0] == 120 and d.removed[121][0] == 40 and d.removed[122][0] == 77
    assert normalise("Hello,  WORLD!") == "hello world"


@pytest.mark.slow
def test_select_diverse_skips_the_near_copy_and_stores_embeddings(rated):
    out = rated["dir"] / "div.jsonl"
    res = select_file(rated["path"], out, "top_k", 5, diverse="deita", store=rated["store"])
    kept = [json.loads(line)["instruction"] for line in out.read_text().splitlines()]
    plain = rated["dir"] / "top.jsonl"
    select_file(rated["path"], plain, "top_k", 5)
    top = [json.loads(line)["instruction"] for line in plain.read_text().splitlines()]
    copy_instruction = rated["rows"][1]["instruction"]
    assert copy_instruction in top and copy_instruction not in kept and len(kept) == 5
    assert res["diverse"]["skipped"] >= 1 and res["diverse"]["embedded"] == len(rated["rows"])
    with Store(rated["store"]) as st:
        assert stored_count(st, ENCODER_KEY) == len(rated["rows"])
    again = select_file(rated["path"], out, "top_k", 5, diverse="deita", store=rated["store"])
    assert again["diverse"]["embedded"] == 0  # computed once per content id
    side = json.loads((rated["dir"] / "div.selection.json").read_text())
    assert len(side["kept_ids"]) == 5 and side["diverse"]["method"] == "deita"
    fac = select_file(rated["path"], rated["dir"] / "fac.jsonl", "top_k", 4, diverse="facility", store=rated["store"])
    assert fac["kept"] == 4 and fac["diverse"]["embedded"] == 0


def test_select_dedup_cli_lists_removed_rows_and_twins(rated):
    out = rated["dir"] / "dedup.jsonl"
    res = CliRunner().invoke(app, ["select", str(rated["path"]), "--all", "--dedup", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "near-duplicates removed: 2" in res.output
    side = json.loads((rated["dir"] / "dedup.selection.json").read_text())
    # the copy on row 2 (4.88) loses to row 1 (4.9); the last row (a copy scored 5.0) beats its original, row 7
    pairs = {(d["row"], d["twin_row"]) for d in side["duplicates"]}
    assert pairs == {(2, 1), (7, len(rated["rows"]))}
    assert len(out.read_text().splitlines()) == len(rated["rows"]) - 2


def test_diverse_needs_a_score_rule(rated):
    with pytest.raises(UserError, match="score rule"):
        select_file(rated["path"], rated["dir"] / "x.jsonl", "random", 5, diverse="deita", store=rated["store"])
    with pytest.raises(UserError, match="needs a size"):
        select_file(rated["path"], rated["dir"] / "x.jsonl", "threshold", 4.0, diverse="facility", store=rated["store"])


def test_report_compares_selections(rated):
    for name, kw in (("r_top", {}), ("r_div", {"diverse": "deita", "similarity": 0.3})):
        select_file(rated["path"], rated["dir"] / f"{name}.jsonl", "top_k", 8, store=rated["store"], **kw)
    out = rated["dir"] / "report"
    s = build_report(
        rated["path"],
        out,
        selections=[rated["dir"] / "r_top.jsonl", rated["dir"] / "r_div.selection.json"],
        store=rated["store"],
    )
    top, div = s["selections"]
    assert top["size"] == div["size"] == 8
    assert div["redundancy"] < top["redundancy"] and top["mean_score"] > div["mean_score"]
    assert (out / "selections.png").stat().st_size > 1000
    assert 'id="selections"' in (out / "index.html").read_text()


def test_recipe_arms_have_the_filtered_size(rated):
    from alpagasus.run.recipe import BASELINES
    from alpagasus.select.arms import select_arm

    assert {"diverse", "ifd", "dedup"} <= set(BASELINES)
    sizes = {
        name: select_arm(name, rated["path"], rated["dir"] / f"arm_{name}.json", 9, {"seed": 0}, store=rated["store"])[
            "kept"
        ]
        for name in ("diverse", "dedup")
    }
    assert sizes == {"diverse": 9, "dedup": 9}
    dedup_rows = json.loads((rated["dir"] / "arm_dedup.json").read_text())
    assert rated["rows"][1]["instruction"] not in [r["instruction"] for r in dedup_rows]  # the copy is out
