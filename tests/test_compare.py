"""`alpagasus compare`: the paper's two-order rule, the pairwise parser on real-shaped replies, judging through
the store with a deterministic judge, a random LM and the embedded SmolLM2, re-aggregating official review
files, capacity per skill, and mismatch reports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alpagasus import judges
from alpagasus.cli import app
from alpagasus.compare import Pair, aggregate, combine, compare, judge_pairs, match, order_result, reaggregate
from alpagasus.compare.inputs import read_answers, read_reviews, read_skills, read_two_columns
from alpagasus.engine import RunOptions
from alpagasus.prompts import load_template
from alpagasus.prompts.parse import parse_pair, parse_pair_reply
from alpagasus.records import Judgment, Reply
from alpagasus.store import Store
from conftest import SHARED_DATA
from fakes import FakeJudge

RESPONSES = SHARED_DATA / "responses"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
runner = CliRunner()


# ---- a deterministic judge: scores written inside the answers ("(q=7)"), else by length ----------------------
def review(r) -> Reply:
    """Replies "S1 S2\\nexplanation" where each score is the answer's "(q=N)" marker (or 1 + len // 200, capped
    at 10); an answer holding "[garbage]" gets a reply without scores."""
    user = r.user
    a1 = user.split("[The Start of Assistant 1's Answer]\n", 1)[1].split("\n\n[The End of Assistant 1's")[0]
    a2 = user.split("[The Start of Assistant 2's Answer]\n", 1)[1].split("\n\n[The End of Assistant 2's")[0]
    text = (
        "Both assistants tried their best."
        if "[garbage]" in a1 + a2
        else f"{_quality(a1)} {_quality(a2)}\nAssistant 1 and Assistant 2 were compared."
    )
    return Reply(text=text, model="fixed", tokens_in=len(user) // 4, tokens_out=6)


def _quality(answer: str) -> int:
    m = re.search(r"\(q=(\d+)\)", answer)
    return int(m.group(1)) if m else min(10, 1 + len(answer) // 200)


# "fixed:NAME" builds a FakeJudge with id "fixed:NAME#generate"; FakeJudge.log holds what any of them was asked
FakeJudge.register("fixed", reply=review, mode="generate", batch_size=4, model="fixed")


@pytest.fixture(autouse=True)
def _reset_fixed():
    FakeJudge.reset()


def write_answers(path: Path, model: str, rows: list[tuple], testset: str = "vicuna", **extra) -> Path:
    """rows: (question_id, question, answer[, skill]) -> a JSONL file shaped like `alpagasus generate`'s."""
    with path.open("w") as f:
        for r in rows:
            row = {
                "testset": testset,
                "question_id": r[0],
                "question": r[1],
                "answer": r[2],
                "model": model,
                "settings": {"temperature": 0},
                **extra,
            }
            if len(r) > 3:
                row["skill"] = r[3]
            f.write(json.dumps(row) + "\n")
    return path


# ---- the two-order rule ----------------------------------------------------------------------------------
SCORES_AB = {"win": (8, 5), "tie": (6, 6), "lose": (5, 8)}  # A is Assistant 1
SCORES_BA = {"win": (5, 8), "tie": (6, 6), "lose": (8, 5)}  # B is Assistant 1
EXPECTED = {
    ("win", "win"): "win",
    ("win", "tie"): "win",
    ("win", "lose"): "tie",
    ("tie", "win"): "win",
    ("tie", "tie"): "tie",
    ("tie", "lose"): "lose",
    ("lose", "win"): "tie",
    ("lose", "tie"): "lose",
    ("lose", "lose"): "lose",
}


def judgments_for(qid: str, ab: str | None, ba: str | None, testset: str = "t") -> list[Judgment]:
    """Judgments of one question whose orders went `ab` / `ba` for A (None: an unparsed reply)."""
    out = []
    for order, res, table in (("ab", ab, SCORES_AB), ("ba", ba, SCORES_BA)):
        if res is None:
            out.append(Judgment(testset, qid, order, None, None, "unparsed", "no scores here"))
        else:
            out.append(Judgment(testset, qid, order, *table[res], "ok", "x"))
    return out


@pytest.mark.parametrize("ab,ba", list(EXPECTED))
def test_every_combination_of_the_two_orders(ab, ba):
    js = judgments_for("q", ab, ba)
    assert [order_result(j) for j in js] == [ab, ba]
    assert combine(ab, ba) == EXPECTED[(ab, ba)]
    s = aggregate(js)["all"]
    expected = EXPECTED[(ab, ba)]
    assert (s["win"], s["tie"], s["lose"]) == tuple(int(expected == k) for k in ("win", "tie", "lose"))
    assert s["disagreement"] == (1.0 if ab != ba else 0.0)
    assert s["winning_score"] == {"win": 2.0, "tie": 1.0, "lose": 0.0}[expected]


def test_winning_score_by_hand_and_unparsed_orders_excluded():
    # per test set "v": win, win, tie, lose, and two questions with an unparsed order; "k": lose, lose
    table = [
        ("v", "1", "win", "win"),
        ("v", "2", "win", "tie"),
        ("v", "3", "win", "lose"),
        ("v", "4", "lose", "lose"),
        ("v", "5", None, "win"),
        ("v", "6", "tie", None),
        ("k", "1", "lose", "tie"),
        ("k", "2", "lose", "lose"),
    ]
    js = [j for ts, q, ab, ba in table for j in judgments_for(q, ab, ba, ts)]
    res = aggregate(js)
    v, k, all_ = res["v"], res["k"], res["all"]
    assert (v["win"], v["tie"], v["lose"], v["unparsed"], v["questions"], v["judged"]) == (2, 1, 1, 2, 6, 4)
    assert v["winning_score"] == pytest.approx((2 - 1) / 4 + 1)  # 1.25: the unparsed are not ties
    assert v["disagreement"] == pytest.approx(2 / 4)  # q2 (win/tie) and q3 (win/lose)
    assert (k["win"], k["tie"], k["lose"], k["winning_score"]) == (0, 0, 2, 0.0)
    assert (all_["win"], all_["tie"], all_["lose"], all_["unparsed"]) == (2, 1, 3, 2)
    assert all_["winning_score"] == pytest.approx((2 - 3) / 6 + 1)
    # position bias: the share of decisive orders won by whoever was Assistant 1
    decisive = [(j.order, order_result(j)) for j in js if order_result(j) in ("win", "lose")]
    first = sum((r == "win") == (o == "ab") for o, r in decisive)
    assert all_["assistant_1_wins"] == pytest.approx(first / len(decisive))


def test_a_question_without_judgments_is_failed_not_tied():
    pairs = [Pair("t", "1", "q", "a", "b"), Pair("t", "2", "q2", "a", "b")]
    s = aggregate(judgments_for("1", "win", "win"), pairs)["all"]
    assert (s["win"], s["tie"], s["failed"], s["questions"], s["winning_score"]) == (1, 0, 1, 2, 2.0)


# ---- the pairwise parser on real-shaped replies -------------------------------------------------------------
@pytest.mark.parametrize(
    "reply,pair",
    [
        ("8 7\nAssistant 1 is more detailed.", (8, 7)),
        ("9, 6", (9, 6)),
        ("7.5 7.5", (7.5, 7.5)),
        ("8,7", (8, 7)),
        ("10 9\n\nBoth assistants provided helpful answers.", (10, 9)),
        ("  9 8  \nexplanation", (9, 8)),
        ("**8 6**\n\nAssistant 1 ...", (8, 6)),
        ("Scores: 8 9\nAssistant 2 was better.", (8, 9)),
        ("8/10 7/10", (8, 7)),
        ("8 and 7", (8, 7)),
        ("Assistant 1: 6\nAssistant 2: 9", (6, 9)),
        ("**Assistant 1**: 8/10\n**Assistant 2**: 4/10", (8, 4)),
        ("Assistant 2: 7\nAssistant 1: 9", (9, 7)),
        # SmolLM2's own reply to the paper's prompt (the scores sit inside prose):
        (
            "The performance of two AI assistants in response to the user question displayed above is highly regarded. "
            "The two AI assistants provided a comprehensive evaluation of their performance, with Assistant 1 receiving a "
            "score of 8 out of 10 and Assistant 2 receiving a score of 7 out of 10.\n\nThe",
            (8, 7),
        ),
        ("<think>maybe 3 4</think>\n6 8\nAssistant 2 is better", (6, 8)),
    ],
)
def test_parse_pair_real_replies(reply, pair):
    assert parse_pair(reply)[0] == pair


@pytest.mark.parametrize(
    "reply,reason",
    [
        ("", "empty"),
        (None, "empty"),
        ("Both are good.", "no pair"),
        ("11 4", "outside the scale"),
        ("0 5", "outside the scale"),
        ("8/5 7/5", "another scale"),
        ("Assistant 1 provided 3 examples while Assistant 2 gave 5 tips.", "no pair"),  # counts are not scores
        ("System\nSystem\nSystem\n", "no pair"),  # SmolLM2, verbatim
        ("[System]\nWe would like to request your feedback on the performance of two AI assistants", "no pair"),
    ],
)
def test_parse_pair_refuses(reply, reason):
    scores, why = parse_pair(reply)
    assert scores is None and reason in why


def test_parse_pair_reply_stores_second_score_and_explanation():
    p = parse_pair_reply("8 6\nAssistant 1 is more accurate.")
    assert (p.score, p.extra, p.explanation) == (8, {"score_2": 6}, "Assistant 1 is more accurate.")


# ---- judging through the store with the deterministic judge ------------------------------------------------
QUESTIONS = [("1", "How do I boil an egg?"), ("2", "What is 2+2?"), ("3", "Name a prime."), ("4", "Say hi.")]


def model_files(tmp_path: Path, qa: list[int | str], qb: list[int | str]) -> tuple[Path, Path]:
    ans = lambda m, q: "[garbage]" if q == "g" else f"{m}'s answer (q={q})"  # noqa: E731
    a = write_answers(tmp_path / "a.jsonl", "model-a", [(i, t, ans("A", q)) for (i, t), q in zip(QUESTIONS, qa)])
    b = write_answers(tmp_path / "b.jsonl", "model-b", [(i, t, ans("B", q)) for (i, t), q in zip(QUESTIONS, qb)])
    return a, b


def test_compare_pipeline_resume_and_swapped_models(tmp_path):
    a, b = model_files(tmp_path, [9, 5, 7, "g"], [6, 8, 7, 7])
    rows_a, rows_b = read_answers(a), read_answers(b)
    store = Store(tmp_path / "store.sqlite")
    judge = judges.get("fixed:v1", mode="generate")
    res = compare(rows_a, rows_b, judge, store)
    s = res.summary["vicuna"]
    assert (s["win"], s["tie"], s["lose"], s["unparsed"], s["questions"]) == (1, 1, 1, 1, 4)
    assert s["winning_score"] == 1.0 and s["disagreement"] == 0.0
    # 3 questions x 2 orders answered at once; the garbage one asked 3 times per order (2 re-asks)
    assert res.judging.run.requests_sent == 6 + 2 * 3 and res.judging.run.unparsed == 2 and res.judging.run.ok == 6
    assert store.count(judge="fixed:v1#generate") == 8
    unparsed = [j for j in res.judgments if j.status == "unparsed"]
    assert {j.question_id for j in unparsed} == {"4"} and unparsed[0].raw == "Both assistants tried their best."
    # the same run again: nothing is asked
    FakeJudge.reset()
    again = compare(rows_a, rows_b, judge, store)
    assert FakeJudge.log == [] and again.judging.run.requests_sent == 0 and again.judging.already_in_store == 8
    assert again.summary == res.summary
    # B vs A: the same prompts, so the same judgments, mirrored
    swapped = compare(rows_b, rows_a, judge, store)
    assert FakeJudge.log == [] and swapped.summary["all"]["win"] == s["lose"]
    assert swapped.summary["all"]["lose"] == s["win"]
    # --retry-unparsed asks again for the unparsed only
    compare(rows_a, rows_b, judge, store, options=RunOptions(retry_unparsed=True, max_reasks=0))
    assert len(FakeJudge.log) == 2
    store.close()


def test_identical_answers_are_one_prompt_and_a_tie(tmp_path):
    pairs = [Pair("vicuna", "1", "Q?", "Same answer (q=6)", "Same answer (q=6)")]
    store = Store(tmp_path / "s.sqlite")
    judge = judges.get("fixed:v1", mode="generate")
    t = load_template("pairwise")
    run = judge_pairs(pairs, judge, store, t)
    assert run.run.requests_sent == 1 and pairs[0].item_id("ab") == pairs[0].item_id("ba")
    from alpagasus.compare.pairwise import stored_judgments

    assert aggregate(stored_judgments(pairs, store, judge.id, t.version), pairs)["all"]["tie"] == 1
    store.close()


def test_dry_run_sends_nothing_and_busy_store_refuses(tmp_path):
    a, b = model_files(tmp_path, [9, 5, 7, 3], [6, 8, 7, 7])
    st = tmp_path / "s.sqlite"
    r = runner.invoke(
        app,
        ["compare", str(a), str(b), "--judge", "fixed:x", "-o", str(tmp_path / "o"), "--store", str(st), "--dry-run"],
    )
    assert r.exit_code == 0, r.output
    plan_ = json.loads(r.stdout)
    assert (plan_["questions"], plan_["requests"], plan_["already_in_store"]) == (4, 8, 0)
    assert FakeJudge.log == [] and not (tmp_path / "o").exists()
    with Store(st) as held, held.exclusive():
        r = runner.invoke(
            app, ["compare", str(a), str(b), "--judge", "fixed:x", "-o", str(tmp_path / "o"), "--store", str(st)]
        )
    assert r.exit_code == 2 and "in use" in r.output and FakeJudge.log == []


def test_random_lm_replies_are_unparsed_never_ties(tiny_model, tmp_path):
    pairs = [Pair("vicuna", str(i), f"Question {i}?", f"Answer A {i}.", f"Answer B {i}.") for i in range(3)]
    judge = judges.get(f"hf:{tiny_model}", mode="generate")
    store = Store(tmp_path / "s.sqlite")
    t = load_template("pairwise")
    run = judge_pairs(pairs, judge, store, t, RunOptions(max_tokens=6, max_reasks=1))
    assert run.run.requests_sent == 3 * 2 * 2 and run.run.unparsed == 6 and run.run.ok == 0
    from alpagasus.compare.pairwise import stored_judgments

    s = aggregate(stored_judgments(pairs, store, judge.id, t.version), pairs)["all"]
    assert (s["win"], s["tie"], s["lose"], s["unparsed"], s["winning_score"]) == (0, 0, 0, 3, None)
    store.close()


# ---- the CLI -----------------------------------------------------------------------------------------------
def _shortest(name: str, n: int = 3) -> list[dict]:
    rows = json.loads((RESPONSES / f"{name}_alpagasus2_vs_alpaca2.json").read_text())
    return sorted(rows, key=lambda r: len(r["alpagasus2"]) + len(r["alpaca2"]))[:n]


@pytest.mark.slow
def test_cli_embedded_judge_both_orders_outputs_and_resume(tmp_path):
    rows = _shortest("vicuna")
    a = write_answers(
        tmp_path / "a.jsonl", "alpagasus2", [(r["question_id"], r["text"], r["alpagasus2"]) for r in rows]
    )
    b = write_answers(tmp_path / "b.jsonl", "alpaca2", [(r["question_id"], r["text"], r["alpaca2"]) for r in rows])
    out, store = tmp_path / "out", tmp_path / "store.sqlite"
    args = [
        "compare",
        str(a),
        str(b),
        "-o",
        str(out),
        "--store",
        str(store),
        "--max-tokens",
        "8",
        "--max-reasks",
        "0",
        "--judge",
        "embedded:smollm2",
    ]  # (no --judge: the offline pointwise judge)
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model_a"] == "alpagasus2" and summary["model_b"] == "alpaca2"
    assert summary["judge"] == "embedded:smollm2#generate" and summary["prompt_version"].startswith("pairwise@")
    for key in ("vicuna", "all"):
        res = summary["results"][key]
        for f in (
            "win",
            "tie",
            "lose",
            "winning_score",
            "questions",
            "disagreement",
            "unparsed",
            "mean_chars_a",
            "mean_chars_b",
        ):
            assert f in res
        assert res["questions"] == 3 and res["win"] + res["tie"] + res["lose"] + res["unparsed"] + res["failed"] == 3
    assert summary["requests"]["sent"] == 6
    outcomes = [json.loads(l) for l in (out / "outcomes.jsonl").read_text().splitlines()]
    assert len(outcomes) == 6 and sorted(o["order"] for o in outcomes) == ["ab"] * 3 + ["ba"] * 3
    assert all(o["review"] for o in outcomes)  # the judge's raw replies are kept
    assert (out / "win_tie_lose.png").read_bytes()[:8] == PNG_MAGIC
    with Store(store) as st:
        n = st.count()
    assert n == 6
    r2 = runner.invoke(app, args)
    assert r2.exit_code == 0, r2.output
    again = json.loads((out / "summary.json").read_text())
    assert again["requests"]["sent"] == 0 and again["requests"]["already_in_store"] == 6
    assert again["results"] == summary["results"]
    with Store(store) as st:
        assert st.count() == n


def test_cli_two_column_release_files(tmp_path):
    files = []
    for name in ("vicuna", "koala", "sinstruct"):
        p = tmp_path / f"{name}_alpagasus2_vs_alpaca2.json"
        p.write_text(json.dumps(_shortest(name, 2)))
        files.append(str(p))
    out = tmp_path / "out"
    r = runner.invoke(
        app,
        [
            "compare",
            *files,
            "--model-a",
            "alpagasus2",
            "--model-b",
            "alpaca2",
            "--judge",
            "fixed:len",
            "-o",
            str(out),
            "--store",
            str(tmp_path / "s.sqlite"),
        ],
    )
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["results"]) == {"vicuna", "koala", "sinstruct", "all"}
    assert summary["results"]["all"]["questions"] == 6 and summary["results"]["all"]["unparsed"] == 0
    # sinstruct questions are "{instruction} Input: {input}", as in the paper's evaluation code
    a_rows, _ = read_two_columns(files[2], "alpagasus2", "alpaca2")
    raw = _shortest("sinstruct", 2)
    inp = raw[0]["instances"][0]["input"]
    assert a_rows[0].question == (f"{raw[0]['instruction']} Input: {inp}" if inp.strip() else raw[0]["instruction"])
    # the judge's scores follow the answers' lengths: check one outcome against the rule
    o = json.loads((out / "outcomes.jsonl").read_text().splitlines()[0])
    first = next(x for x in _shortest("vicuna", 2) if x["question_id"] == o["question_id"])
    assert (o["score_a"], o["score_b"]) == (_quality(first["alpagasus2"]), _quality(first["alpaca2"]))


def review_records(rows: list[dict], reviews: list[str]) -> list[dict]:
    """Records in the official AlpaGasus review format, with a stale pre-parsed `score` that must be ignored."""
    return [{**r, "review": rev, "score": [1, 10]} for r, rev in zip(rows, reviews)]


def test_cli_reaggregates_official_review_files(tmp_path):
    rows = _shortest("vicuna", 4)
    ab = tmp_path / "alpagasus2-alpaca2-vicuna.json"
    ba = tmp_path / "alpaca2-alpagasus2-vicuna.json"
    # question 1: A wins both; 2: A wins AB, ties BA -> win; 3: A loses both; 4: BA unparsable
    ab.write_text(json.dumps(review_records(rows, ["9 6\nAssistant 1 is better.", "8, 7\nclose", "3 8\nworse", "7 7"])))
    ba.write_text(
        json.dumps(
            review_records(rows, ["5 9\nAssistant 2 is better.", "7 7\nequal", "9 2\nbetter", "I cannot judge this."])
        )
    )
    out = tmp_path / "out"
    r = runner.invoke(
        app,
        [
            "compare",
            "--reviews-ab",
            str(ab),
            "--reviews-ba",
            str(ba),
            "--model-a",
            "alpagasus2",
            "--model-b",
            "alpaca2",
            "-o",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())["results"]["vicuna"]
    assert (s["win"], s["tie"], s["lose"], s["unparsed"], s["questions"]) == (2, 0, 1, 1, 4)
    assert s["winning_score"] == pytest.approx((2 - 1) / 3 + 1)
    outcomes = [json.loads(l) for l in (out / "outcomes.jsonl").read_text().splitlines()]
    assert outcomes[0]["score_1"] == 9 and outcomes[0]["score_2"] == 6  # from the review, not [1, 10]
    assert outcomes[7]["status"] == "unparsed" and outcomes[7]["review"] == "I cannot judge this."
    assert (out / "win_tie_lose.png").read_bytes()[:8] == PNG_MAGIC
    # the library call agrees
    res = reaggregate(
        read_reviews(ab, "alpagasus2", "alpaca2"), read_reviews(ba, "alpaca2", "alpagasus2"), "alpagasus2", "alpaca2"
    )
    assert res.summary["vicuna"] == s


def test_mismatched_questions_are_reported(tmp_path):
    a = write_answers(
        tmp_path / "a.jsonl", "m-a", [("1", "Q one", "x (q=8)"), ("2", "Q two", "y (q=8)"), ("3", "Q three", "z (q=8)")]
    )
    b = write_answers(
        tmp_path / "b.jsonl",
        "m-b",
        [("2", "Q two", "y (q=3)"), ("3", "Q 3 reworded", "z (q=3)"), ("4", "Q four", "w (q=3)")],
    )
    pairs, mism = match(read_answers(a), read_answers(b))
    assert [p.question_id for p in pairs] == ["2"]
    reasons = {m.question_id: m.reason for m in mism}
    assert set(reasons) == {"1", "3", "4"}
    assert "only in the answers of m-a" in reasons["1"] and "only in the answers of m-b" in reasons["4"]
    assert "different question texts" in reasons["3"] and str(a) in reasons["1"]
    out = tmp_path / "out"
    r = runner.invoke(
        app, ["compare", str(a), str(b), "--judge", "fixed:x", "-o", str(out), "--store", str(tmp_path / "s.sqlite")]
    )
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["mismatches"]) == 3 and summary["results"]["all"]["win"] == 1
    assert "3 question(s) not compared" in r.output
    # nothing in common: a clear error, no outputs
    c = write_answers(tmp_path / "c.jsonl", "m-c", [("9", "Q nine", "n")])
    r = runner.invoke(
        app,
        [
            "compare",
            str(a),
            str(c),
            "--judge",
            "fixed:x",
            "-o",
            str(tmp_path / "none"),
            "--store",
            str(tmp_path / "s.sqlite"),
        ],
    )
    assert r.exit_code == 2 and "no question is in both" in r.output and not (tmp_path / "none").exists()


def test_bad_answer_file_names_file_row_and_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"question_id": 1, "question": "Q", "answer": "a"})
        + "\n"
        + json.dumps({"question_id": 2, "question": "Q2", "answer": 5})
        + "\n"
    )
    good = write_answers(tmp_path / "good.jsonl", "m", [("1", "Q", "a")])
    r = runner.invoke(app, ["compare", str(good), str(bad), "--judge", "fixed:x", "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "bad.jsonl, row 2, field 'answer'" in " ".join(r.output.split())


def test_capacity_per_skill(tmp_path):
    # WizardLM ids 1, 2 are Math, 20 is Code Generation (skills from the bundled set: the rows carry none)
    qs = [
        ("1", "If a car travels 120 miles in 2 hours, what is its average speed in miles per hour?"),
        ("2", "If x + y = z and x * y = z, then what is x - y = ?"),
        ("20", "Given an array"),
    ]
    ref = write_answers(tmp_path / "ref.jsonl", "chatgpt", [(i, t, "ref (q=8)") for i, t in qs], "wizardlm")
    a = write_answers(
        tmp_path / "a.jsonl", "gasus", [(i, t, f"a (q={q})") for (i, t), q in zip(qs, (4, 8, 6))], "wizardlm"
    )
    b = write_answers(
        tmp_path / "b.jsonl", "alpaca", [(i, t, f"b (q={q})") for (i, t), q in zip(qs, (2, 2, 8))], "wizardlm"
    )
    out = tmp_path / "out"
    r = runner.invoke(
        app,
        [
            "compare",
            str(a),
            str(b),
            "--judge",
            "fixed:x",
            "-o",
            str(out),
            "--capacity",
            "--reference",
            str(ref),
            "--store",
            str(tmp_path / "s.sqlite"),
        ],
    )
    assert r.exit_code == 0, r.output
    cap = json.loads((out / "capacity.json").read_text())
    assert cap["reference"] == "chatgpt" and cap["prompt_version"].startswith("capacity@")
    g, al = cap["models"]["gasus"], cap["models"]["alpaca"]
    assert g["skills"]["Math"]["percent"] == pytest.approx(100 * (4 + 8) / 16)
    assert g["skills"]["Code Generation"]["percent"] == pytest.approx(100 * 6 / 8)
    assert al["skills"]["Math"]["percent"] == pytest.approx(25.0) and al["all"]["percent"] == pytest.approx(50.0)
    assert (out / "capacity.png").read_bytes()[:8] == PNG_MAGIC
    assert "capacity per skill" in r.output
    # a skills file of one's own overrides nothing the rows carry, and fills what they lack
    sk = tmp_path / "skills.jsonl"
    sk.write_text("\n".join(json.dumps({"idx": i, "Skill": "Mine"}) for i, _ in qs))
    assert set(read_skills(sk).values()) == {"Mine"} and ("wizardlm", "20") in read_skills(sk)


def test_compare_help_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, alpagasus.cli.compare, alpagasus.compare.files; "
        "print([m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules])"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"
