"""The vllm: judge's prompt and parse path on CPU (vLLM itself needs a GPU machine)."""

import math

import pytest

from alpagasus import judges
from alpagasus.judges.base import label_scores
from alpagasus.judges.hf_local import HFJudge
from alpagasus.judges.vllm_local import VLLMJudge, label_probabilities
from alpagasus.prompts import load_template
from alpagasus.rate.loop import build_request
from alpagasus.records import Example, Reply


def test_label_probabilities_from_top_logprobs_make_an_expected_score():
    cands = [[10, 11], [12], [13]]  # label "0" spelled by two tokens ("0" and " 0")
    p = label_probabilities(
        {10: math.log(0.1), 11: math.log(0.1), 13: math.log(0.2), 99: math.log(0.6)}, cands, ("0", "1", "2")
    )
    assert p == pytest.approx({"0": 0.2, "1": 0.0, "2": 0.2})
    rep = label_scores(Reply(), p)
    assert rep.extra["label_mass"] == pytest.approx(0.4) and rep.probs == pytest.approx({"0": 0.5, "1": 0.0, "2": 0.5})
    assert rep.score == pytest.approx(1.0)
    none = label_scores(Reply(), label_probabilities({99: 0.0}, cands, ("0", "1", "2")))
    assert none.score is None and none.probs is None and none.extra["label_mass"] == 0.0  # never a made-up score


def test_vllm_judge_builds_the_same_prompts_as_transformers(tiny_model):
    from transformers import AutoTokenizer

    v = judges.get(f"vllm:{tiny_model}")
    assert isinstance(v, VLLMJudge) and v.id == f"vllm:{tiny_model}#logprob" and v.batch_size == 256
    h = HFJudge(str(tiny_model))
    v.tok = h.tok = AutoTokenizer.from_pretrained(tiny_model)  # the tokenizer vLLM would hand back
    req = build_request(Example.alpaca("Add 2 and 3.", "", "5"), load_template("accuracy"), "logprob")
    assert v.prompt_text(req) == h.prompt_text(req)
    assert v.prompt_text(req).endswith("<|im_start|>assistant\nScore: ")
    assert all(len(c) >= 1 for c in v._candidates(req.labels))  # "4" and " 4" both count


def test_vllm_missing_is_a_clear_error(tiny_model):
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(judges.JudgeError, match="needs vLLM"):
            judges.get(f"vllm:{tiny_model}").load()
