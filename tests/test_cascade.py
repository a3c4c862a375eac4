"""`rate --cascade`: the band rule on a planted case, and the whole cascade on real Alpaca rows whose recorded
Claude decisions are replayed as the strong judge (replay:FILE): calls, who decided each row, the printed
estimates, and a resume after an interruption that asks nothing twice."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from alpagasus.cli import app
from alpagasus.rate.cascade import CascadeOptions, Plan, choose_band, estimates, interval, sample_size

LABELS = Path(os.environ.get("ALPAGASUS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) \
    / "labels" / "alpaca_llm_labels.jsonl"
DECISION = "claude_accuracy_ge_4_5"


def test_sample_size():
    assert sample_size(100) == 100 and sample_size(3000) == 400 and sample_size(52000) == 5000
    assert sample_size(20000) == 2000 and sample_size(1000, 50) == 50 and sample_size(10, 50) == 10


def _planted(n: int, rng: np.random.Generator, rate: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """A good predictor: kept rows score about 2 points higher, with noise."""
    keep = rng.random(n) < rate
    return keep * 2.0 + rng.normal(0, 0.6, n), keep


def test_band_meets_its_target_on_fresh_rows():
    rng = np.random.default_rng(0)
    s, y = _planted(3000, rng)
    n_rest = 50000
    lo, hi = choose_band(s, y, n_rest, 0.95, 0.95)
    r, p = estimates(s, y, lo, hi, n_rest)
    assert r >= 0.95 and p >= 0.95 and lo < hi
    # the same rule on rows the band never saw: the kept set's true recall and precision
    fs, fy = _planted(n_rest, rng)
    kept = (fs >= hi) | ((fs >= lo) & fy)  # the band's rows get the strong judge's (true) decision
    true_recall = (kept & fy).sum() / fy.sum()
    true_precision = (kept & fy).sum() / kept.sum()
    assert true_recall >= 0.93 and true_precision >= 0.93, (true_recall, true_precision)
    band = ((fs >= lo) & (fs < hi)).mean()
    assert band < 0.3, band  # a good predictor leaves most rows to itself
    ci = interval(s, y, lo, hi, n_rest, 500, 0)
    assert ci["recall"][0] <= r <= ci["recall"][1] and ci["precision"][0] <= p <= ci["precision"][1]
    # stricter targets widen the band; a perfect target sends every uncertain row
    lo2, hi2 = choose_band(s, y, n_rest, 1.0, 1.0)
    assert lo2 <= lo and hi2 >= hi and estimates(s, y, lo2, hi2, n_rest) == (1.0, 1.0)


def test_band_edges():
    s = np.array([0.1, 0.2, 0.8, 0.9])
    y = np.array([False, False, True, True])
    assert choose_band(s, y, 100, 0.95, 0.95) == (0.5, 0.5)  # separable: no row goes to the strong judge
    assert choose_band(s, y, 0, 0.95, 0.95) == (math.inf, math.inf)  # nothing beyond the sample
    plan = Plan("k", "f", 0.2, 0.6, 4, 2, 0.0, 10, 1.0, 1.0)
    assert [plan.decide(v) for v in (0.1, 0.2, 0.5, 0.6, None)] == ["drop", "band", "band", "keep", "band"]
    with pytest.raises(Exception, match="cascade-recall"):
        CascadeOptions(recall=1.5).check()


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> tuple[Path, Path, dict]:
    """260 real rows (one kept for three dropped) and a ratings file of the recorded decision: 5.0 / 3.0."""
    rows = [json.loads(line) for line in LABELS.open(encoding="utf-8")]
    kept = [r for r in rows if r[DECISION]][:65]
    dropped = [r for r in rows if not r[DECISION] and r["from_random_sample"]][:195]
    chosen = [r for pair in zip(dropped[::3], dropped[1::3], dropped[2::3], kept) for r in pair]
    d = tmp_path_factory.mktemp("cascade")
    data, recorded = d / "data.jsonl", d / "recorded.jsonl"
    data.write_text("".join(json.dumps({k: r[k] for k in ("instruction", "input", "output")}) + "\n"
                            for r in chosen), encoding="utf-8")
    recorded.write_text("".join(json.dumps({"instruction": r["instruction"], "input": r["input"],
                                            "output": r["output"], "score": 5.0 if r[DECISION] else 3.0}) + "\n"
                                for r in chosen), encoding="utf-8")
    truth = {(r["instruction"], r["input"], r["output"]): r[DECISION] for r in chosen}
    return data, recorded, truth


@pytest.fixture(scope="module")
def cascaded(labelled, tmp_path_factory):
    """A cascade interrupted (Ctrl-C) once the sample is stored, then run again to the end."""
    from alpagasus.rate import rate_file

    data, recorded, _ = labelled
    d = tmp_path_factory.mktemp("run")
    store, out = d / "s.sqlite", d / "out.jsonl"
    calls = []

    def stop_at_predictor(label, total):  # the sample is stored; Ctrl-C as the predictor starts
        calls.append(total)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return lambda counts: None

    def run(**kw):
        return rate_file(data, out, judge=f"replay:{recorded}", store_path=store,
                         cascade=CascadeOptions(sample=160, bootstrap=200), **kw)

    with pytest.raises(KeyboardInterrupt):
        run(progress=stop_at_predictor)
    assert calls == [160, 100] and not out.exists()
    return run(), run, store, out


def test_cascade_with_replayed_decisions(labelled, cascaded):
    from alpagasus.store import Store

    _, _, truth = labelled
    s, run, store, out = cascaded
    c = s.cascade
    assert s.already_rated == 160, "the sample is never asked twice"
    assert s.run.to_judge == c["band"] and c["strong_rows"] == 160 + c["band"] < 260
    assert c["calls_saved"] == 260 - c["strong_rows"] and c["predictor"].startswith("predictor:cascade-")
    assert 0 <= c["interval"]["recall"][0] <= c["recall"] <= 1 and c["precision"] >= 0.95
    rows = [json.loads(line) for line in out.open(encoding="utf-8")]
    assert len(rows) == 260
    by = {}
    for r in rows:
        by.setdefault(r["judge"], []).append(r)
        assert r["status"] == "ok"
        if r["judge"].startswith("replay:"):  # the strong judge's own decision
            assert (r["score"] >= 4.5) == truth[(r["instruction"], r["input"], r["output"])]
        else:
            assert r["judge"] == c["predictor"] and r["explanation"].startswith("cascade:")
            assert (r["score"] >= 4.5) == r["explanation"].endswith("keep")
    assert len(by[s.judge]) == c["strong_rows"] and len(by[c["predictor"]]) == c["calls_saved"]
    with Store(store) as st:  # each strong-judged row asked exactly once over both runs
        assert st.count(judge=s.judge) == c["strong_rows"]
    again = run()
    assert again.run.to_judge == 0 and again.cascade["predictor_requests"] == 0
    assert again.cascade["predictor"] == c["predictor"] and again.cascade["band"] == c["band"]


def test_cli_prints_calls_and_estimates(labelled, cascaded, tmp_path):
    data, recorded, _ = labelled
    _, _, store, _ = cascaded  # the same store: the sample's plan and every rating are reused
    out = tmp_path / "out.jsonl"
    res = CliRunner().invoke(app, ["rate", str(data), "-o", str(out), "--judge", f"replay:{recorded}", "--cascade",
                                   "--cascade-sample", "160", "--store", str(store)])
    assert res.exit_code == 0, res.output
    for text in ("strong-judge rows (sample + band)", "strong-judge calls saved", "estimated recall",
                 "estimated precision", "95% CI"):
        assert text in res.output
    print(res.output)
    few = CliRunner().invoke(app, ["rate", str(data), "-o", str(out), "--judge", f"replay:{recorded}", "--cascade",
                                   "--cascade-sample", "20", "--store", str(store)])
    assert few.exit_code == 0 and "every row goes to the strong judge" in few.output


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
        s = rate_file(data, tmp_path / "out.jsonl", judge="openai:tiny", mode="logprob", options=opts,
                      judge_options={"base_url": url, "top_logprobs": 800}, store_path=tmp_path / "s.sqlite",
                      cascade=CascadeOptions(sample=16, threshold=2.5, bootstrap=50))
        client = openai.OpenAI(base_url=url, api_key="none")
        sent = [json.loads(x)["custom_id"] for b in client.batches.list(limit=100)
                for x in client.files.content(b.input_file_id).text.splitlines()]
    c = s.cascade
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    strong = [r["id"] for r in out if r["judge"] == s.judge]
    assert len(sent) == len(set(sent)) == c["strong_rows"] == len(strong) and s.run.batches >= 1
    assert len(out) == 24 and c["strong_rows"] + c["decided"]["keep"] + c["decided"]["drop"] == 24
