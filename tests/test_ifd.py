"""The ifd:MODEL judge (judges/ifd.py): IFD = loss(response | prompt) / loss(response), on a tiny random model,
checked against the model's own losses; batching; the >= 1 mark; the ratings file through the CLI."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from alpagasus import judges
from alpagasus.judges.base import JudgeError
from alpagasus.judges.ifd import IFDJudge, build_pair, ifd_score, ifd_values, mean_nll, span_logprobs
from alpagasus.ratings_file import user_fields
from alpagasus.records import Example, Request
from conftest import SHARED_DATA


@pytest.fixture(scope="module")
def rows(alpaca_rows):
    # short and long rows, with and without an input
    picked = [r for r in alpaca_rows[:200] if r["input"]][:5] + [r for r in alpaca_rows[:200] if not r["input"]][:7]
    return [Example.alpaca(r["instruction"], r["input"], r["output"]) for r in picked]


@pytest.fixture(scope="module")
def judge(tiny_model):
    j = IFDJudge(f"hf:{tiny_model}")
    j.load()
    return j


def requests(examples):
    return [Request(key=e.id, system="", user="", example=e) for e in examples]


def model_loss(model, ids, n_response):
    """The model's own loss (transformers' labels) over the last n_response tokens of ids."""
    ids = torch.tensor([ids])
    labels = ids.clone()
    labels[0, :-n_response] = -100
    with torch.no_grad():
        return float(model(input_ids=ids, labels=labels).loss)


def test_ifd_matches_the_models_own_losses(judge, tiny_model, rows):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    start = [tok.convert_tokens_to_ids("<|endoftext|>")]  # the tiny tokenizer adds no BOS of its own
    replies = judge.score_sync(requests(rows))
    for e, rep in zip(rows, replies):
        prompt = f"{e.instruction}\n{e.input}\n" if e.input else f"{e.instruction}\n"  # Superfiltering's format
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        r = tok(e.output, add_special_tokens=False)["input_ids"]
        loss_c, loss_a = model_loss(model, start + p + r, len(r)), model_loss(model, start + r, len(r))
        got = rep.extra["ifd"]
        assert got["loss_conditioned"] == pytest.approx(loss_c, rel=1e-4)
        assert got["loss_response"] == pytest.approx(loss_a, rel=1e-4)
        assert got["ifd"] == pytest.approx(loss_c / loss_a, rel=1e-4)
        assert got["ppl_ratio"] == pytest.approx(math.exp(loss_c - loss_a), rel=1e-4)
        assert (got["response_tokens"], got["prompt_tokens"]) == (len(r), len(p)) and "truncated" not in got
        assert got["ifd_ge_1"] == (loss_c / loss_a >= 1)
        assert rep.score == pytest.approx(0.0 if got["ifd_ge_1"] else 5 * got["ifd"], abs=1e-9)


def test_batched_equals_one_by_one(judge, rows):
    together = [r.extra["ifd"] for r in judge.score_sync(requests(rows))]
    alone = [judge.score_sync(requests([e]))[0].extra["ifd"] for e in rows]
    for a, b in zip(together, alone):
        for k in ("ifd", "loss_conditioned", "loss_response"):
            assert a[k] == pytest.approx(b[k], abs=1e-5)


def test_ifd_at_least_1_is_marked_and_scored_lowest():
    worse = ifd_values(2.2, 2.0)
    assert worse["ifd_ge_1"] and worse["ifd"] == pytest.approx(1.1) and worse["ppl_ratio"] > 1
    assert ifd_score(worse["ifd"]) == 0.0 and ifd_score(1.0) == 0.0 and ifd_score(float("nan")) == 0.0
    better = ifd_values(1.5, 2.0)
    assert not better["ifd_ge_1"] and ifd_score(better["ifd"]) == pytest.approx(3.75)
    assert ifd_score(0.5, lo=1, hi=10) == pytest.approx(5.5)  # a custom scale
    with pytest.raises(ValueError):
        ifd_values(1.0, 0.0)


def test_long_rows_are_cut_to_the_window(tiny_model, rows):
    j = IFDJudge(f"hf:{tiny_model}", context=24)
    long = Example.alpaca(rows[0].instruction * 6, rows[0].input, rows[0].output * 6)
    rep = j.score_sync(requests([long]))[0]
    d = rep.extra["ifd"]
    assert d["truncated"]["prompt"] > 0 and d["truncated"]["response"] > 0
    assert 1 + d["prompt_tokens"] + d["response_tokens"] == 24 and d["response_tokens"] >= 11
    assert j.id.endswith("/ctx24") and j.id != IFDJudge(f"hf:{tiny_model}").id
    # an empty response (sent only with --rate-empty) is an error for that row, not a made-up number
    bad = j.score_sync(requests([Example.alpaca("Say nothing.", "", ""), rows[1]]))
    assert bad[0].score is None and "no IFD" in bad[0].error and not bad[0].retryable and bad[1].score is not None


def test_vllm_prompt_logprobs_give_the_same_ifd_as_the_hf_path(judge, rows):
    """The vLLM path reads prompt_logprobs ([None, {token id: Logprob}, ...]); fed the hf path's own per-token
    log-probabilities in that shape, the shared arithmetic gives the same IFD."""

    class Logprob:  # vLLM's value type: .logprob (plain floats are accepted too)
        def __init__(self, v):
            self.logprob = v

    e = rows[1]
    pair = build_pair(judge.tok, judge._start, e, 2048)
    seqs = [pair.conditioned, pair.alone]
    n = len(pair.response)
    lps = judge._hf_logprobs(seqs, [n, n])
    shaped = [
        [None] * (len(s) - n) + [{tid: Logprob(v), -1: -9.0} for tid, v in zip(s[-n:], lp)] for s, lp in zip(seqs, lps)
    ]
    got = [span_logprobs(p, s, n) for p, s in zip(shaped, seqs)]
    want = judge.score_sync(requests([e]))[0].extra["ifd"]["ifd"]
    assert ifd_values(mean_nll(got[0]), mean_nll(got[1]))["ifd"] == pytest.approx(want, rel=1e-5)
    with pytest.raises(JudgeError, match="no log-probability"):
        span_logprobs([None, {5: -1.0}], [3, 4], 1)


def test_specs_and_missing_vllm_are_clear_errors():
    with pytest.raises(JudgeError, match="ifd:embedded:NAME, ifd:hf:PATH_OR_ID or ifd:vllm:MODEL"):
        judges.get("ifd:gpt2")
    with pytest.raises(JudgeError, match="mode 'ifd'"):
        judges.get("ifd:hf:x", mode="logprob")
    j = judges.get("ifd:vllm:some/model")
    assert j.id.startswith("ifd:vllm:some/model#loss@") and j.mode == "ifd"
    try:  # vLLM is not installed on CPU machines: load() must say what to do
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(JudgeError, match=r"pip install 'alpagasus\[vllm\]'"):
            j.load()


@pytest.mark.slow
def test_rate_cli_writes_status_ok_and_raw_ifd(tiny_model, tmp_path):
    rows = json.loads((SHARED_DATA / "alpaca" / "alpaca_random_9k.json").read_text())[:17]
    rows[16]["ifd"] = "a user's own column"  # kept: that row's rating fields then go under alpagasus_
    data, out, store = tmp_path / "rows.json", tmp_path / "ratings.jsonl", tmp_path / "store.sqlite"
    data.write_text(json.dumps(rows))
    cmd = [
        sys.executable,
        "-m",
        "alpagasus.cli",
        "rate",
        str(data),
        "-o",
        str(out),
        "--store",
        str(store),
        "--judge",
        f"ifd:hf:{tiny_model}",
        "--batch-size",
        "8",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(got) == 17
    for g in got[:16]:
        assert (
            g["status"] == "ok"
            and g["judge"].startswith("ifd:hf:")
            and g["judge"].endswith("#loss@" + g["judge"].rsplit("@", 1)[1])
        )
        d = g["ifd"]
        assert d["ifd"] == pytest.approx(d["loss_conditioned"] / d["loss_response"])
        assert g["score"] == pytest.approx(0.0 if d["ifd_ge_1"] else 5 * d["ifd"])
        assert "ifd" not in user_fields(g)  # the training format leaves the rating's column out
    assert {g["ifd"]["ifd_ge_1"] for g in got[:16]} == {True, False}  # a random model: IFD ~ 1, both sides
    last = got[16]
    assert last["ifd"] == "a user's own column" and last["alpagasus_status"] == "ok"
    assert last["alpagasus_ifd"]["loss_response"] > 0
    assert user_fields(last)["ifd"] == "a user's own column"
    # an LLM judge's ratings of the same rows are another store key: the IFD rows are not theirs
    from alpagasus.store import Store

    with Store(store) as st:
        ids = [g["id"] for g in got[:16]]
        assert len(st.get_many(ids, got[0]["judge"], got[0]["prompt_version"])) == 16
        assert st.get_many(ids, "embedded:smollm2#logprob", got[0]["prompt_version"]) == {}
