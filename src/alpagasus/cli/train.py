"""`alpagasus train`: flags -> config -> one library call."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from alpagasus.cli import app
from alpagasus.cli._errors import user_errors
from alpagasus.cli._options import FORMAT


@app.command()
def train(
    data: Path = typer.Argument(
        ...,
        help="Training data: JSON/JSONL/CSV/Parquet/datasets dir of Alpaca rows {instruction, input, output}, "
        "Dolly rows, OpenAI `messages` or ShareGPT `conversations` (e.g. the output of `alpagasus select`).",
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Run directory: checkpoints, final model, metrics.json."),
    base: str | None = typer.Option(
        None, help="Base model: directory, hub id, .gguf or embedded name (default: embedded:gemma3-270m)."
    ),
    recipe: Path | None = typer.Option(None, help="YAML recipe of TrainConfig fields (flags win over it)."),
    epochs: float | None = typer.Option(None, help="Epochs (default: 3)."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate (default: 2e-5)."),
    batch_size: int | None = typer.Option(
        None, help="Effective batch size, reached by gradient accumulation (default: 128)."
    ),
    per_device_batch_size: int | None = typer.Option(None, help="Micro-batch per device (default: 4)."),
    max_length: int | None = typer.Option(None, help="Max tokens per example (default: 512)."),
    scheduler: str | None = typer.Option(None, help="LR schedule (transformers name) (default: cosine)."),
    warmup_ratio: float | None = typer.Option(None, help="Warm-up fraction of the steps (default: 0.03)."),
    weight_decay: float | None = typer.Option(None, help="AdamW weight decay (default: 0)."),
    max_steps: int | None = typer.Option(None, help="Stop after N optimizer steps (smoke runs)."),
    seed: int | None = typer.Option(None, help="Random seed (default: 42)."),
    precision: str | None = typer.Option(
        None, help="auto | fp32 | bf16 | fp16 (default: auto: bf16 on a GPU that has it, else fp32)."
    ),
    gradient_checkpointing: bool | None = typer.Option(
        None, "--gradient-checkpointing/--no-gradient-checkpointing", help="(default: on for GPU training)"
    ),
    lora: bool | None = typer.Option(None, "--lora/--full", help="LoRA adapters instead of full fine-tuning."),
    lora_r: int | None = typer.Option(None, help="LoRA rank (default: 16)."),
    lora_alpha: int | None = typer.Option(None, help="LoRA alpha (default: 32)."),
    lora_dropout: float | None = typer.Option(None, help="LoRA dropout (default: 0.05)."),
    lora_targets: str | None = typer.Option(None, help="'all-linear' or comma-separated module names."),
    save_steps: float | None = typer.Option(None, help="Checkpoint every N steps (default: 50)."),
    keep_checkpoints: bool | None = typer.Option(
        None, "--keep-checkpoints/--delete-checkpoints", help="Keep checkpoints after the final save (default: delete)."
    ),
    resume: bool | None = typer.Option(
        None, "--resume/--no-resume", help="Continue from the last checkpoint in the run directory (default: on)."
    ),
    skip_invalid: bool | None = typer.Option(None, "--skip-invalid", help="Train on the valid rows only."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete the run directory first."),
    format: str | None = FORMAT,
) -> None:
    """Fine-tune a base model on instruction data: Alpaca rows in the Alpaca prompt format (loss on the
    responses), conversations with the base model's chat template (loss on the assistant turns; docs/formats.md)."""
    from alpagasus.train import make_config
    from alpagasus.train import train as run_train

    with user_errors(ValueError):  # a bad setting, file or base model: one message, exit status 2
        config = make_config(
            recipe,
            base=base,
            epochs=epochs,
            learning_rate=lr,
            batch_size=batch_size,
            per_device_batch_size=per_device_batch_size,
            max_length=max_length,
            lr_scheduler=scheduler,
            warmup_ratio=warmup_ratio,
            weight_decay=weight_decay,
            max_steps=max_steps,
            seed=seed,
            precision=precision,
            gradient_checkpointing=gradient_checkpointing,
            lora=lora,
            lora_r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            lora_targets=lora_targets,
            save_steps=save_steps,
            keep_checkpoints=keep_checkpoints,
            resume=resume,
            skip_invalid=skip_invalid,
        )
        metrics = run_train(data, output, config, overwrite=overwrite, format=format)
    if os.environ.get("RANK", "0") != "0":  # one summary for a multi-process run
        return
    summary = {
        k: metrics.get(k)
        for k in ("steps", "examples_trained", "tokens_seen", "final_loss", "wall_time_s", "resumed_from")
    }
    typer.echo(json.dumps(summary))
    typer.echo(f"model saved in {output} (metrics.json, config.yaml)")
