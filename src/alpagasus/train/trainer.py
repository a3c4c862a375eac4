"""`train`: supervised fine-tuning on TRL's SFTTrainer (full fine-tuning or LoRA through PEFT) of examples
tokenized by train/data.py, into a run directory (train/rundir.py) that holds the resolved config, checkpoints
while training, then the final model and tokenizer (loadable by `load_causal_lm(RUN_DIR)`) and metrics.json."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from alpagasus.models import loadable, pretrained
from alpagasus.records import Example
from alpagasus.train.chat import training_template
from alpagasus.train.config import CONFIG_FILE, TrainConfig, TrainError, resolved
from alpagasus.train.data import build_dataset, data_digest, is_chat, load_examples, prompt_format
from alpagasus.train.rundir import claim_run_dir, clock_callback, finish_run_dir, last_checkpoint


def train(
    data: str | Path | Iterable[Example | Mapping[str, Any]],
    run_dir: str | Path,
    config: TrainConfig | None = None,
    callbacks: list[Any] | None = None,
    overwrite: bool = False,
    format: str | None = None,
) -> dict[str, Any]:
    """Fine-tune `config.base` on `data` (in `format`, or the one its rows show) into `run_dir`; returns the
    metrics also written to metrics.json. Alpaca rows train in the Alpaca prompt format, conversations with the
    chat template (train/data.py)."""
    started = time.perf_counter()
    config = config or TrainConfig()
    config.validate()
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise TrainError(f"{run_dir}: a file, not a run directory; give a directory for --output")
    examples = load_examples(data, config.skip_invalid, format)
    if not examples:
        raise TrainError(f"{data if isinstance(data, (str, Path)) else 'data'}: no examples to train on")
    chat = is_chat(examples)
    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by `accelerate launch` and torchrun
    settings = resolved(config, len(examples), data_digest(examples), prompt_format(chat), world)
    precision = _precision(config)
    args = _sft_args(config, settings, run_dir, precision)
    state, done = claim_run_dir(run_dir, settings, overwrite)
    if done is not None:
        return done
    checkpoint = last_checkpoint(run_dir) if config.resume else None
    clock = clock_callback(checkpoint)
    trainer, tok, data_stats = _make_trainer(
        config, examples, chat, args, state, precision, [clock, *(callbacks or [])]
    )
    if state.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
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
        "effective_batch_size": settings["effective_batch_size"],
    }
    if trainer.is_world_process_zero():
        finish_run_dir(run_dir, metrics, config)
    return metrics


def _precision(config: TrainConfig) -> str:
    import torch

    if config.precision != "auto":
        return config.precision
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


def _sft_args(config: TrainConfig, settings: dict[str, Any], run_dir: Path, precision: str) -> Any:
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
    checkpointing_arg: dict[str, Any] = {ckpt_field: checkpointing}
    args = SFTConfig(
        output_dir=str(run_dir),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        per_device_train_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=settings["gradient_accumulation_steps"],
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
        **checkpointing_arg,
    )
    world = settings["world_size"]
    if args.world_size != world:  # reading world_size also sets up the process group
        raise TrainError(f"WORLD_SIZE is {world} but the launcher started {args.world_size} processes")
    return args


def _progress_callback() -> Any:
    from transformers.trainer_callback import ProgressCallback

    class LossProgress(ProgressCallback):
        """The Trainer's progress bar, with the loss on the bar instead of a printed dict per step."""

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if state.is_world_process_zero and self.training_bar is not None and logs and "loss" in logs:
                self.training_bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)

    return LossProgress


def _make_trainer(
    config: TrainConfig,
    examples: list[Example],
    chat: bool,
    args: Any,
    state: Any,
    precision: str,
    callbacks: list[Any] | None,
) -> tuple[Any, Any, dict[str, Any]]:
    """(SFTTrainer, tokenizer, dataset statistics): the base model loaded, the examples tokenized. A chat run's
    tokenizer keeps the template it was trained with, and the model stops on that template's end of turn, so
    the saved model answers in the format it learned (`generate --chat-template`)."""
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
    stats: dict[str, Any] = {}
    template = training_template(tok, config.base) if chat else None
    if template is not None:
        tok.chat_template = template.text
        stop_on(model, template.stop_id)
        stats["chat_template"] = template.source
    dataset, data_stats = build_dataset(examples, tok, config.max_length, template.text if template else None)
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
    return trainer, tok, {**data_stats, **stats}


def stop_on(model: Any, token_id: int) -> None:
    """Add `token_id` to the model's stop tokens (generation config), keeping the ones it has."""
    ids = model.generation_config.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if token_id not in ids:
        model.generation_config.eos_token_id = [*ids, token_id]


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
        base.generation_config.eos_token_id = model.generation_config.eos_token_id  # a chat run's stop tokens
        merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(run_dir))
    tok.save_pretrained(str(run_dir))
