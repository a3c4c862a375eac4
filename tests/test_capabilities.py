"""Judges declare what they can do (judges/base.py: JudgeBase), and the engine, compare and Ray read those
declarations: the label-mass floor, the generate fallback, secrets to redact, the pairwise capabilities and
the resources a Ray worker reserves. No GPU, no Ray cluster: the reservation is checked where it is planned."""

from __future__ import annotations

import pytest

from alpagasus import judges
from alpagasus.engine.settle import judge_secrets, label_floor
from alpagasus.engine.types import RunOptions
from alpagasus.judges.base import CAPABILITIES, CPU, GPU, Judge, JudgeBase, Resources
from alpagasus.rate.ray import reservation

TYPES = {
    "min_label_mass": float,
    "generate_fallback": bool,
    "logprobs": bool,
    "order_blind": bool,
    "pair_scores": bool,
    "resources": Resources,
    "secrets": tuple,
}


@pytest.mark.parametrize("name", sorted(judges.BUILTIN))
def test_every_registered_judge_declares_every_capability(name):
    cls = judges.backend_class(f"{name}:x")
    assert issubclass(cls, JudgeBase), f"{cls.__qualname__} does not declare capabilities (subclass JudgeBase)"
    for cap in CAPABILITIES:
        declared = getattr(cls, cap)  # on the class: a value, or a property computed from the options given
        assert isinstance(declared, (TYPES[cap], property)), (name, cap)
    assert set(TYPES) == set(CAPABILITIES)


def test_declared_values_of_the_builtin_judges(tiny_model):
    o = judges.get("openai:gpt-4o", api_key="sk-test-KEY-123456")
    assert isinstance(o, Judge) and o.logprobs and o.generate_fallback and o.min_label_mass == 0.5
    assert o.secrets == ("sk-test-KEY-123456",) and judge_secrets(o) == ("sk-test-KEY-123456",)
    assert o.resources == CPU
    h = judges.get(f"hf:{tiny_model}")
    assert h.logprobs and not h.generate_fallback and h.min_label_mass == 0.0 and h.secrets == ()
    assert h.resources == CPU and judges.get(f"hf:{tiny_model}", device="cuda:1").resources == GPU
    v = judges.get("vllm:some/model", tensor_parallel_size=2)
    assert v.logprobs and v.resources == Resources(gpus=2.0, cpus=0.0)
    assert judges.get("ifd:vllm:some/model").resources == GPU
    assert judges.get("ifd:hf:some/model").resources == CPU
    assert judges.get("ifd:hf:some/model", device="cuda").resources == GPU
    p = judges.get("pointwise:alpaca-chatgpt-helpfulness")
    assert p.pair_scores and p.order_blind and not p.logprobs
    assert not judges.get("predictor:alpaca-claude-accuracy").pair_scores


def test_the_engine_reads_the_declared_floor_and_fallback():
    class Floor(JudgeBase):
        min_label_mass = 0.3
        generate_fallback = True

    assert label_floor(Floor(), RunOptions()) == (0.3, True)
    assert label_floor(Floor(), RunOptions(min_label_mass=0.7)) == (0.7, True)  # the run's option wins
    assert label_floor(JudgeBase(), RunOptions()) == (0.0, False)


def test_ray_reserves_a_gpu_for_ifd_on_vllm():
    """`ifd:vllm:M --ray` reserved no GPU when the decision was `spec.startswith("vllm:")`."""
    cluster = {"CPU": 16.0, "GPU": 4.0}
    pool = reservation(judges.get("ifd:vllm:some/model"), cluster)
    assert pool == {"actors": 4, "num_cpus": 0.0, "num_gpus": 1.0}
    assert reservation(judges.get("vllm:some/model", tensor_parallel_size=2), cluster)["actors"] == 2
    cpu = reservation(judges.get("ifd:hf:some/model"), cluster)
    assert cpu == {"actors": 16, "num_cpus": 1.0, "num_gpus": None}
    assert reservation(judges.get("openai:m", api_key="k"), cluster, actors=3, num_cpus=0.5)["actors"] == 3
    assert reservation(judges.get("ifd:vllm:some/model"), {"CPU": 8.0})["actors"] == 1  # no GPU yet: one waits
