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


__all__ = ["Judge", "JudgeError", "get", "register", "REGISTRY", "DEFAULT_JUDGE"]
