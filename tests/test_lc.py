"""Length control (compare/lc.py) on constructed cases whose answer is known: a judge that only prefers longer
answers gives a length-controlled winning score near 1.0 while its raw score is far from it; a judge that prefers
one model whatever the lengths keeps it close to raw; the same for AlpacaEval's per-model win rates. Also the
terminal table and the run's final report show it beside the raw score."""

from __future__ import annotations

import json
import math
import random

import pytest
from typer.testing import CliRunner

from alpagasus.cli import app
from alpagasus.compare import Pair, aggregate
from alpagasus.compare.alpacaeval import Verdict, win_rates
from alpagasus.compare.lc import alpaca_eval_lc, fit_logistic, lc_winning_score
from alpagasus.records import Judgment

runner = CliRunner()
VERDICT = {"win": ((8, 5), (5, 8)), "tie": ((6, 6), (6, 6)), "lose": ((5, 8), (8, 5))}  # (ab, ba) scores


def lengths(n: int, seed: int) -> list[tuple[int, int]]:
    """Answer lengths (characters), log-normal as real answers are; A's answers longer on average."""
    rng = random.Random(seed)
    return [(int(math.exp(rng.gauss(6.8, 0.8))), int(math.exp(rng.gauss(6.2, 0.8)))) for _ in range(n)]


def judged(outcomes: list[str], lens: list[tuple[int, int]]) -> dict:
    """aggregate()'s "all" for questions with these answer lengths and these outcomes for A, both orders."""
    pairs = [Pair("t", str(i), f"q{i}", "a" * la, "b" * lb) for i, (la, lb) in enumerate(lens)]
    js = [
        Judgment("t", str(i), order, *VERDICT[o][k], "ok", "x")
        for i, o in enumerate(outcomes)
        for k, order in enumerate(("ab", "ba"))
    ]
    return aggregate(js, pairs)["all"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_judge_that_only_prefers_the_longer_answer_is_even_once_length_is_controlled(seed):
    lens = lengths(400, seed)
    rng = random.Random(seed)
    sd = 600.0
    # the longer answer wins with a probability that grows with the length difference, and only with it
    outcomes = ["win" if rng.random() < 1 / (1 + math.exp(-3 * math.tanh((a - b) / sd))) else "lose" for a, b in lens]
    s = judged(outcomes, lens)
    lc = s["length_controlled"]
    assert s["winning_score"] > 1.25  # raw: A "wins" by writing more
    assert abs(lc["winning_score"] - 1.0) < 0.15  # at equal lengths: even
    assert lc["winning_score_ci"][0] < 1.0 < lc["winning_score_ci"][1] or abs(lc["winning_score"] - 1) < 0.1
    assert lc["length_coef"] > 1.5 and lc["questions"] == 400


def test_a_deterministic_longer_answer_rule_is_brought_near_even():
    # "the answer at least twice as long wins, else a tie" (the length rule) and "the longer always wins"
    lens = lengths(400, 4)
    twice = ["win" if a >= 2 * b else "lose" if b >= 2 * a else "tie" for a, b in lens]
    longer = ["win" if a > b else "lose" if a < b else "tie" for a, b in lens]
    for outcomes in (twice, longer):
        s = judged(outcomes, lens)
        assert s["winning_score"] > 1.3
        assert abs(s["length_controlled"]["winning_score"] - 1.0) < 0.2


@pytest.mark.parametrize("seed", [1, 2])
def test_a_judge_that_prefers_one_model_whatever_the_length_keeps_its_score(seed):
    lens = lengths(400, seed)
    rng = random.Random(100 + seed)
    outcomes = rng.choices(["win", "tie", "lose"], [0.6, 0.2, 0.2], k=len(lens))
    s = judged(outcomes, lens)
    lc = s["length_controlled"]
    assert abs(lc["winning_score"] - s["winning_score"]) < 0.06
    assert lc["winning_score_ci"][0] > 1.0  # still beyond the noise


def test_equal_lengths_give_the_raw_score_and_unanimity_stays_unanimous():
    outcomes = [1.0] * 30 + [0.5] * 10 + [0.0] * 20
    same = lc_winning_score(outcomes, [100] * 60, [100] * 60)
    assert same.winning_score == pytest.approx(2 * sum(outcomes) / 60, abs=1e-3) and same.length_sd is None
    assert lc_winning_score([1.0] * 20, range(20), range(5, 25)).winning_score == pytest.approx(2.0, abs=1e-3)
    assert lc_winning_score([], [], []).winning_score is None


def test_the_interval_is_seeded():
    lens = lengths(120, 7)
    outcomes = [1.0 if i % 3 else 0.0 for i in range(120)]
    a = lc_winning_score(outcomes, [x for x, _ in lens], [y for _, y in lens])
    b = lc_winning_score(outcomes, [x for x, _ in lens], [y for _, y in lens])
    assert a.winning_score_ci == b.winning_score_ci and a.winning_score_ci[0] < a.winning_score < a.winning_score_ci[1]
    c = lc_winning_score(outcomes, [x for x, _ in lens], [y for _, y in lens], seed=1)
    assert c.winning_score_ci != a.winning_score_ci


def test_fit_logistic_recovers_known_coefficients():
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, 20000)
    X = np.column_stack([np.ones_like(x), x])
    y = (rng.random(20000) < 1 / (1 + np.exp(-(0.5 + 2.0 * x)))).astype(float)
    b = fit_logistic(X, y, penalty=np.array([0.0, 0.0]))[0]
    assert b == pytest.approx([0.5, 2.0], abs=0.1)


@pytest.mark.parametrize("seed", [0, 2])
def test_alpaca_eval_lc_ranks_models_by_quality_not_length(seed):
    # 6 models on 150 shared instructions; the judge sees each model's quality, the length difference to the
    # reference and the instruction's difficulty. m0-m2 are one quality writing longer and longer; m3-m5 are
    # better and as short as m0.
    rng = random.Random(seed)
    quality, mean_len = [0.0, 0.0, 0.0, 1.0, 1.5, 2.0], [400, 700, 1100, 400, 400, 400]
    difficulty = [rng.gauss(0, 1) for _ in range(150)]
    verdicts = []
    for m, (q, ml) in enumerate(zip(quality, mean_len)):
        for i, d in enumerate(difficulty):
            la, lb = int(ml * math.exp(rng.gauss(0, 0.5))), int(400 * math.exp(rng.gauss(0, 0.5)))
            eta = q + 2.0 * math.tanh((la - lb) / 500) - d
            pref = 2.0 if rng.random() < 1 / (1 + math.exp(-eta)) else 1.0
            verdicts.append(Verdict(f"instruction {i}", "r" * lb, "o" * la, "ref", f"m{m}", "judge", pref))
    raw = {m: r.win_rate for m, r in win_rates(verdicts).items()}
    lc = alpaca_eval_lc(verdicts)
    assert raw["m2"] > raw["m3"]  # raw: the verbose twin ranks above a better model
    assert max(lc["m0"], lc["m1"], lc["m2"]) < min(lc["m3"], lc["m4"], lc["m5"])
    assert lc["m2"] - lc["m0"] < 0.6 * (raw["m2"] - raw["m0"])  # much of the length gap is gone (not all)
    assert lc["m5"] > lc["m4"] > lc["m3"]


def test_compare_terminal_and_final_report_show_lc_beside_raw(tmp_path):
    from alpagasus.run.final_report import LC_NOTE, _html, _markdown

    # reviews in the official AlpaGasus format: A's answers grow longer and A wins the longer half
    rows = [
        {"question_id": str(i), "text": f"question {i}", "ma": "A " * (5 + 3 * i), "mb": "B " * 20} for i in range(16)
    ]
    ab, ba = tmp_path / "ma-mb-vicuna.json", tmp_path / "mb-ma-vicuna.json"
    ab.write_text(json.dumps([{**r, "review": "8 5" if i > 5 else "5 8"} for i, r in enumerate(rows)]))
    ba.write_text(json.dumps([{**r, "review": "5 8" if i > 5 else "8 5"} for i, r in enumerate(rows)]))
    out = tmp_path / "out"
    res = runner.invoke(
        app,
        [
            "compare",
            "--reviews-ab",
            str(ab),
            "--reviews-ba",
            str(ba),
            "--model-a",
            "ma",
            "--model-b",
            "mb",
            "-o",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    results = json.loads((out / "summary.json").read_text())["results"]
    lc = results["all"]["length_controlled"]
    assert lc["questions"] == 16 and len(lc["winning_score_ci"]) == 2 and lc["length_coef"] > 0
    assert results["all"]["winning_score"] == pytest.approx(1.25)
    assert "  LC " in res.output and f"{lc['winning_score']:.3f}" in res.output
    d = {
        "name": "x",
        "judge": "j",
        "selection_sizes": {},
        "train_time_s": {},
        "train_time_ratio": {},
        "comparisons": {"filtered vs random": {"dir": "c", "judge": "j", "results": results}},
    }
    md, page = _markdown(d), _html(d, tmp_path)
    assert "lc_winning_score" in md and f"{lc['winning_score']:.3f}" in md and LC_NOTE in md
    assert "lc_winning_score" in page and f"{lc['winning_score']:.3f}" in page
