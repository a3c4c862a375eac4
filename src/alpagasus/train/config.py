"""The training settings: `TrainConfig` (the paper's hyper-parameters as defaults), read from a YAML recipe and
flags (`make_config`), and the resolved settings a run directory records (`resolved`)."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from alpagasus.data import DataError

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
CLOCK_FILE = "alpagasus_clock.json"  # in each checkpoint: training seconds spent up to it
# Fields that do not change what is learned: a resumed run may change them.
RUNTIME_FIELDS = {"resume", "save_steps", "save_total_limit", "keep_checkpoints", "logging_steps", "skip_invalid"}


class TrainError(RuntimeError):
    pass


@dataclass
class TrainConfig:
    base: str = "embedded:gemma3-270m"  # directory, hub id, .gguf, or embedded name
    epochs: float = 3.0
    learning_rate: float = 2e-5
    batch_size: int = 128  # effective batch: per-device batch x devices x accumulation
    per_device_batch_size: int = 4
    max_length: int = 512
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_steps: int = -1  # > 0 caps the optimizer steps (smoke runs)
    seed: int = 42
    precision: str = "auto"  # auto (bf16 on a GPU that has it, else fp32) | fp32 | bf16 | fp16
    gradient_checkpointing: bool | None = None  # None: on when training on a GPU
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: str = "all-linear"  # "all-linear" or comma-separated module names
    save_steps: float = 50  # checkpoint every N steps (a value < 1 is a fraction of the run)
    save_total_limit: int = 2
    keep_checkpoints: bool = False  # delete checkpoints once the final model is saved
    logging_steps: int = 1
    resume: bool = True  # continue from the last checkpoint in the run directory
    skip_invalid: bool = False  # train on the valid rows of a file that has invalid ones

    def validate(self) -> None:
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, not {self.precision!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), not {self.warmup_ratio}")
        for name in ("batch_size", "per_device_batch_size", "max_length", "lora_r", "logging_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be at least 1 (or -1: no cap), not {self.max_steps}")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ValueError("epochs must be > 0 (or set max_steps)")
        if self.learning_rate <= 0 or self.save_steps <= 0:
            raise ValueError("learning_rate and save_steps must be > 0")


def load_train_recipe(path: str | Path) -> dict[str, Any]:
    """A YAML recipe's training settings: the whole file, or its `train:` section."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f"{path}: cannot read recipe ({e})") from None
    if isinstance(data, dict) and isinstance(data.get("train"), dict):
        data = data["train"]
    if not isinstance(data, dict):
        raise DataError(f"{path}: a recipe is a mapping of TrainConfig fields")
    return data


def make_config(recipe: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """TrainConfig from defaults, then the recipe, then `overrides` (None values are ignored: flags win)."""
    values: dict[str, Any] = {}
    source = str(recipe) if recipe else "overrides"
    if recipe:
        values.update(load_train_recipe(recipe))
    values.update({k: v for k, v in overrides.items() if v is not None})
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    defaults = TrainConfig()
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise DataError(f"{source}: unknown training setting {key!r} (known: {', '.join(fields)})")
        kwargs[key] = _coerce(source, key, value, getattr(defaults, key))
    config = TrainConfig(**kwargs)
    config.validate()
    return config


def _coerce(source: str, key: str, value: Any, default: Any) -> Any:
    """YAML reads "2e-5" as a string: convert to the field's type, naming the setting when that fails."""
    try:
        if isinstance(default, bool) or (default is None and key == "gradient_checkpointing"):
            if not isinstance(value, bool):
                raise ValueError("expected true or false")
            return value
        if isinstance(default, (int, float)) and not isinstance(value, bool):
            number = float(value)
            return int(number) if isinstance(default, int) and number.is_integer() else number
        if isinstance(default, str):
            return str(value)
    except (TypeError, ValueError) as e:
        raise DataError(f"{source}: setting {key!r}: bad value {value!r} ({e})") from None
    raise DataError(f"{source}: setting {key!r}: bad value {value!r}")


def resolved(config: TrainConfig, examples: int, digest: str, prompt_format: str, world: int) -> dict[str, Any]:
    """What config.yaml records: the settings, the batch arithmetic, and what the data and its prompt format
    were (a run directory refuses a run whose learned-from values differ)."""
    per_step = config.per_device_batch_size * world
    accum = max(1, round(config.batch_size / per_step))
    return {
        **asdict(config),
        "world_size": world,
        "gradient_accumulation_steps": accum,
        "effective_batch_size": accum * per_step,
        "examples": examples,
        "data_digest": digest,
        "prompt_format": prompt_format,
    }
