"""`alpagasus judge-check`: trivial judges on constructed items with known answers, the metrics on constructed
cases, sampling, the judge card (round trip, found and shown by compare and the final report), the run through
the engine and the store (a second run sends nothing) on the shared AlpacaEval verdicts with an offline judge,
the AlpaGasus reviews format and a labels file, a dry run against a real server that counts requests, and the
caveats that reach rate, select and report."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alpagasus.cli import app
from alpagasus.judgecheck import ReferenceSpec, judge_check, read_card, write_card
from alpagasus.judgecheck.baselines import pairwise_verdicts, rating_scores
from alpagasus.judgecheck.cards import caveat, find_card, judge_name
from alpagasus.judgecheck.caveats import domain_note, selection_length_note
from alpagasus.judgecheck.metrics import kendall, pairwise_figures, precision_at_kept, rating_figures, roc_auc, spearman
from alpagasus.judgecheck.references import PairItem, RatingItem, read_alpacaeval, sample
from alpagasus.records import Example, Reply
from conftest import SHARED_DATA
from fakes import FakeJudge

PREFS = SHARED_DATA / "preferences" / "alpaca_eval_alpaca_eval_gpt4_dev.jsonl.gz"
runner = CliRunner()


def _answers(user: str) -> tuple[str, str]:
    a1 = user.split("[The Start of Assistant 1's Answer]\n", 1)[1].split("\n\n[The End of Assistant 1's")[0]
    a2 = user.split("[The Start of Assistant 2's Answer]\n", 1)[1].split("\n\n[The End of Assistant 2's")[0]
    return a1, a2


def _marked(r) -> Reply:
    """A pairwise judge reading "(q=N)" in each answer; "[first]" in a question makes it always pick Assistant 1
    (a position-biased judge)."""
    a1, a2 = _answers(r.user)
    q = lambda a: int(a.split("(q=")[1].split(")")[0]) if "(q=" in a else 5  # noqa: E731
    s1, s2 = (9, 2) if "[first]" in r.user else (q(a1), q(a2))
    return Reply(text=f"{s1} {s2}\nCompared.", model="marked", tokens_in=len(r.user) // 4, tokens_out=4)


FakeJudge.register("marked", reply=_marked, mode="generate", model="marked")
# a rating judge: 5 for an output holding "good", else 1 + length / 1000
FakeJudge.register(
    "rater",
    mode="predict",
    reply=lambda r: Reply(
        score=5.0 if "good" in r.example.output else 1.0 + len(r.example.output) / 1000, model="rater"
    ),
)


@pytest.fixture(autouse=True)
def _reset():
    FakeJudge.reset()


def _item(i: int, a1: str, a2: str, ref: str | None, group: str = "m", pref: float | None = None) -> PairItem:
    return PairItem(
        f"k{i}",
        f"q{i}",
        a1,
        a2,
        ref,
        pref if pref is not None else {"1": 0.0, "2": 1.0, "tie": 0.5, None: None}[ref],
        group,
    )


# ---- trivial judges on planted items -----------------------------------------------------------------------
def test_longer_wins_gets_exactly_the_planted_share():
    # 7 items where the reference picked the longer answer, 3 where it picked the shorter
    items = (
        [_item(i, "x" * 50, "y" * 10, "1") for i in range(4)]
        + [_item(i, "x" * 10, "y" * 50, "2") for i in range(4, 7)]
        + [_item(i, "x" * 10, "y" * 50, "1") for i in range(7, 10)]
    )
    base = {n: pairwise_figures(items, v) for n, v in pairwise_verdicts(items).items()}
    assert base["longer wins"].agreement == 0.7 and base["longer wins"].prefers_longer == 1.0
    assert base["shorter wins"].agreement == 0.3 and base["shorter wins"].prefers_longer == 0.0
    assert base["always first"].agreement == 0.7  # the reference picked answer 1 on items 0-3 and 7-9
    coin = pairwise_verdicts(items)["coin"]
    assert coin == pairwise_verdicts(items)["coin"] and set(coin.values()) <= {"1", "2"}  # seeded, never a tie
    ref = pairwise_figures(items, {it.key: it.reference for it in items})
    assert ref.agreement == 1.0 and ref.prefers_longer == 0.7


def test_rating_baselines_rank_by_length():
    items = [RatingItem(Example.alpaca(f"i{n}", "", "w" * n), n > 50) for n in range(1, 101)]
    base = {n: rating_figures(items, s) for n, s in rating_scores(items).items()}
    assert base["longer"].roc_auc == 1.0 and base["shorter"].roc_auc == 0.0
    assert base["longer"].precision_at_kept == 1.0 and base["longer"].length_spearman == 1.0
    assert base["longer"].kept_fraction == 0.5 and 0.3 < base["coin"].roc_auc < 0.7


# ---- metrics on constructed cases --------------------------------------------------------------------------
def test_pairwise_figures_agreement_ties_position_bias_and_length():
    items = [
        _item(0, "aaaa", "b", "1"),
        _item(1, "a", "bbbb", "2"),
        _item(2, "a", "bb", "tie"),
        _item(3, "aa", "b", "2"),
        _item(4, "a", "b", None),
    ]
    verdicts = {"k0": "1", "k1": "tie", "k2": "tie", "k3": "1", "k4": "1"}
    f = pairwise_figures(items, verdicts, disagree={"k0": False, "k1": True, "k2": False, "k3": True})
    assert f.items == 4 and f.judged == 4 and f.decided == 3
    assert f.agreement == 0.5  # k0 and k2
    assert f.agreement_decided == pytest.approx(1 / 3, abs=1e-4)  # k0 of k0, k1, k3 (a tie on k1 is a miss)
    assert f.ties == 0.5 and f.position_bias == 0.5
    assert f.prefers_longer == 1.0  # decided: k0 (longer 1) and k3 (longer 1)
    assert f.spearman is None and f.models == 1


def test_win_rate_rank_correlation_over_models():
    # four judged models whose reference win rates are 0.0, 0.25, 0.5, 1.0 (by the soft preference)
    items = []
    for g, prefs in {"w": [0.0, 0.0], "x": [0.0, 0.5], "y": [0.5, 0.5], "z": [1.0, 1.0]}.items():
        for p in prefs:
            items.append(_item(len(items), "a", "b", "2" if p > 0.5 else "1" if p < 0.5 else "tie", g, p))
    same = {it.key: it.reference for it in items}
    flipped = {it.key: {"1": "2", "2": "1", "tie": "tie"}[it.reference] for it in items}
    f = pairwise_figures(items, same)
    assert f.models == 4 and f.spearman == 1.0 and f.kendall == 1.0
    assert f.win_rates == {"w": 0.0, "x": 0.25, "y": 0.5, "z": 1.0}
    g = pairwise_figures(items, flipped)
    assert g.spearman == -1.0 and g.kendall == -1.0


def test_rank_metrics_by_hand():
    assert roc_auc([1, 2, 3, 4], [False, False, True, True]) == 1.0
    assert roc_auc([1, 1, 1, 1], [False, True, False, True]) == 0.5
    assert roc_auc([4, 1, 3, 2], [False, True, True, False]) == 0.25  # positive > negative: 3>2 only, of 4 pairs
    assert roc_auc([1, 2], [True, True]) is None
    assert precision_at_kept([0.9, 0.8, 0.1, 0.7], [True, False, False, True]) == 0.5
    assert spearman([1, 2, 3], [3, 2, 1]) == -1.0 and kendall([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(
        0.6667, abs=1e-4
    )


def test_stratified_sample_keeps_each_models_share_and_is_seeded():
    items = [_item(i, "a", "b", "1", group="big" if i < 60 else "small") for i in range(90)]
    s = sample(items, 30, seed=3)
    assert sum(it.group == "big" for it in s) == 20 and sum(it.group == "small" for it in s) == 10
    assert s == sample(items, 30, seed=3) and s != sample(items, 30, seed=4)
    assert [int(it.key[1:]) for it in s] == sorted(int(it.key[1:]) for it in s)  # input order kept
    u = sample(items, 30, seed=3, uniform=True)
    assert len(u) == 30 and u != s
    ratings = [RatingItem(Example.alpaca(f"i{n}", "", f"o{n}"), n % 10 == 0) for n in range(100)]
    assert sum(it.decision for it in sample(ratings, 50, seed=0)) == 5  # the positive rate is kept


# ---- the judge card ------------------------------------------------------------------------------------------
def _card(tmp_path: Path, judge: str = "marked:v1"):
    items = [_item(i, "a" * (i + 1), "b" * 5, "1" if i % 2 else "2", group=f"g{i % 3}") for i in range(12)]
    qs = [
        {
            "instruction": it.question,
            "output_1": it.answer_1 + " (q=8)",
            "output_2": it.answer_2 + " (q=3)",
            "generator_1": "base",
            "generator_2": it.group,
            "annotator": "planted",
            "preference": 1 if i % 2 else 2,
        }
        for i, it in enumerate(items)
    ]
    ref = tmp_path / "ann.json"
    ref.write_text(json.dumps(qs))
    return judge_check(
        judge,
        ReferenceSpec([str(ref)]),
        store_path=tmp_path / "s.sqlite",
        command="alpagasus judge-check --judge marked:v1",
    )


def test_card_round_trips_and_is_found_by_name(tmp_path, monkeypatch):
    card = _card(tmp_path)
    assert card.judge_id == "marked:v1#generate" and card.kind == "pairwise"
    assert card.figures.agreement == 0.5 and card.figures.position_bias == 0.0  # always answer 1, both orders
    path = write_card(card, tmp_path / "cards" / "marked.json")
    again = read_card(path)
    assert again == card and again.baselines["longer wins"] == card.baselines["longer wins"]
    monkeypatch.setenv("ALPAGASUS_CARDS", str(tmp_path / "cards"))
    assert find_card("marked:v1#generate", "pairwise") == card and find_card("marked:v1", "rating") is None
    assert find_card("marked:v1@other") == card and judge_name("pointwise:x@ab/tie-odds-1.5") == "pointwise:x"
    line = caveat("marked:v1#generate")
    assert "agrees 0.50 three-way" in line and "12 planted pairs" in line


def test_compare_and_final_report_show_the_card(tmp_path, monkeypatch):
    from alpagasus.run.final_report import known_agreement

    card = _card(tmp_path)
    write_card(card, tmp_path / "cards" / "marked.json")
    monkeypatch.setenv("ALPAGASUS_CARDS", str(tmp_path / "cards"))
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for path, q in ((a, 8), (b, 3)):
        path.write_text(
            "".join(
                json.dumps({"question_id": i, "question": f"Q{i}?", "answer": f"ans {i} (q={q})"}) + "\n"
                for i in range(4)
            )
        )
    res = runner.invoke(
        app,
        [
            "compare",
            str(a),
            str(b),
            "-o",
            str(tmp_path / "cmp"),
            "--judge",
            "marked:v1",
            "--store",
            str(tmp_path / "s.sqlite"),
            "--testset",
            "vicuna",
        ],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "cmp" / "summary.json").read_text())
    assert "agrees 0.50 three-way" in summary["judge_note"] and "judge card" in summary["judge_note"]
    assert "judge: marked:v1" in res.output.replace("\n", " ")
    assert "agrees 0.50 three-way" in known_agreement("marked:v1#generate")
    # a judge with no card: the hand-written note, never a figure
    assert known_agreement("openai:some-model#generate").startswith("unknown")


# ---- end to end --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_offline_judge_on_the_shared_preferences_end_to_end(tmp_path):
    out = tmp_path / "card.json"
    args = [
        "judge-check",
        "--judge",
        "pointwise:alpaca-claude-accuracy",
        "--reference",
        str(PREFS),
        "--sample",
        "40",
        "--seed",
        "1",
        "-o",
        str(out),
        "--store",
        str(tmp_path / "s.sqlite"),
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    card = read_card(out)
    assert card.reference.items == 40 and card.sample.method == "stratified by judged model"
    assert card.figures.judged == 40 and card.figures.position_bias is None  # scores each answer alone
    # both orders of each distinct pair (two models' identical answers are one prompt, judged once)
    assert card.figures.models >= 30 and 70 <= card.requests["sent"] <= 80
    assert set(card.baselines) == {"longer wins", "shorter wins", "always first", "coin"}
    assert card.reference.annotator == "alpaca_eval_gpt4" and card.command.startswith("alpagasus judge-check")
    assert "longer wins" in res.output and "agrees" in res.output
    res2 = runner.invoke(app, args)  # everything is in the store: nothing is asked again
    assert res2.exit_code == 0 and read_card(out).requests["sent"] == 0
    assert read_card(out).figures == card.figures


def test_alpacaeval_reader_draws_and_no_verdicts(tmp_path):
    rows = [
        {"instruction": "q", "output_1": "a", "output_2": "b", "generator_2": "m", "preference": p}
        for p in (1, 2, 1.5, 0, None, 1.8)
    ]
    for i, r in enumerate(rows):
        r["instruction"] += str(i)
    f = tmp_path / "a.jsonl.gz"
    with gzip.open(f, "wt") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows))
    ref = read_alpacaeval([f])
    assert [p.reference for p in ref.pairs] == ["1", "2", "tie", "tie", "2"] and ref.skipped == {"no verdict": 1}
    assert ref.pairs[-1].preference == pytest.approx(0.8)


def test_reviews_reference_and_a_judge_with_position_bias(tmp_path):
    ab, ba = [], []
    for i in range(6):
        q = f"Question {i}?" + (" [first]" if i >= 3 else "")
        ga, al = f"gasus answer {i} (q=8)", f"alpaca answer {i} (q=4)"
        ab.append({"question_id": i, "text": q, "gasus": ga, "alpaca": al, "review": "8 4\nA1 better."})
        ba.append({"question_id": i, "text": q, "gasus": ga, "alpaca": al, "review": "4 8\nA2 better."})
    (tmp_path / "ab.json").write_text(json.dumps(ab))
    (tmp_path / "ba.json").write_text(json.dumps(ba))
    spec = ReferenceSpec(
        reviews_ab=[str(tmp_path / "ab.json")],
        reviews_ba=[str(tmp_path / "ba.json")],
        model_a="gasus",
        model_b="alpaca",
    )
    card = judge_check("marked:v1", spec, store_path=tmp_path / "s.sqlite")
    f = card.figures
    # questions 0-2: the judge reads the markers (agrees); 3-5: it always picks Assistant 1, so its orders
    # disagree and the question is a tie
    assert f.judged == 6 and f.agreement == 0.5 and f.position_bias == 0.5 and f.ties == 0.5
    assert card.reference.format == "alpagasus-reviews" and card.figures.spearman is None


def test_rating_reference_from_a_labels_file(tmp_path):
    rng = random.Random(0)
    rows = [
        {
            "instruction": f"Task {i}",
            "input": "",
            "output": ("good " if i % 3 == 0 else "") + "x" * rng.randint(5, 400),
            "keep": i % 3 == 0,
            "uniform": i < 60,
        }
        for i in range(90)
    ]
    f = tmp_path / "labels.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    card = judge_check(
        "rater:v1", ReferenceSpec([str(f)], decision="keep", uniform_column="uniform"), store_path=tmp_path / "s.sqlite"
    )
    assert card.kind == "rating" and card.reference.items == 60 and card.figures.rated == 60
    assert (
        card.figures.roc_auc == 1.0
        and card.figures.precision_at_kept == 1.0
        and card.figures.kept_fraction == pytest.approx(20 / 60, abs=1e-4)
    )
    assert set(card.baselines) == {"longer", "shorter", "coin"} and card.requests["sent"] == 60
    again = judge_check(
        "rater:v1", ReferenceSpec([str(f)], decision="keep", uniform_column="uniform"), store_path=tmp_path / "s.sqlite"
    )
    assert again.requests["sent"] == 0 and again.figures == card.figures


def test_dry_run_of_an_openai_judge_sends_nothing(tmp_path, tiny_model):
    from alpagasus.serve import ModelRunner, start_server

    class Counting(ModelRunner):
        calls = 0

        def complete(self, *args, **kwargs) -> dict:  # every chat request the server answers
            type(self).calls += 1
            return super().complete(*args, **kwargs)

    from alpagasus.engine import RunOptions

    short = tmp_path / "short.json"  # short answers: the tiny model's context holds the prompt
    short.write_text(
        json.dumps(
            [
                {
                    "instruction": f"Name a colour {i}.",
                    "output_1": "Blue.",
                    "output_2": "Red, I think.",
                    "generator_2": "m",
                    "preference": 2,
                }
                for i in range(3)
            ]
        )
    )
    with start_server(Counting(str(tiny_model), name="tiny")) as url:
        est = judge_check(
            "openai:tiny",
            ReferenceSpec([str(PREFS)]),
            n=5,
            seed=0,
            dry_run=True,
            judge_options={"base_url": url},
            store_path=tmp_path / "s.sqlite",
            options=RunOptions(price_in=2.5, price_out=10),
        )
        assert Counting.calls == 0
        assert est["requests"] == 10 and est["items"] == 5 and est["tokens_in"] > 0 and est["cost"] > 0
        card = judge_check(
            "openai:tiny",
            ReferenceSpec([str(short)]),
            n=2,
            seed=0,
            judge_options={"base_url": url},
            options=RunOptions(max_tokens=4, max_reasks=0),
            store_path=tmp_path / "s.sqlite",
        )
        assert Counting.calls == 4 and card.requests["sent"] == 4  # both orders of 2 pairs, really asked
        est = judge_check(
            "openai:tiny",
            ReferenceSpec([str(short)]),
            n=2,
            seed=0,
            dry_run=True,
            judge_options={"base_url": url},
            store_path=tmp_path / "s.sqlite",
        )
        assert est["requests"] == 0 and est["already_in_store"] == 4 and Counting.calls == 4


# ---- caveats in the other outputs ----------------------------------------------------------------------------
def test_rate_says_the_predictor_knows_alpaca_only():
    dolly = SHARED_DATA / "alpaca" / "dolly_filtered_3k.json"
    note = domain_note("predictor:alpaca-claude-accuracy@abc", dolly)
    assert note and "trained on Alpaca rows only" in note
    assert domain_note("predictor:alpaca-claude-accuracy@abc", SHARED_DATA / "alpaca" / "alpaca_random_9k.json") is None
    assert domain_note("openai:gpt-4o#generate", dolly) is None


def test_select_top_k_warns_when_it_keeps_short_answers(tmp_path):
    from alpagasus.select import select_file
    from alpagasus.select.summary import summary_lines

    rows = [
        {
            "instruction": f"t{i}",
            "input": "",
            "output": "y" * (20 if i < 10 else 300),
            "id": f"id{i}",
            "score": 5.0 if i < 10 else 2.0,
            "status": "ok",
            "judge": "j",
        }
        for i in range(40)
    ]
    f = tmp_path / "r.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = select_file(f, tmp_path / "kept.json", "top_k", value=10)
    lines = summary_lines(res)
    assert any("median response is 20 characters against 300" in x and "shorter" in x for x in lines)
    res = select_file(f, tmp_path / "all.json", "top_k", value=40)
    assert selection_length_note(res) is None


def test_report_reads_a_strong_length_preference(tmp_path):
    from alpagasus.report import build_report

    rows = [
        {
            "instruction": f"t{i}",
            "input": "",
            "output": "z" * (10 + 20 * i),
            "score": 5.0 - i * 0.1,
            "status": "ok",
            "judge": "predictor:alpaca-claude-accuracy@x",
            "prompt_version": "p",
        }
        for i in range(30)
    ]
    f = tmp_path / "r.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = build_report(f, tmp_path / "rep")
    assert "strongly prefers shorter answers" in s["length"]["reading"]
    assert s["judge_note"].startswith("predictor:alpaca-claude-accuracy")
    assert "strongly prefers shorter answers" in (tmp_path / "rep" / "index.html").read_text()
