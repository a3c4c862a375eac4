"""No traceback on a damaged store or odd names (issue 22): a damaged store is refused with what to do and left
untouched, by `rate`, `select --diverse` and `report --selection` alike (and a newer store too); the report's
selection map survives invalid rows; `$` in a name is a dollar sign in every chart; a hand-edited sidecar cannot
put HTML in the report; final.html carries the report's Content-Security-Policy.

Real stores made by `rate`, real ratings files, the real CLI (in process), the real MiniLM encoder."""

from __future__ import annotations

import json
import random
import re
import shutil
import sqlite3

import pytest
from typer.testing import CliRunner

from alpagasus.cli import app
from alpagasus.records import Rating
from alpagasus.report import build_report
from alpagasus.select import select_file
from alpagasus.store import Store

JUDGE = "predictor:alpaca-claude-accuracy"


@pytest.fixture(scope="module")
def rated(tmp_path_factory, alpaca_rows):
    """A store written by `alpagasus rate` (12 real rows), padded with 3,000 more replies so it spans many
    b-tree pages (interior and leaf); its ratings file has one invalid row."""
    d = tmp_path_factory.mktemp("h22")
    data = d / "data.jsonl"
    rows = [r for r in alpaca_rows[:40] if r["output"].strip()][:12]
    data.write_text(
        "".join(json.dumps(r) + "\n" for r in rows[:6]) + "not json\n" + "".join(json.dumps(r) + "\n" for r in rows[6:])
    )
    store, ratings = d / "store.sqlite", d / "ratings.jsonl"
    res = CliRunner().invoke(
        app, ["rate", str(data), "-o", str(ratings), "--store", str(store), "--judge", JUDGE, "--skip-invalid"]
    )
    assert res.exit_code == 0, res.output
    with Store(store) as st:
        st.put_many(Rating(f"pad{i:05d}", "pad", "p", 3.0, "ok", raw="r" * (50 + i % 300)) for i in range(3000))
    return {"dir": d, "data": data, "store": store, "ratings": ratings}


def damaged_copies(store, tmp_path, n=8):
    """`n` copies of the store, each with 48 random bytes where SQLite reads its structure: the file's header,
    then the page header and cell pointers of b-tree pages drawn at random. (Bytes inside a stored value are
    data to SQLite: no check can see them.)"""
    data = store.read_bytes()
    page = int.from_bytes(data[16:18], "big")
    btree = [p for p in range(1, len(data) // page) if data[p * page] in (2, 5, 10, 13)]  # b-tree page types
    rng = random.Random(22)
    places = [0] + [p * page + rng.randrange(0, 8) for p in rng.sample(btree, n - 1)]
    for off in places:
        bad = tmp_path / f"bad{off}.sqlite"
        shutil.copy(store, bad)
        with open(bad, "r+b") as f:
            f.seek(off)
            f.write(rng.randbytes(48))
        yield off, bad


def refused(res, bad, before: bytes) -> None:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and not isinstance(res.exception, (sqlite3.Error, KeyError)), res.output
    msg = " ".join(res.output.split())  # the console may wrap
    assert f"error: the store {bad} is damaged" in msg and f'sqlite3 {bad} ".recover" | sqlite3' in msg, msg
    assert bad.read_bytes() == before  # nothing was written to it


@pytest.mark.slow
def test_rate_refuses_a_damaged_store_at_8_placements(rated, tmp_path):
    for _off, bad in damaged_copies(rated["store"], tmp_path):
        before = bad.read_bytes()
        res = CliRunner().invoke(
            app,
            [
                "rate",
                str(rated["data"]),
                "-o",
                str(tmp_path / "o.jsonl"),
                "--store",
                str(bad),
                "--judge",
                JUDGE,
                "--skip-invalid",
            ],
        )
        refused(res, bad, before)
        assert not (tmp_path / "o.jsonl").exists()


def newer(store, tmp_path):
    path = tmp_path / "newer.sqlite"
    shutil.copy(store, path)
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    return path


def test_select_diverse_and_report_selection_check_the_store_like_rate(rated, tmp_path):
    sel = tmp_path / "all.jsonl"
    assert CliRunner().invoke(app, ["select", str(rated["ratings"]), "--all", "-o", str(sel)]).exit_code == 0
    _, bad = list(damaged_copies(rated["store"], tmp_path, 2))[1]  # a damaged page (not the header)
    newer_store = newer(rated["store"], tmp_path)
    for command in (
        ["select", str(rated["ratings"]), "--top-k", "3", "--diverse", "-o", str(tmp_path / "d.jsonl")],
        ["report", str(rated["ratings"]), "-o", str(tmp_path / "rep"), "--selection", str(sel)],
    ):
        before = bad.read_bytes()
        refused(CliRunner().invoke(app, [*command, "--store", str(bad)]), bad, before)
        before = newer_store.read_bytes()
        res = CliRunner().invoke(app, [*command, "--store", str(newer_store)])
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
        assert "newer than this alpagasus reads" in " ".join(res.output.split())
        assert newer_store.read_bytes() == before


def test_report_selection_on_ratings_with_an_invalid_row(rated, tmp_path):
    """The invalid row has no id and no text: it is not on the map (was `KeyError: ''`)."""
    assert any(json.loads(x)["status"] == "invalid_input" for x in rated["ratings"].read_text().splitlines())
    sel = tmp_path / "top.jsonl"
    select_file(rated["ratings"], sel, "top_k", 4)
    s = build_report(rated["ratings"], tmp_path / "rep", selections=[sel], store=tmp_path / "emb.sqlite")
    assert s["selections"][0]["size"] == 4 and (tmp_path / "rep" / "selections.png").stat().st_size > 1000


NAMES = ["a$b$c", "$\\frac{$", "a$^$b"]  # the last two are not valid mathtext: matplotlib raised ValueError


def test_dollar_names_are_plain_text_in_every_chart(tmp_path):
    import numpy as np

    from alpagasus.compare.plots import capacity_bars, win_tie_lose
    from alpagasus.report.selections import plot_map

    counts = {"win": 3, "tie": 1, "lose": 2, "unparsed": 0}
    win_tie_lose({"vicuna": counts, "koala": counts, "all": counts}, NAMES[0], NAMES[1], tmp_path / "w.png")
    capacity_bars(
        {"reference": NAMES[1], "models": {n: {"skills": {"$math$": {"percent": 90.0}}} for n in NAMES}},
        tmp_path / "c.png",
    )
    rng = np.random.default_rng(0)
    png = plot_map({"points": rng.normal(size=(20, 8)), "kept": [[i % 2 == 0 for i in range(20)]] * 3}, NAMES)
    assert png[:4] == b"\x89PNG" and (tmp_path / "w.png").stat().st_size > 1000
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_a_hand_edited_sidecar_cannot_put_html_in_the_report(rated, tmp_path):
    sel = tmp_path / "top.jsonl"
    select_file(rated["ratings"], sel, "top_k", 3)
    side = tmp_path / "top.selection.json"
    s = json.loads(side.read_text())
    evil = "<script>alert(1)</script>"
    s.update(
        rule=evil,
        value="<img src=x onerror=alert(2)>",
        diverse={"method": "<b>m</b>"},
        duplicates=[
            {
                "row": evil,
                "instruction": evil,
                "twin_row": "<i>",
                "twin_instruction": "x",
                "jaccard": "<svg onload=alert(3)>",
            }
        ],
    )
    side.write_text(json.dumps(s))
    build_report(rated["ratings"], tmp_path / "rep", selections=[side], store=tmp_path / "emb.sqlite")
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "<script" not in page and "<img src=x" not in page and "<svg" not in page and "<b>m</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;svg onload=alert(3)&gt;" in page


def test_final_html_has_the_report_content_security_policy(tmp_path):
    from importlib import resources

    from alpagasus.report.figures import CSP
    from alpagasus.run.final_report import _html

    page = resources.files("alpagasus.report").joinpath("page.html").read_text("utf-8")
    assert f'<meta http-equiv="Content-Security-Policy" content="{CSP}">' in page
    d = {
        "name": "<script>x</script>",
        "judge": "j",
        "comparisons": {},
        "selection_sizes": {"<b>all</b>": 3},
        "train_time_s": {},
    }
    out = _html(d, tmp_path)
    assert re.search(r'<meta http-equiv="Content-Security-Policy" content="default-src \'none\'', out)
    assert "<script>x" not in out and "<b>all" not in out
