"""vLLM in process: the one place its engine and sampling parameters are built, for the `vllm:` judge, the
`ifd:vllm:` judge and `generate --backend vllm`, so they resolve models alike (embedded names, .gguf files
converted once: models.loadable) and fail alike when vLLM is missing. vLLM is imported only when called."""

from __future__ import annotations

from typing import Any, Callable

INSTALL = "pip install 'alpagasus[vllm]'"


def engine(model: str, error: Callable[[str], Exception], needs: str, **engine_args: Any) -> Any:
    """A `vllm.LLM` for `model` (engine arguments left None are vLLM's defaults). Without vLLM: `error(...)`
    raised with `needs` ("the vllm judge needs vLLM on a GPU machine") and the install command."""
    try:
        from vllm import LLM
    except ImportError as e:
        raise error(f"{needs}: {INSTALL}") from e
    from alpagasus.models import loadable

    return LLM(model=loadable(model), **{k: v for k, v in engine_args.items() if v is not None})


def sampling(**params: Any) -> Any:
    """`vllm.SamplingParams` (vLLM is loaded: an engine was built first)."""
    from vllm import SamplingParams

    return SamplingParams(**params)


def context_length(llm: Any) -> int:
    """The engine's context in tokens (prompt + generated)."""
    return int(llm.llm_engine.model_config.max_model_len)
