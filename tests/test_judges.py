"""The judge registry (built-ins, register(), entry points of installed distributions), option checking, the
Judge protocol and label_scores. No model is loaded: judges are built, never load()ed."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from alpagasus import judges
from alpagasus.judges import accepted_options
from alpagasus.judges.base import Judge, JudgeError, JudgeOptionError, LocalJudge, label_scores
from alpagasus.judges.hf_local import HFJudge
from alpagasus.judges.openai_compat import OpenAIJudge
from alpagasus.judges.predictor import PredictorJudge
from alpagasus.judges.vllm_local import VLLMJudge
from alpagasus.records import Reply, Request
from fakes import FakeJudge

LOCAL_URL = "http://127.0.0.1:9/v1"


@pytest.fixture(autouse=True)
def _own_registry(monkeypatch):
    """register() calls made here do not leak into other tests."""
    monkeypatch.setattr(judges, "REGISTERED", dict(judges.REGISTERED))


class MineJudge(LocalJudge):
    """A minimal third-party judge: (arg, mode, backend) plus one option of its own."""

    mode = "generate"

    def __init__(self, arg: str, mode: str | None = None, backend: str = "mine", temperature: float = 0.0):
        self.arg, self.backend, self.temperature = arg, backend, temperature
        self.mode = mode or "generate"

    @property
    def id(self) -> str:
        return f"{self.backend}:{self.arg}#{self.mode}"

    def score_sync(self, requests):
        return [Reply(text="Score: 5") for _ in requests]


def make_judge(arg, mode=None, backend=None, **anything):
    """A factory function taking any option."""
    j = MineJudge(arg, mode=mode, backend=backend)
    j.options = anything
    return j


# ---- options --------------------------------------------------------------------------------------------------
def test_a_misspelt_option_names_the_judge_and_the_option():
    with pytest.raises(JudgeOptionError) as err:
        judges.get("openai:m", base_url=LOCAL_URL, concurency=3)
    e = err.value
    assert isinstance(e, JudgeError)
    assert "openai:m" in str(e) and "concurency" in str(e) and "--concurency" in str(e)
    assert e.spec == "openai:m" and e.unknown == ["concurency"] and "concurrency" in e.accepted
    assert "base_url" not in e.unknown


def test_a_correct_option_is_passed_through():
    j = judges.get("openai:m", base_url=LOCAL_URL, concurrency=3)
    assert isinstance(j, OpenAIJudge)
    assert (j.concurrency, j.base_url, j.id, j.mode) == (3, LOCAL_URL, "openai:m#generate", "generate")
    assert j.client is None  # built, not connected
    j2 = judges.get("openai:m", mode="logprob", base_url=LOCAL_URL)
    assert (j2.mode, j2.concurrency) == ("logprob", 16)


def test_a_flag_meaningless_for_a_predictor_is_an_error_naming_the_flag():
    with pytest.raises(JudgeOptionError) as err:
        judges.get("predictor:alpaca-claude-accuracy", base_url=LOCAL_URL)
    msg = str(err.value)
    assert "predictor:alpaca-claude-accuracy" in msg and "base_url" in msg and "--base-url" in msg
    assert err.value.accepted == ["batch_size"]
    assert judges.get("predictor:alpaca-claude-accuracy", batch_size=8).batch_size == 8


def test_vllm_takes_the_hf_options_it_passes_on_but_not_misspelt_ones():
    allowed = accepted_options(VLLMJudge)
    assert {"device", "dtype", "prefix_cache", "top_logprobs", "gpu_memory_utilization", "batch_size"} <= allowed
    assert not {"arg", "mode", "backend", "self", "kw"} & allowed
    j = judges.get("vllm:some/model", device="cuda:1", dtype="bfloat16", top_logprobs=5)
    assert isinstance(j, VLLMJudge) and j.model is None
    assert (j.device, j.dtype, j.top_logprobs, j.spec) == ("cuda:1", "bfloat16", 5, "vllm:some/model")
    with pytest.raises(JudgeOptionError) as err:
        judges.get("vllm:some/model", devcie="cuda:1")
    assert "devcie" in str(err.value) and "vllm:some/model" in str(err.value)
    assert "device" in err.value.accepted


def test_accepted_options_of_classes_and_functions():
    assert accepted_options(HFJudge) == {"batch_size", "device", "dtype", "prefix_cache", "min_prefix", "pass_cost"}
    assert accepted_options(PredictorJudge) == {"batch_size"}
    assert accepted_options(MineJudge) == {"temperature"}
    assert accepted_options(make_judge) is None  # takes anything: not checkable

    class Bare(LocalJudge):
        def __init__(self, arg, mode=None, backend=None, **kw):
            super().__init__(**kw)  # reaches object.__init__: not checkable

    assert accepted_options(Bare) is None


def test_an_unknown_backend_lists_the_known_ones():
    with pytest.raises(JudgeError) as err:
        judges.get("nosuch:model")
    assert not isinstance(err.value, JudgeOptionError)
    msg = str(err.value)
    assert "'nosuch'" in msg
    for name in ("openai", "hf", "embedded", "predictor", "vllm"):
        assert name in msg


def test_a_backend_that_cannot_be_imported_is_a_judge_error():
    judges.register("broken", "no_such_module_anywhere:Judge")
    with pytest.raises(JudgeError, match="'broken'.*cannot be loaded"):
        judges.get("broken:x")
    judges.register("broken2", "fakes:NoSuchClass")
    with pytest.raises(JudgeError, match="cannot be loaded"):
        judges.get("broken2:x")


# ---- register ------------------------------------------------------------------------------------------------
def test_register_by_module_and_class_name():
    judges.register("mine", "test_judges:MineJudge")
    assert judges.REGISTERED["mine"] == "test_judges:MineJudge"
    assert judges.available()["mine"] == "test_judges:MineJudge"
    j = judges.get("mine:alpha", temperature=0.3)
    assert type(j).__name__ == "MineJudge" and (j.arg, j.backend, j.temperature, j.id) == (
        "alpha",
        "mine",
        0.3,
        "mine:alpha#generate",
    )
    with pytest.raises(JudgeOptionError, match="mine:alpha.*base_url"):
        judges.get("mine:alpha", base_url=LOCAL_URL)


def test_register_a_class_object():
    judges.register("mine2", MineJudge)
    assert judges.backend_class("mine2:x") is MineJudge  # the object itself: a class defined anywhere works
    assert judges.available()["mine2"] == f"{MineJudge.__module__}:MineJudge"

    class Local(MineJudge):  # defined inside a function: not importable by "module:qualname"
        pass

    judges.register("local", Local)
    assert type(judges.get("local:y")) is Local
    j = judges.get("mine2:beta", mode="logprob")
    assert (j.arg, j.backend, j.mode) == ("beta", "mine2", "logprob")
    assert isinstance(j, Judge)


def test_register_a_factory_function_takes_any_option():
    judges.register("factory", make_judge)
    j = judges.get("factory:x", whatever=1)
    assert j.options == {"whatever": 1} and j.backend == "factory"


def test_registered_wins_over_builtin():
    judges.register("openai", MineJudge)
    j = judges.get("openai:gpt-x")
    assert type(j).__name__ == "MineJudge" and j.id == "openai:gpt-x#generate"
    assert judges.available()["openai"] == f"{MineJudge.__module__}:MineJudge"
    assert judges.BUILTIN["openai"] == "alpagasus.judges.openai_compat:OpenAIJudge"  # untouched


def test_fake_judge_registers_behind_a_spec():
    FakeJudge.register("fixedtest", reply="Score: 2", mode="generate")
    try:
        j = judges.get("fixedtest:v1")
        assert isinstance(j, FakeJudge) and j.id == "fixedtest:v1#generate"
    finally:
        FakeJudge._configs.pop("fixedtest", None)


# ---- entry points of an installed distribution, for real ---------------------------------------------------
THIRD = """
from alpagasus.judges.base import LocalJudge
from alpagasus.records import Reply


class ThirdJudge(LocalJudge):
    mode = "generate"

    def __init__(self, arg, mode=None, backend="x", batch_size=None):
        self.arg, self.backend = arg, backend
        self.mode = mode or "generate"
        self.batch_size = batch_size or 4

    @property
    def id(self):
        return f"{self.backend}:{self.arg}#{self.mode}"

    def score_sync(self, requests):
        return [Reply(text="Score: 5\\nthird party") for _ in requests]
"""

PROBE = """
import asyncio, json, sys
from alpagasus import judges
from alpagasus.engine import Item, RunOptions, run_items, run_sync
from alpagasus.judges.base import Judge, JudgeOptionError
from alpagasus.prompts import Rubric, load_template
from alpagasus.records import Request
from alpagasus.store import Store

out = {"imported_at_start": "thirdjudge" in sys.modules}
out["plugins"] = judges.plugins()
out["available"] = "third" in judges.available()
out["imported_after_available"] = "thirdjudge" in sys.modules
j = judges.get("third:hello")
out["imported_after_get"] = "thirdjudge" in sys.modules
out["built"] = [type(j).__name__, j.id, j.batch_size, isinstance(j, Judge)]
out["batch_size"] = judges.get("third:hello", batch_size=9).batch_size
try:
    judges.get("third:hello", concurrency=3)
    out["option_error"] = None
except JudgeOptionError as e:
    out["option_error"] = str(e)
rubric = Rubric.rating(load_template("accuracy"))
with Store(sys.argv[1]) as st:
    items = [Item(k, Request(key=k, system="", user=k)) for k in ("a", "b", "c")]
    counts = run_sync(run_items(items, j, st, rubric, RunOptions()), j)
    out["run"] = [counts.ok, st.get("b", j.id, rubric.version).score]
print(json.dumps(out))
"""


@pytest.fixture
def installed_plugin(tmp_path):
    site = tmp_path / "site"
    (site / "thirdjudge").mkdir(parents=True)
    (site / "thirdjudge" / "__init__.py").write_text(THIRD)
    info = site / "thirdjudge-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdjudge\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[alpagasus.judges]\nthird = thirdjudge:ThirdJudge\n")
    return site


def python(code: str, *args: str, cwd, pythonpath=None, timeout=300) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    else:
        env.pop("PYTHONPATH", None)
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_a_judge_declared_by_an_installed_distribution_is_found_without_register(installed_plugin, tmp_path):
    p = python(PROBE, str(tmp_path / "s.sqlite"), cwd=tmp_path, pythonpath=installed_plugin)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["plugins"] == {"third": "thirdjudge:ThirdJudge"}
    assert out["available"] is True
    # found from metadata alone: not imported until chosen
    assert (out["imported_at_start"], out["imported_after_available"], out["imported_after_get"]) == (
        False,
        False,
        True,
    )
    assert out["built"] == ["ThirdJudge", "third:hello#generate", 4, True]
    assert out["batch_size"] == 9
    msg = out["option_error"]
    assert msg is not None and "third:hello" in msg and "concurrency" in msg and "batch_size" in msg
    assert out["run"] == [3, 5.0]  # and it judges through the engine


def test_without_the_distribution_the_plugin_is_unknown(tmp_path):
    assert "third" not in judges.plugins()
    with pytest.raises(JudgeError, match="unknown judge backend 'third'"):
        judges.get("third:hello")
    # the same probe with the distribution off the path: not found
    p = python("from alpagasus import judges; print(sorted(judges.plugins()))", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "third" not in p.stdout


# ---- the CLI reports flags that mean nothing for the chosen judge --------------------------------------------
def test_cli_rejects_base_url_for_a_predictor_without_a_traceback(tmp_path):
    out = tmp_path / "out.jsonl"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "alpagasus.cli",
            "rate",
            "sample:alpaca",
            "-o",
            str(out),
            "--limit",
            "2",
            "--judge",
            "predictor:alpaca-claude-accuracy",
            "--base-url",
            LOCAL_URL,
            "--store",
            str(tmp_path / "s.sqlite"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "--base-url" in p.stderr and "predictor:alpaca-claude-accuracy" in p.stderr
    assert "Traceback" not in p.stdout + p.stderr
    assert not out.exists()


# ---- the Judge protocol ----------------------------------------------------------------------------------------
def test_local_judges_satisfy_the_protocol():
    for j in (MineJudge("x"), FakeJudge(reply="1")):
        assert isinstance(j, Judge)
        assert j.sort_by_length is False and j.concurrency == 1
        assert asyncio.iscoroutinefunction(j.aclose) and asyncio.iscoroutinefunction(j.score)
        asyncio.run(j.aclose())
    assert asyncio.run(MineJudge("x").score([Request(key="k", system="", user="u")]))[0].text == "Score: 5"
    # LocalJudge alone has no id: not a judge yet
    assert not isinstance(LocalJudge(), Judge)


def test_openai_judge_satisfies_the_protocol_without_loading():
    j = judges.get("openai:m", base_url=LOCAL_URL, context=4096)
    assert isinstance(j, Judge)
    assert j.sort_by_length is False and j.max_context == 4096 and j.client is None
    assert asyncio.iscoroutinefunction(j.aclose)
    asyncio.run(j.aclose())  # nothing opened: nothing to close, no error
    assert j.clients == []


def test_hf_and_vllm_judges_are_built_without_loading():
    j = HFJudge("/no/such/model/dir")
    assert isinstance(j, Judge)
    assert j.sort_by_length is True and j.model is None and j.max_context is None
    assert (j.id, j.mode, j.batch_size) == ("hf:/no/such/model/dir#logprob", "logprob", 16)
    assert asyncio.iscoroutinefunction(j.aclose)
    emb = judges.get("embedded:smollm2", mode="generate")
    assert isinstance(emb, HFJudge) and emb.sort_by_length and emb.id == "embedded:smollm2#generate"
    v = VLLMJudge("some/model")
    assert isinstance(v, Judge) and v.sort_by_length is False and v.batch_size == 256


def test_bad_modes_and_empty_args_are_judge_errors():
    with pytest.raises(JudgeError, match="mode must be"):
        judges.get("hf:/m", mode="predict")
    with pytest.raises(JudgeError, match="mode must be"):
        judges.get("openai:m", mode="nope", base_url=LOCAL_URL)
    with pytest.raises(JudgeError, match="needs a model"):
        judges.get("hf:")
    with pytest.raises(JudgeError, match="only predicts"):
        judges.get("predictor:alpaca-claude-accuracy", mode="generate")


# ---- label_scores -------------------------------------------------------------------------------------------
def test_label_scores_normalizes_and_gives_the_expected_score():
    rep = label_scores(Reply(extra={"top": ["kept"]}), {"3": 0.1, "4": 0.3, "5": 0.1})
    assert rep.probs == pytest.approx({"3": 0.2, "4": 0.6, "5": 0.2})
    assert sum(rep.probs.values()) == pytest.approx(1.0)
    assert rep.score == pytest.approx(3 * 0.2 + 4 * 0.6 + 5 * 0.2)
    assert rep.extra["argmax"] == "4"
    assert rep.extra["label_mass"] == pytest.approx(0.5)
    assert rep.extra["top"] == ["kept"]  # what was there stays


def test_label_scores_with_no_mass_leaves_no_score():
    rep = label_scores(Reply(), {"0": 0.0, "1": 0.0, "2": 0.0})
    assert rep.score is None and rep.probs is None
    assert rep.extra == {"label_mass": 0.0}
    assert "argmax" not in rep.extra
    assert label_scores(Reply(), {}).score is None
