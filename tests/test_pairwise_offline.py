"""The offline pairwise judge (judges/pointwise.py) on real answers of two fine-tuned models, and the winning
score's bootstrap interval (compare/interval.py) with its sentence about noise, in compare and the final report."""

import json
import math
from pathlib import Path

import pytest

from alpagasus.compare.aggregate import aggregate
from alpagasus.compare.files import compare_files
from alpagasus.compare.interval import bootstrap_interval, noise_sentence, winning_score
from alpagasus.judgecheck.cards import find_card
from alpagasus.judges import DEFAULT_PAIRWISE, default_pairwise_judge
from alpagasus.judges.pointwise import review_scores, verdict
from alpagasus.records import Judgment
from alpagasus.run.final_report import _html, _markdown, known_agreement
from conftest import SHARED_DATA

RESPONSES = SHARED_DATA / "responses"
FILES = [RESPONSES / f"{t}_alpagasus2_vs_alpaca2.json" for t in ("vicuna", "koala", "sinstruct")]
LIMIT = 6  # questions per test set: 18 questions, 36 answers, 36 judgments


@pytest.fixture(scope="module")
def real_compare(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp")
    rep = compare_files(
        FILES, out / "cmp", model_a="alpagasus2", model_b="alpaca2", store_path=out / "s.db", limit=LIMIT
    )  # no judge: the offline default
    return rep, out


def test_default_pairwise_judge_is_pointwise():
    assert default_pairwise_judge() == DEFAULT_PAIRWISE
    assert DEFAULT_PAIRWISE.startswith("pointwise:")


@pytest.mark.slow
def test_pointwise_judge_gives_verdicts_on_real_answers(real_compare):
    rep, out = real_compare
    summary = json.loads((out / "cmp" / "summary.json").read_text())
    assert summary["judge"].startswith("pointwise:alpaca-chatgpt-helpfulness@")
    a = summary["results"]["all"]
    assert a["questions"] == 3 * LIMIT
    assert a["unparsed"] == 0 and a["failed"] == 0 and a["judged"] == 3 * LIMIT  # a verdict for every question
    assert a["win"] + a["lose"] > 0  # not all ties
    # both orders ran, and a judge that scores each answer alone gives the same verdict in both
    rows = [json.loads(l) for l in (out / "cmp" / "outcomes.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 3 * LIMIT and {r["order"] for r in rows} == {"ab", "ba"}
    assert all(r["status"] == "ok" for r in rows)
    by_q: dict = {}
    for r in rows:
        by_q.setdefault((r["testset"], r["question_id"]), {})[r["order"]] = r
    for q in by_q.values():
        assert q["ab"]["order_result"] == q["ba"]["order_result"] == q["ab"]["outcome"]
        assert (q["ab"]["score_a"], q["ab"]["score_b"]) == (q["ba"]["score_a"], q["ba"]["score_b"])
    assert a["disagreement"] == 0
    # the summary says position bias could not be measured, and gives the interval
    assert "not measurable" in summary["position_bias"]
    assert a["winning_score_ci"][0] <= a["winning_score"] <= a["winning_score_ci"][1]
    assert a["noise"] == noise_sentence(a["winning_score"], a["winning_score_ci"], "alpagasus2", "alpaca2", a["judged"])
    assert "bootstrap" in summary["interval"]


def test_each_answer_scored_once(real_compare):
    rep, _ = real_compare
    # the judgments' reviews carry each answer's log-odds: the same number in both orders
    by_q: dict = {}
    for j in rep.result.judgments:
        by_q.setdefault((j.testset, j.question_id), {})[j.order] = j.raw
    for q in by_q.values():
        ab, ba = (logodds_in(q[o]) for o in ("ab", "ba"))
        assert ab[0] == ba[1] and ab[1] == ba[0]


def logodds_in(review: str) -> tuple[str, str]:
    """Assistant 1's and 2's log-odds as the review writes them."""
    text = review.split("Assistant 1 ", 1)[1]
    z1 = text.split(",", 1)[0]
    z2 = text.split("Assistant 2 ", 1)[1].split(";", 1)[0]
    return z1, z2


def test_pointwise_judge_requests_and_empty_answers(real_compare):
    from alpagasus import judges
    from alpagasus.judges.base import JudgeError
    from alpagasus.records import Request

    j = judges.get(DEFAULT_PAIRWISE, mode="generate")
    assert j.id.startswith(DEFAULT_PAIRWISE + "@") and j.id.endswith("/tie-odds-1.5")
    with pytest.raises(JudgeError, match="question/answer_1/answer_2"):
        j.score_sync([Request("k", "sys", "a prompt alone")])
    with pytest.raises(JudgeError, match="tie_odds"):
        judges.get(DEFAULT_PAIRWISE, tie_odds=0.5)
    q = "Name a primary colour."
    reps = j.score_sync(
        [
            Request("e", "", "", fields={"question": q, "answer_1": " ", "answer_2": "Red."}),
            Request("f", "", "", fields={"question": q, "answer_1": "", "answer_2": ""}),
        ]
    )
    assert all(r.text is None and r.pair is not None for r in reps)  # typed scores, no review text to parse
    s_empty, s_both = reps[0].pair, reps[1].pair
    assert s_empty.score_2 > s_empty.score_1  # an empty answer loses
    assert s_both.score_1 == s_both.score_2  # two empty answers tie


def test_tie_rule_and_review_scores():
    m = math.log(1.5)
    assert verdict(0.0, 0.3, m) == 0 and verdict(0.5, 0.0, m) == 1 and verdict(-2.0, -1.0, m) == 2
    s1, s2 = review_scores(0.0, 0.3, m)
    assert s1 == s2 and 1 <= s1 <= 10  # a tie is written as equal scores
    s1, s2 = review_scores(0.9, 0.0, m)
    assert s1 > s2
    # saturated log-odds still keep their order on the 1-10 scale, inside it
    for z1, z2, want in ((80.0, 70.0, 1), (-70.0, -80.0, 1), (70.0, 80.0, 2), (-80.0, -70.0, 2)):
        s1, s2 = review_scores(z1, z2, m)
        assert (s1 > s2) == (want == 1) and s1 != s2 and all(1 <= s <= 10 for s in (s1, s2))


def test_bootstrap_interval_known_inputs():
    assert bootstrap_interval([]) is None
    assert bootstrap_interval([1] * 30) == (2.0, 2.0)  # won everything: no spread
    points = [1] * 60 + [-1] * 40  # winning score 1.2; normal approximation: 1.2 +- 1.96 * sqrt(0.96 / 100)
    assert winning_score(points) == pytest.approx(1.2)
    lo, hi = bootstrap_interval(points)
    half = 1.96 * math.sqrt(0.96 / 100)
    assert lo == pytest.approx(1.2 - half, abs=0.03) and hi == pytest.approx(1.2 + half, abs=0.03)
    assert bootstrap_interval(points) == (lo, hi)  # seeded
    assert bootstrap_interval(points, seed=1) != (lo, hi)
    wide = bootstrap_interval([1] * 6 + [-1] * 4)  # the same score on 10 questions: a far wider interval
    assert wide[1] - wide[0] > 2 * (hi - lo)


def test_noise_sentence():
    assert "lies above 1.0" in noise_sentence(1.5, (1.2, 1.8), "gasus", "alpaca")
    assert "gasus beats alpaca" in noise_sentence(1.5, (1.2, 1.8), "gasus", "alpaca")
    assert "alpaca beats gasus" in noise_sentence(0.6, (0.4, 0.8), "gasus", "alpaca")
    s = noise_sentence(1.2, (0.9, 1.5))
    assert "contains 1.0" in s and "not distinguishable from a tie at this sample size" in s
    assert "no winning score" in noise_sentence(None, None)
    # a unanimous handful of questions has a zero-width interval: too few to tell, not "beyond the noise"
    assert bootstrap_interval([-1, -1]) == (0.0, 0.0)
    s = noise_sentence(0.0, (0.0, 0.0), "gasus", "alpaca", n=2)
    assert "too few" in s and "beats" not in s
    assert "alpaca beats gasus" in noise_sentence(0.0, (0.0, 0.0), "gasus", "alpaca", n=40)


def test_aggregate_and_final_report_carry_interval():
    js = []
    for i in range(40):  # A wins 30, ties 5, loses 5: clearly ahead
        s1, s2 = (8, 6) if i < 30 else (7, 7) if i < 35 else (5, 9)
        js += [
            Judgment("vicuna", str(i), "ab", s1, s2, "ok", "", "j"),
            Judgment("vicuna", str(i), "ba", s2, s1, "ok", "", "j"),
        ]
    res = aggregate(js)
    a = res["all"]
    assert a["winning_score"] == pytest.approx(1.625) and a["winning_score_ci"][0] > 1.0
    assert "lies above 1.0" in a["noise"]
    data = {
        "name": "t",
        "judge": "j",
        "selection_sizes": {"filtered": 2},
        "train_time_s": {},
        "train_time_ratio": {},
        "comparisons": {
            "filtered vs random": {
                "dir": "compare/x",
                "judge": "pointwise:p",
                "results": res,
                "judge_agreement": known_agreement("pointwise:p@1/tie"),
                "position_bias": "not measurable with this judge",
            }
        },
    }
    md = _markdown(data)
    assert f"{a['winning_score_ci'][0]:.3f}-{a['winning_score_ci'][1]:.3f}" in md
    assert "lies above 1.0" in md and "position bias: not measurable" in md
    assert "judge agreement with GPT-4: unknown" in md
    # the shipped default judge carries its judge card's figures beside its verdicts (judgecheck/cards)
    card = find_card("pointwise:alpaca-chatgpt-helpfulness", "pairwise")
    note = known_agreement("pointwise:alpaca-chatgpt-helpfulness@4b7c/tie-odds-1.5")
    assert card is not None and f"agrees {card.figures.agreement:.2f} three-way" in note
    assert "lies above 1.0" in _html(data, Path("/nonexistent"))
