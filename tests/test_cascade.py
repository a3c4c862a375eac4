"""`rate --cascade`: the certified band on constructed cases with known truth (the Clopper-Pearson bound, a
planted perfect predictor, a random one), and the whole cascade on real Alpaca rows replayed as the strong
judge (replay:FILE): a run that cannot save gives up after the sample and says so; a run whose strong judge a
shipped predictor ranks perfectly leaves it nothing but the sample, resumes after an interruption and asks
nothing twice."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm
from typer.testing import CliRunner

from alpagasus.cli import app
from alpagasus.rate.cascade import CascadeOptions, Plan, sample_size
from alpagasus.rate.certify import _lower_bound_bisect, band_path, bounds, certify, choose_band, lower_bound
from alpagasus.rate.plan import certify_start, precheck
from alpagasus.rate.start import split_sample

LABELS = (
    Path(os.environ.get("ALPAGASUS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    / "labels"
    / "alpaca_llm_labels.jsonl"
)
DECISION = "claude_accuracy_ge_4_5"


def test_sample_size():
    assert sample_size(100) == 100 and sample_size(3000) == 400 and sample_size(52000) == 5000
    assert sample_size(20000) == 2000 and sample_size(1000, 50) == 50 and sample_size(10, 50) == 10


def test_clopper_pearson_lower_bound():
    # known values: all n successes -> (1 - confidence) ** (1 / n); none -> 0
    assert lower_bound(59, 59, 0.95) == pytest.approx(0.05 ** (1 / 59)) and lower_bound(0, 10, 0.95) == 0.0
    for k, n in ((45, 50), (1, 3), (290, 300)):  # our own search (no scipy) agrees with scipy's beta quantile
        assert _lower_bound_bisect(k, n, 0.05) == pytest.approx(lower_bound(k, n, 0.95), abs=1e-9)
    # the bound is below the true proportion in at least 95% of draws (exact test: conservative)
    rng = np.random.default_rng(0)
    for p, n in ((0.9, 100), (0.97, 300)):
        below = [lower_bound(int(k), n, 0.95) <= p for k in rng.binomial(n, p, 2000)]
        assert 0.95 <= np.mean(below) < 0.995, (p, n, np.mean(below))


def _population(n: int, rng: np.random.Generator, rate: float = 0.2, gap: float = 2.0):
    keep = rng.random(n) < rate
    return keep * gap + rng.normal(0, 1, n), keep


def _truth(lo: float, hi: float, rate: float = 0.2, gap: float = 2.0) -> tuple[float, float]:
    """True recall and precision of rows decided by [lo, hi) in `_population` (normal scores)."""
    recall = norm.sf(lo - gap)
    false_keeps = (1 - rate) * norm.sf(hi)
    return recall, rate * recall / (rate * recall + false_keeps)


def test_certified_band_meets_its_targets_with_the_stated_confidence():
    """200 samples from a population whose truth is known: the band certified on each meets both targets in
    at least 90% of the samples (the stated confidence is 95%), and the path saves something."""
    rng = np.random.default_rng(1)
    met, saving = [], []
    for _ in range(200):
        s, y = _population(1200, rng)
        split = split_sample(y, 0.5, int(rng.integers(1 << 30)))
        path = band_path(s[split.dev], y[split.dev], 0.9, 0.9)
        c = certify(path, s[split.cal], y[split.cal], 0.9, 0.9, 0.95)
        r, p = _truth(c.lo, c.hi)
        assert c.recall_bound >= 0.9 and c.precision_bound >= 0.9
        met.append(r >= 0.9 and p >= 0.9)
        saving.append(c.saving)
    assert np.mean(met) >= 0.9, np.mean(met)
    assert np.mean(saving) > 0.2, np.mean(saving)


def test_perfect_predictor_band_shrinks_to_nothing():
    rng = np.random.default_rng(2)
    y = rng.random(2000) < 0.3
    s = y * 3.0 + rng.uniform(0, 1, 2000)  # every kept row above every dropped one
    split = split_sample(y, 0.5, 0)
    st, cert, reason = certify_start(
        y, split, ("predictor:planted", 5 / (1 + np.exp(-s))), None, CascadeOptions(), "rate_accuracy"
    )
    assert reason == "" and st.scorer.start == "shipped" and st.auc["shipped"] == 1.0
    assert cert.lo == cert.hi and cert.saving == 1.0 and cert.band_fraction == 0.0
    assert cert.recall_bound >= 0.95 and cert.precision_bound >= 0.95 and cert.missed == 0


def test_random_predictor_gives_up():
    rng = np.random.default_rng(3)
    y = rng.random(3000) < 0.3
    split = split_sample(y, 0.5, 0)
    assert precheck(y, split, CascadeOptions()) == ""  # enough kept rows to try
    _, cert, reason = certify_start(
        y, split, ("predictor:random", rng.uniform(0, 5, 3000)), None, CascadeOptions(), "rate_accuracy"
    )
    assert reason.startswith("no band saves enough") and cert.saving < 0.2
    # too few kept rows to certify anything: it says so before any predictor is tried, and how many would do
    few = split_sample(rng.random(400) < 0.05, 0.5, 0)
    msg = precheck(rng.random(400) < 0.05, few, CascadeOptions())
    assert "certifying recall >= 0.95 with 95% confidence needs at least 59" in msg and "--cascade-sample" in msg
    # a recall of 1 is never certified from a sample: a reason, not an OverflowError
    msg = precheck(rng.random(400) < 0.05, few, CascadeOptions(recall=1.0))
    assert "recall >= 1.0" in msg and "below 1" in msg


def test_band_edges():
    s = np.array([0.1, 0.2, 0.8, 0.9])
    y = np.array([False, False, True, True])
    assert choose_band(s, y, 100, 0.95, 0.95) == (0.5, 0.5)  # separable: no row goes to the strong judge
    assert choose_band(s, y, 0, 0.95, 0.95) == (0.5, 0.5)
    assert bounds(s, y, -math.inf, math.inf, 0.95) == (1.0, 1.0)  # the trivial band is exact
    assert band_path(s, y, 0.95, 0.95)[0] == (-math.inf, math.inf) and band_path(s, y, 0.95, 0.95)[-1] == (0.5, 0.5)
    plan = Plan("k", None, "shipped", ["predictor:x"], [1.0], [0.0], 0.2, 0.6, 4, 2, 10, 1.0, 1.0, 0.95, 2, 0.5)
    assert [plan.decide(v) for v in (0.1, 0.2, 0.5, 0.6, None)] == ["drop", "band", "band", "keep", "band"]
    with pytest.raises(Exception, match="cascade-recall"):
        CascadeOptions(recall=1.5).check()
    with pytest.raises(Exception, match="cascade-min-saving"):
        CascadeOptions(min_saving=2).check()


def _rows(n: int, kept_share: float | None = None) -> list[dict]:
    rows = [json.loads(line) for line in LABELS.open(encoding="utf-8")]
    rows = [r for r in rows if r["from_random_sample"] and r["output"].strip()]
    if kept_share is None:
        return rows[:n]
    kept = [r for r in rows if r[DECISION]][: round(n * kept_share)]
    dropped = [r for r in rows if not r[DECISION]][: n - len(kept)]
    step = len(dropped) // max(1, len(kept))
    return [r for i, k in enumerate(kept) for r in (*dropped[i * step : (i + 1) * step], k)] + dropped[
        len(kept) * step :
    ]


def _write(path: Path, rows: list[dict], score: str | None = None) -> Path:
    path.write_text(
        "".join(
            json.dumps(
                {
                    **{k: r[k] for k in ("instruction", "input", "output")},
                    **({"score": 5.0 if r[DECISION] else 3.0} if score else {}),
                }
            )
            + "\n"
            for r in rows
        ),
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> tuple[Path, Path, dict]:
    """260 real rows (one kept for three dropped) and a ratings file of the recorded decision: 5.0 / 3.0."""
    rows = _rows(260, 0.25)
    d = tmp_path_factory.mktemp("cascade")
    truth = {(r["instruction"], r["input"], r["output"]): r[DECISION] for r in rows}
    return _write(d / "data.jsonl", rows), _write(d / "recorded.jsonl", rows, "score"), truth


@pytest.mark.slow
def test_a_cascade_that_cannot_save_gives_up_after_the_sample(labelled, tmp_path):
    """The recorded Claude decisions, a 160-row sample: too few kept rows to certify a band that saves 20%.
    The cascade says so, no predictor rates the other rows (none is saved), the strong judge rates them."""
    from alpagasus.rate import rate_file
    from alpagasus.store import Store

    data, recorded, truth = labelled
    store = tmp_path / "s.sqlite"
    s = rate_file(
        data, tmp_path / "out.jsonl", judge=f"replay:{recorded}", store_path=store, cascade=CascadeOptions(sample=160)
    )
    c = s.cascade
    assert c.gave_up and c.note and c.predictor is None and c.predictor_requests == 0
    assert c.sample == 160 and c.band == 100 and c.strong_rows == 260 and c.calls_saved == 0
    assert c.guarantee.startswith("exact: every row was rated by the strong judge")
    with Store(store) as st:
        assert st.count() == st.count(judge=s.judge) == 260  # no predictor's ratings stored
    assert not list(tmp_path.glob("s.sqlite.cascade/*/head.npz"))  # no predictor saved
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").open(encoding="utf-8")]
    assert (
        all(
            r["judge"] == s.judge and (r["score"] >= 4.5) == truth[(r["instruction"], r["input"], r["output"])]
            for r in rows
        )
        and len(rows) == 260
    )
    res = CliRunner().invoke(
        app,
        [
            "rate",
            str(data),
            "-o",
            str(tmp_path / "o2.jsonl"),
            "--judge",
            f"replay:{recorded}",
            "--cascade",
            "--cascade-sample",
            "160",
            "--store",
            str(store),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "gave up after the sample" in res.output and "guaranteed: exact" in res.output
    stop = CliRunner().invoke(
        app,
        [
            "rate",
            str(data),
            "-o",
            str(tmp_path / "o3.jsonl"),
            "--judge",
            f"replay:{recorded}",
            "--cascade",
            "--cascade-sample",
            "160",
            "--cascade-stop",
            "--store",
            str(tmp_path / "s2.sqlite"),
        ],
    )
    assert stop.exit_code == 2 and "cannot save" in stop.output and "Stopped after the sample" in stop.output
    with Store(tmp_path / "s2.sqlite") as st:
        assert st.count() == 160  # the sample only
    assert not (tmp_path / "o3.jsonl").exists()


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, Path, float, dict]:
    """400 real rows whose strong judge is the shipped accuracy predictor itself, replayed (a perfect start):
    the threshold cuts its scores in half."""
    from alpagasus.rate import rate_file

    d = tmp_path_factory.mktemp("planted")
    data = _write(d / "data.jsonl", _rows(400))
    rate_file(data, d / "strong.jsonl", judge="predictor:alpaca-claude-accuracy", store_path=d / "p.sqlite")
    rated = [json.loads(line) for line in (d / "strong.jsonl").open(encoding="utf-8")]
    scores = sorted(r["score"] for r in rated)
    threshold = (scores[199] + scores[200]) / 2
    truth = {(r["instruction"], r["input"], r["output"]): r["score"] >= threshold for r in rated}
    return data, d / "strong.jsonl", threshold, truth


@pytest.mark.slow
def test_a_perfect_start_leaves_the_strong_judge_only_the_sample(planted, tmp_path):
    from alpagasus.rate import rate_file
    from alpagasus.store import Store

    data, strong, threshold, truth = planted
    store, out, calls = tmp_path / "s.sqlite", tmp_path / "out.jsonl", []

    def stop_at_predictor(label, total):  # the sample is stored; Ctrl-C as the predictor starts
        calls.append(total)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return lambda counts: None

    def run(**kw):
        return rate_file(
            data,
            out,
            judge=f"replay:{strong}",
            store_path=store,
            cascade=CascadeOptions(sample=240, recall=0.9, precision=0.9, threshold=threshold),
            **kw,
        )

    with pytest.raises(KeyboardInterrupt):
        run(progress=stop_at_predictor)
    assert calls == [240, 160] and not out.exists()
    s = run()
    c = s.cascade
    assert s.already_rated == 240 and s.run.to_judge == 0, "the sample is never asked twice"
    assert not c.gave_up and c.start == "shipped" and c.predictor.startswith("predictor:alpaca-claude-accuracy")
    assert c.band == 0 and c.lo == c.hi and c.strong_rows == 240 and c.calls_saved == 160  # the band is empty
    assert c.recall_bound >= 0.9 and c.precision_bound >= 0.9 and c.certification_rows == 120
    assert "with 95% confidence, the kept set's recall >= 0.9 and precision >= 0.9" in c.guarantee
    rows = [json.loads(line) for line in out.open(encoding="utf-8")]
    by, kept, true = {}, [], []
    for r in rows:
        by.setdefault(r["judge"], []).append(r)
        kept.append(r["score"] >= threshold)
        true.append(truth[(r["instruction"], r["input"], r["output"])])
        assert r["status"] == "ok" and (r["judge"] != s.judge or kept[-1] == true[-1])  # the judge's own decision
        if r["judge"] != s.judge:
            assert r["judge"] == c.predictor and r["explanation"].startswith("cascade: the shipped predictor")
            assert r["explanation"].endswith("keep") == kept[-1]
    assert len(by[s.judge]) == 240 and len(by[c.predictor]) == 160
    kept, true = np.array(kept), np.array(true)  # the kept set's true recall and precision meet the targets
    assert (kept & true).sum() / true.sum() >= 0.9 and (kept & true).sum() / kept.sum() >= 0.9
    with Store(store) as st:
        assert st.count(judge=s.judge) == 240
    again = run()
    assert again.run.to_judge == 0 and again.cascade.predictor_requests == 0 and again.cascade.band == 0
    res = CliRunner().invoke(
        app,
        [
            "rate",
            str(data),
            "-o",
            str(tmp_path / "cli.jsonl"),
            "--judge",
            f"replay:{strong}",
            "--cascade",
            "--cascade-sample",
            "240",
            "--cascade-recall",
            "0.9",
            "--cascade-precision",
            "0.9",
            "--cascade-threshold",
            repr(threshold),
            "--store",
            str(store),
        ],
    )  # the same plan and ratings, nothing asked
    assert res.exit_code == 0, res.output
    for text in (
        "strong-judge rows (sample + band)",
        "recall lower bound",
        "precision lower bound",
        "guaranteed: with 95% confidence, the kept set's recall >= 0.9 and precision >= 0.9",
    ):
        assert text in res.output


@pytest.mark.slow
def test_cascade_with_batch_asks_each_row_once(tiny_model, alpaca_rows, tmp_path):
    """--cascade --batch against `alpagasus serve` (tiny random model): the strong judge's calls go through the
    provider's Batch API, the predictor's never do, and no row is put in a batch twice."""
    import openai

    from alpagasus.engine import RunOptions
    from alpagasus.rate import rate_file
    from alpagasus.serve import ModelRunner, start_server

    data = tmp_path / "d.jsonl"
    rows = [r for r in alpaca_rows if r["output"].strip() and len(r["output"]) < 300][:24]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    opts = RunOptions(batch=True, batch_poll_s=0.05, min_label_mass=0.0)
    with start_server(ModelRunner(str(tiny_model), name="tiny")) as url:
        s = rate_file(
            data,
            tmp_path / "out.jsonl",
            judge="openai:tiny",
            mode="logprob",
            options=opts,
            judge_options={"base_url": url, "top_logprobs": 800},
            store_path=tmp_path / "s.sqlite",
            cascade=CascadeOptions(sample=16, threshold=2.5),
        )
        client = openai.OpenAI(base_url=url, api_key="none")
        sent = [
            json.loads(x)["custom_id"]
            for b in client.batches.list(limit=100)
            for x in client.files.content(b.input_file_id).text.splitlines()
        ]
    c = s.cascade
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    strong = [r["id"] for r in out if r["judge"] == s.judge]
    assert len(sent) == len(set(sent)) == c.strong_rows == len(strong) and s.run.batches >= 1
    assert len(out) == 24 and c.strong_rows + c.decided["keep"] + c.decided["drop"] == 24
