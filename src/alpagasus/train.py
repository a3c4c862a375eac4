"""Supervised fine-tuning in the Alpaca format on TRL's SFTTrainer (full fine-tuning or LoRA through PEFT).

The paper's settings are the defaults (3 epochs, lr 2e-5, batch 128, length 512, cosine, 3% warmup). The run
directory holds the resolved config (config.yaml), checkpoints while training, then the final model and
tokenizer (loadable by `load_causal_lm(RUN_DIR)`) and metrics.json. Multi-GPU runs need no code of their own:
`accelerate launch --config_file configs/fsdp.yaml -m alpagasus.cli train ...` (see docs/train_generate.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from alpagasus.alpaca import prompt_version, tokenize_examples
from alpagasus.data import DataError, read_examples, to_example, write_json
from alpagasus.models import loadable, pretrained
from alpagasus.records import Example

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


def load_examples(
    data: str | Path | Iterable[Example | Mapping[str, Any]], skip_invalid: bool = False
) -> list[Example]:
    """Examples from a dataset file (any format `read_examples` reads), Example objects, or plain dicts."""
    if isinstance(data, (str, Path)):
        return read_examples(data, skip_invalid=skip_invalid).examples
    out = []
    for row, item in enumerate(data, 1):
        ex = item if isinstance(item, Example) else to_example(item, row, "<examples>")
        if not isinstance(ex, Example):
            if skip_invalid:
                continue
            raise DataError(str(ex))
        out.append(ex)
    return out


def _data_digest(examples: list[Example]) -> str:
    return hashlib.sha256("\n".join(e.id for e in examples).encode()).hexdigest()[:16]


def _resolved(config: TrainConfig, examples: list[Example], world: int) -> dict[str, Any]:
    per_step = config.per_device_batch_size * world
    accum = max(1, round(config.batch_size / per_step))
    return {
        **asdict(config),
        "world_size": world,
        "gradient_accumulation_steps": accum,
        "effective_batch_size": accum * per_step,
        "examples": len(examples),
        "data_digest": _data_digest(examples),
        "prompt_format": prompt_version(),
    }


def _check_run_dir(run_dir: Path, resolved: dict) -> dict | None:
    """Refuse to mix two different runs in one directory; return the metrics of an identical finished run.
    Read-only, so every process of a distributed run reaches the same answer."""
    from transformers.trainer_utils import get_last_checkpoint

    if not (run_dir / CONFIG_FILE).exists():
        return None
    old = yaml.safe_load((run_dir / CONFIG_FILE).read_text(encoding="utf-8")) or {}
    changed = [k for k in resolved if k not in RUNTIME_FIELDS and old.get(k) != resolved[k]]
    if changed:
        diff = ", ".join(f"{k}: {old.get(k)!r} -> {resolved[k]!r}" for k in changed)
        raise TrainError(
            f"{run_dir} holds a run with other settings ({diff}); use another output directory or --overwrite"
        )
    has_ckpt = get_last_checkpoint(str(run_dir)) is not None
    if has_ckpt and not resolved["resume"]:
        raise TrainError(f"{run_dir} holds checkpoints; resume (the default) or --overwrite to start over")
    metrics_path = run_dir / METRICS_FILE
    if metrics_path.exists() and not has_ckpt:
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        if metrics.get("completed"):
            return metrics
    return None


def _precision(config: TrainConfig) -> str:
    import torch

    if config.precision != "auto":
        return config.precision
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


def _progress_callback() -> Any:
    from transformers.trainer_callback import ProgressCallback

    class LossProgress(ProgressCallback):
        """The Trainer's progress bar, with the loss on the bar instead of a printed dict per step."""

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if state.is_world_process_zero and self.training_bar is not None and logs and "loss" in logs:
                self.training_bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)

    return LossProgress


def _clock_callback(checkpoint: str | None) -> Any:
    """Writes into each checkpoint the training seconds spent up to it, so that a resumed run reports the time
    of the steps it kept (the time before the checkpoint plus the time after the resume), not of its last part."""
    from transformers.trainer_callback import TrainerCallback

    try:  # the seconds recorded in the checkpoint resumed from (none for a fresh run or an older checkpoint)
        before = float(json.loads((Path(checkpoint) / CLOCK_FILE).read_text())["train_time_s"]) if checkpoint else 0.0
    except (OSError, ValueError, KeyError, TypeError):
        before = 0.0

    class TrainingClock(TrainerCallback):
        started = time.perf_counter()

        def elapsed(self) -> float:
            return before + time.perf_counter() - self.started

        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            self.started = time.perf_counter()

        def on_save(self, args, state, control, **kwargs):  # noqa: ANN001
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and ckpt.is_dir():
                write_json(ckpt / CLOCK_FILE, {"train_time_s": round(self.elapsed(), 3), "step": state.global_step})

    return TrainingClock()


def train(
    data: str | Path | Iterable[Example | Mapping[str, Any]],
    run_dir: str | Path,
    config: TrainConfig | None = None,
    callbacks: list[Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Fine-tune `config.base` on `data` into `run_dir`; returns the metrics also written to metrics.json."""
    started = time.perf_counter()
    config = config or TrainConfig()
    config.validate()
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise TrainError(f"{run_dir}: a file, not a run directory; give a directory for --output")
    examples = load_examples(data, config.skip_invalid)
    if not examples:
        raise TrainError(f"{data if isinstance(data, (str, Path)) else 'data'}: no examples to train on")
    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by `accelerate launch` and torchrun
    resolved = _resolved(config, examples, world)
    precision = _precision(config)
    args = _sft_args(config, resolved, run_dir, precision)
    state, done = _claim_run_dir(run_dir, resolved, overwrite)
    if done is not None:
        return done
    checkpoint = _last_checkpoint(run_dir) if config.resume else None
    clock = _clock_callback(checkpoint)
    trainer, tok, data_stats = _make_trainer(config, examples, args, state, precision, [clock, *(callbacks or [])])
    if state.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8")
    loop_started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=checkpoint)
    train_time = time.perf_counter() - loop_started
    _save_final(trainer, tok, run_dir, config)
    progress = trainer.state
    losses = [{"step": e["step"], "loss": e["loss"]} for e in progress.log_history if "loss" in e]
    metrics = {
        "completed": True,
        "base": config.base,
        "lora": config.lora,
        "steps": progress.global_step,
        "max_steps": progress.max_steps,
        "epochs": progress.epoch,
        "start_step": int(Path(checkpoint).name.split("-")[-1]) if checkpoint else 0,
        "resumed_from": Path(checkpoint).name if checkpoint else None,
        "examples": len(examples),
        **data_stats,
        "tokens_seen": int(progress.num_input_tokens_seen),
        "final_loss": losses[-1]["loss"] if losses else None,
        "train_loss": output.training_loss,
        "loss_history": losses,
        "train_time_s": round(train_time, 3),
        "train_time_total_s": round(clock.elapsed(), 3),
        "wall_time_s": round(time.perf_counter() - started, 3),
        "precision": precision,
        "world_size": world,
        "effective_batch_size": resolved["effective_batch_size"],
    }
    if trainer.is_world_process_zero():
        _finish_run_dir(run_dir, metrics, config)
    return metrics


def _sft_args(config: TrainConfig, resolved: dict[str, Any], run_dir: Path, precision: str) -> Any:
    """TRL's SFTConfig for this run (built before the model so that DeepSpeed ZeRO-3 can partition it while
    loading); checks that the launcher started the processes WORLD_SIZE says."""
    import torch
    from trl import SFTConfig

    on_gpu = torch.cuda.is_available()
    checkpointing = on_gpu if config.gradient_checkpointing is None else config.gradient_checkpointing
    # transformers 5 renamed gradient_checkpointing to activation_checkpointing (the old name warns)
    ckpt_field = (
        "activation_checkpointing"
        if "activation_checkpointing" in {f.name for f in dataclasses.fields(SFTConfig)}
        else "gradient_checkpointing"
    )
    args = SFTConfig(
        output_dir=str(run_dir),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        per_device_train_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=resolved["gradient_accumulation_steps"],
        max_length=config.max_length,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not on_gpu,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        report_to="none",
        seed=config.seed,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        **{ckpt_field: checkpointing},
    )
    world = resolved["world_size"]
    if args.world_size != world:  # reading world_size also sets up the process group
        raise TrainError(f"WORLD_SIZE is {world} but the launcher started {args.world_size} processes")
    return args


def _claim_run_dir(run_dir: Path, resolved: dict[str, Any], overwrite: bool) -> tuple[Any, dict | None]:
    """(accelerate's process state, the metrics of an identical finished run or None), every process agreeing;
    with `overwrite`, the main process deletes the directory first."""
    from accelerate import PartialState

    state = PartialState()
    if overwrite:
        if state.is_main_process and run_dir.exists():
            shutil.rmtree(run_dir)
        state.wait_for_everyone()
    done = _check_run_dir(run_dir, resolved)
    state.wait_for_everyone()  # nobody writes into run_dir before every process has looked at it
    return state, done


def _make_trainer(
    config: TrainConfig, examples: list[Example], args: Any, state: Any, precision: str, callbacks: list[Any] | None
) -> tuple[Any, Any, dict[str, int]]:
    """(SFTTrainer, tokenizer, dataset statistics): the base model loaded, the examples tokenized."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.trainer_callback import ProgressCallback
    from trl import SFTTrainer

    with state.main_process_first():  # a GGUF base is converted once, by the main process
        src = loadable(config.base)
    tok = pretrained(AutoTokenizer, src)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    # full fine-tuning keeps fp32 master weights (mixed precision computes in bf16); LoRA's frozen base can
    # sit in the compute dtype
    dtype = (
        {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32) if config.lora else torch.float32
    )
    model = pretrained(AutoModelForCausalLM, src, dtype=dtype)
    dataset, data_stats = tokenize_examples(examples, tok, config.max_length)
    if not data_stats["examples_trained"]:
        raise TrainError("no trainable example: every prompt fills max_length")
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tok,
        peft_config=_lora_config(config),
        callbacks=callbacks,
    )
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(_progress_callback())
    return trainer, tok, data_stats


def _lora_config(config: TrainConfig) -> Any:
    """PEFT's LoraConfig for a LoRA run, None for full fine-tuning."""
    if not config.lora:
        return None
    from peft import LoraConfig

    targets = (
        config.lora_targets
        if config.lora_targets == "all-linear"
        else [t.strip() for t in config.lora_targets.split(",") if t.strip()]
    )
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )


def _last_checkpoint(run_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(run_dir)) if run_dir.exists() else None


def _finish_run_dir(run_dir: Path, metrics: dict[str, Any], config: TrainConfig) -> None:
    """metrics.json (its `completed` marks the run finished), then the checkpoints go unless kept."""
    write_json(run_dir / METRICS_FILE, metrics)
    if not config.keep_checkpoints:
        for ckpt in run_dir.glob("checkpoint-*"):
            shutil.rmtree(ckpt, ignore_errors=True)


def _save_final(trainer: Any, tok: Any, run_dir: Path, config: TrainConfig) -> None:
    """The final model in run_dir. LoRA: the adapter in run_dir/adapter and the merged model in run_dir."""
    model = trainer.model
    model.config.use_cache = True
    if tok.eos_token_id is not None and model.generation_config.eos_token_id is None:
        model.generation_config.eos_token_id = tok.eos_token_id
    if not config.lora:
        trainer.save_model(str(run_dir))
        trainer.accelerator.wait_for_everyone()
        return
    adapter_dir = run_dir / "adapter"
    trainer.save_model(str(adapter_dir))
    trainer.accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        return
    if trainer.accelerator.num_processes == 1:
        merged = trainer.accelerator.unwrap_model(model).merge_and_unload()
    else:  # sharded weights: merge on the main process from the saved adapter and a fresh copy of the base
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(loadable(config.base), dtype="auto")
        merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(run_dir))
    tok.save_pretrained(str(run_dir))
