"""The settings of a `generate` run (GenerateConfig): checked once, recorded in every answer row, read by the
backends. A module of its own so that the backends and the answering loop both import it, not each other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alpagasus.alpaca import STOP_STRINGS, prompt_version

BACKENDS = ("transformers", "openai", "vllm")
DEFAULT_BATCH = {"transformers": 8, "vllm": 256}  # openai: `concurrency`


@dataclass
class GenerateConfig:
    backend: str = "transformers"  # transformers | openai | vllm
    prompt_format: str = "alpaca"  # alpaca | chat (the model's chat template)
    max_new_tokens: int = 512
    temperature: float = 0.0  # 0: greedy decoding
    top_p: float = 1.0
    seed: int | None = None
    batch_size: int | None = None  # None: 8 for transformers, 256 for vLLM, `concurrency` for openai
    limit: int | None = None  # the first N questions of each test set
    fraction: float | None = None  # a seeded random share of each test set (stratified subset)
    sample_seed: int = 0  # the seed of that share
    name: str | None = None  # the model name written in the rows (default: MODEL as given)
    base_url: str | None = None  # openai backend
    api_key: str | None = None
    concurrency: int = 8
    max_retries: int = 3
    timeout: float = 600.0
    device: str | None = None  # transformers backend: cuda if available, else cpu
    dtype: str = "auto"

    def validate(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if self.prompt_format not in ("alpaca", "chat"):
            raise ValueError(f"prompt format must be alpaca or chat, not {self.prompt_format!r}")
        if self.max_new_tokens < 1 or (self.batch_size is not None and self.batch_size < 1):
            raise ValueError("max_new_tokens and batch_size must be at least 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("temperature must be >= 0 and top_p in (0, 1]")
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"limit must be >= 0, not {self.limit}")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], not {self.fraction}")
        if self.concurrency < 1 or self.max_retries < 0 or self.timeout <= 0:
            raise ValueError("concurrency must be at least 1, max_retries >= 0 and timeout > 0")

    def batch(self) -> int:
        """Questions per batch: the configured size, else the backend's default."""
        return self.batch_size or DEFAULT_BATCH.get(self.backend, self.concurrency)

    def settings(self) -> dict[str, Any]:
        """What shaped the answers, recorded in every row."""
        out: dict[str, Any] = {
            "backend": self.backend,
            "prompt_format": self.prompt_format,
            "max_new_tokens": self.max_new_tokens,
            "do_sample": self.temperature > 0,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
        }
        if self.prompt_format == "alpaca":
            out["prompt_version"] = prompt_version()
            out["stop"] = stops_for(self)
        return out


def stops_for(config: GenerateConfig) -> list[str]:
    """Alpaca-format answers end where the model starts another "### ..." block; chat answers at end of turn."""
    return list(STOP_STRINGS) if config.prompt_format == "alpaca" else []
