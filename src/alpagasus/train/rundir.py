"""The run directory: one run per directory (another run's settings are refused), the finished run's metrics
returned instead of training again, checkpoints to resume from, and the training clock kept in each checkpoint."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from alpagasus.data import write_json
from alpagasus.train.config import CLOCK_FILE, CONFIG_FILE, METRICS_FILE, RUNTIME_FIELDS, TrainConfig, TrainError


def check_run_dir(run_dir: Path, resolved: dict) -> dict | None:
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


def claim_run_dir(run_dir: Path, resolved: dict[str, Any], overwrite: bool) -> tuple[Any, dict | None]:
    """(accelerate's process state, the metrics of an identical finished run or None), every process agreeing;
    with `overwrite`, the main process deletes the directory first."""
    from accelerate import PartialState

    state = PartialState()
    if overwrite:
        if state.is_main_process and run_dir.exists():
            shutil.rmtree(run_dir)
        state.wait_for_everyone()
    done = check_run_dir(run_dir, resolved)
    state.wait_for_everyone()  # nobody writes into run_dir before every process has looked at it
    return state, done


def last_checkpoint(run_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(run_dir)) if run_dir.exists() else None


def finish_run_dir(run_dir: Path, metrics: dict[str, Any], config: TrainConfig) -> None:
    """metrics.json (its `completed` marks the run finished), then the checkpoints go unless kept."""
    write_json(run_dir / METRICS_FILE, metrics)
    if not config.keep_checkpoints:
        for ckpt in run_dir.glob("checkpoint-*"):
            shutil.rmtree(ckpt, ignore_errors=True)


def clock_callback(checkpoint: str | None) -> Any:
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
