"""A pairwise verdict is typed (records.PairScores): a scorer returns it in Reply.pair, an LLM's review is parsed
into it, and both are stored alike (score = Assistant 1's, extra["score_2"] = Assistant 2's), through the real
engine, store and compare path."""

from __future__ import annotations

import pytest

from alpagasus.compare.pairwise import judge_pairs, stored_judgments
from alpagasus.compare.types import Pair
from alpagasus.engine import RunOptions
from alpagasus.engine.settle import settle
from alpagasus.engine.types import Item
from alpagasus.judges.base import JudgeError
from alpagasus.prompts import load_template
from alpagasus.prompts.parse import pair_parsed, parse_pair_reply, parse_pair_scores
from alpagasus.prompts.rubric import Rubric
from alpagasus.records import PairScores, Reply, Request
from alpagasus.store import Store
from fakes import FakeJudge

TEMPLATE = load_template("pairwise")
PAIRWISE = Rubric.pairwise(TEMPLATE)


def item(key: str = "q") -> Item:
    return Item(key, Request(key=key, system="", user="which is better?"))


def test_a_review_is_parsed_into_the_typed_verdict():
    pair, why = parse_pair_scores("8 6\nAssistant 1 is more precise.", 1, 10)
    assert pair == PairScores(8.0, 6.0, "Assistant 1 is more precise.") and why == ""
    assert parse_pair_scores("no numbers here", 1, 10) == (None, "no pair of scores found")
    assert parse_pair_scores("11 3", 1, 10)[0] is None  # outside the scale: no verdict, never clamped
    # the parsed review and the typed verdict take one shape in the store
    assert parse_pair_reply("8 6\nAssistant 1 is more precise.") == pair_parsed(pair)


def test_typed_scores_settle_like_a_parsed_review():
    typed, _ = settle(item(), Reply(pair=PairScores(8.0, 6.0, "why"), extra={"z": 1}), "j", PAIRWISE, RunOptions())
    text, _ = settle(item(), Reply(text="8 6\nwhy", extra={"z": 1}), "j", PAIRWISE, RunOptions())
    for r in (typed, text):
        assert (r.status, r.score, r.explanation, r.extra) == ("ok", 8.0, "why", {"z": 1, "score_2": 6.0})
    assert typed.raw is None and text.raw == "8 6\nwhy"  # no review text was made up for the typed verdict
    bad, delay = settle(item(), Reply(pair=PairScores(0.0, 11.0)), "j", PAIRWISE, RunOptions())
    assert delay is None and (bad.status, bad.score) == ("unparsed", None) and "outside the scale" in bad.explanation


def test_a_pair_scores_judge_goes_through_compare_end_to_end(tmp_path):
    """A judge that declares `pair_scores` (not mode generate) judges both orders; the store holds its scores."""

    def verdict(r: Request) -> Reply:
        f = r.fields or {}
        s1, s2 = (float(len(f[k])) for k in ("answer_1", "answer_2"))  # the longer answer wins
        return Reply(pair=PairScores(min(s1, 10.0), min(s2, 10.0), "length"))

    judge = FakeJudge(reply=verdict, mode="predict")
    pairs = [Pair("set", "1", "Name a colour.", "Red.", "Blue, like the sky.")]
    with Store(tmp_path / "s.sqlite") as store:
        with pytest.raises(JudgeError, match="pair_scores"):
            judge_pairs(pairs, judge, store, TEMPLATE)  # mode predict and no declaration: refused
        judge.pair_scores = True
        judging = judge_pairs(pairs, judge, store, TEMPLATE, RunOptions())
        got = stored_judgments(pairs, store, judge.id, TEMPLATE.version)
    assert judging.run.ok == 2 and sorted(judge.asked) == sorted(p.item_id(o) for p in pairs for o in ("ab", "ba"))
    by_order = {j.order: (j.score_1, j.score_2, j.status, j.raw) for j in got}
    assert by_order == {"ab": (4.0, 10.0, "ok", "length"), "ba": (10.0, 4.0, "ok", "length")}
