"""The free pairwise judge (`pairwise:NAME`, judges/pairwise_model.py) and its training (distill/pairwise.py):
the shipped judge loads offline, is antisymmetric (swapping the answers gives exactly 1 - P), ties inside its
band and on identical answers, its trees reproduce scikit-learn's, `compare` runs with it on real questions, and
`distill-pairwise` trains one on a constructed AlpacaEval file."""

from __future__ import annotations

import gzip
import json
import random

import numpy as np
import pytest
from typer.testing import CliRunner

from alpagasus import judges
from alpagasus.cli import app
from alpagasus.judges.base import JudgeError
from alpagasus.judges.pairwise_model import PairModel, PairwiseModelJudge, pair_scores, shipped
from alpagasus.records import Request
from conftest import SHARED_DATA

SPEC = "pairwise:alpacaeval-gpt4"
RESPONSES = [SHARED_DATA / "responses" / f"{t}_alpagasus2_vs_alpaca2.json" for t in ("vicuna", "koala", "sinstruct")]


@pytest.fixture(scope="module")
def judge() -> PairwiseModelJudge:
    j = judges.get(SPEC)
    assert isinstance(j, PairwiseModelJudge)
    return j


def real_triples(n: int = 6) -> list[tuple[str, str, str]]:
    rows = json.loads(RESPONSES[0].read_text())[:n]
    return [(r["text"], r["alpagasus2"], r["alpaca2"]) for r in rows]


def test_the_shipped_judge_is_registered_and_declares_what_compare_reads(judge):
    assert "alpacaeval-gpt4" in shipped()
    assert judge.id.startswith("pairwise:alpacaeval-gpt4@") and "/tie-band-" in judge.id
    assert judge.pair_scores and judge.order_blind and judge.mode == "generate"
    assert 0.0 <= judge.band < 0.5
    card = judge.model.card
    assert card["kind"] == "pairwise" and card["trained_on"]["pairs"] > 1000
    assert card["split"]["heldout_pairs"] > 0  # the shipped judge never saw that fold's models nor questions


def test_antisymmetric_on_real_answers(judge):
    triples = real_triples()
    p = judge.probabilities(triples)
    swapped = judge.probabilities([(q, b, a) for q, a, b in triples])
    assert np.allclose(p + swapped, 1.0, atol=1e-12)
    assert len(set(np.round(p, 6))) > 1  # it does tell the questions apart


def test_identical_answers_tie_and_the_band_makes_ties(judge):
    q, a, _ = real_triples(1)[0]
    assert judge.probabilities([(q, a, a)])[0] == pytest.approx(0.5)
    fields = {"question": q, "answer_1": a, "answer_2": a}
    (reply,) = judge.score_sync([Request(key="k", system="", user="", fields=fields)])
    assert reply.pair is not None and reply.pair.score_1 == reply.pair.score_2
    assert pair_scores(0.55, 0.1)[2] == 0
    s1, s2, v = pair_scores(0.8, 0.1)
    assert v == 2 and s2 > s1 and s1 + s2 == pytest.approx(11.0)
    assert pair_scores(0.2, 0.0)[2] == 1


def test_a_wide_band_ties_more(judge):
    triples = real_triples(12)
    p = judge.probabilities(triples)
    narrow = sum(pair_scores(float(x), judge.band)[2] == 0 for x in p)
    wide = sum(pair_scores(float(x), 0.45)[2] == 0 for x in p)
    assert wide >= narrow and wide > 0


def test_trees_reproduce_scikit_learn():
    from sklearn.ensemble import HistGradientBoostingClassifier

    from alpagasus.distill.pairwise import tree_arrays

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5))
    y = (x[:, 0] + 0.5 * x[:, 1] ** 2 + rng.normal(scale=0.5, size=400) > 0.3).astype(int)
    clf = HistGradientBoostingClassifier(max_iter=20, max_leaf_nodes=7, random_state=0).fit(x, y)
    model = PairModel({**tree_arrays(clf), "tie_band": np.zeros(1)})
    assert np.allclose(model.raw(x), clf.decision_function(x), atol=1e-9)


def test_unknown_model_is_an_error_naming_the_shipped_ones():
    with pytest.raises(JudgeError, match="alpacaeval-gpt4"):
        judges.get("pairwise:no-such-model")
    with pytest.raises(JudgeError, match="tie_band"):
        judges.get(SPEC, tie_band=0.7)


def test_compare_runs_with_it_on_real_questions(tmp_path):
    from alpagasus.compare.files import compare_files

    rep = compare_files(
        RESPONSES,
        tmp_path / "cmp",
        judge=SPEC,
        model_a="alpagasus2",
        model_b="alpaca2",
        store_path=tmp_path / "s.db",
        limit=3,
    )
    res = rep.summary["results"]["all"]
    assert res["questions"] == 9 and res["unparsed"] == 0 and res["failed"] == 0
    assert res["win"] + res["tie"] + res["lose"] == 9
    rows = [json.loads(line) for line in (tmp_path / "cmp" / "outcomes.jsonl").read_text().splitlines()]
    by_q: dict = {}
    for r in rows:
        by_q.setdefault((r["testset"], r["question_id"]), {})[r["order"]] = r["order_result"]
    assert all(v["ab"] == v["ba"] for v in by_q.values())  # antisymmetric: both orders give one verdict


def constructed_annotations(path, n_models: int = 8, n_questions: int = 24) -> None:
    """A judge that always prefers the longer answer, over short real-looking texts."""
    rnd = random.Random(0)
    words = "the a model answer explains steps first second because then example result list".split()
    with gzip.open(path, "wt") as f:
        for m in range(n_models):
            for q in range(n_questions):
                base = " ".join(rnd.choice(words) for _ in range(8)) + "."
                other = " ".join(rnd.choice(words) for _ in range(rnd.choice([3, 30]))) + "."
                rec = {"instruction": f"Question {q}: explain topic {q}?", "output_1": base, "output_2": other}
                pref = 2 if len(other) > len(base) else 1
                f.write(json.dumps({**rec, "generator_2": f"m{m}", "annotator": "toy", "preference": pref}) + "\n")


@pytest.mark.slow
def test_distill_pairwise_learns_a_constructed_preference(tmp_path):
    ref = tmp_path / "ann.jsonl.gz"
    constructed_annotations(ref)
    out = tmp_path / "pw"
    res = CliRunner().invoke(app, ["distill-pairwise", str(ref), "-o", str(out), "--cache", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    card = json.loads((out / "pairwise.json").read_text())
    assert card["figures"]["cross_fitted"]["judge_no_ties"]["agreement"] >= 0.9
    assert (out / "heldout.jsonl.gz").exists() and list((tmp_path / "c").glob("emb_*.npz"))
    j = judges.get(f"pairwise:{out}")
    p = j.probabilities([("Question 1: explain topic 1?", "short one.", "a much longer answer " * 8)])
    assert p[0] > 0.5
