"""Fine-tuning: response-only labels, loss going down, a reloadable run dir, resume, LoRA, recipes and the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from alpagasus.alpaca import IGNORE_INDEX, alpaca_prompt, tokenize_example
from alpagasus.cli import app
from alpagasus.data import DataError
from alpagasus.train import TrainConfig, TrainError, make_config, train

pytestmark = pytest.mark.slow  # trains tiny models with TRL

METRIC_FIELDS = {
    "completed",
    "steps",
    "examples",
    "tokens_seen",
    "final_loss",
    "loss_history",
    "wall_time_s",
    "train_time_s",
    "start_step",
    "resumed_from",
    "examples_trained",
    "dataset_response_tokens",
}


@pytest.fixture(scope="module")
def rows(alpaca_rows) -> list[dict]:
    """64 real Alpaca rows with a non-empty output, some with an input."""
    out = [r for r in alpaca_rows if r["output"].strip()][:64]
    assert any(r["input"].strip() for r in out) and any(not r["input"].strip() for r in out)
    return out


@pytest.fixture(scope="module")
def data_file(tmp_path_factory, rows) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.json"
    path.write_text(json.dumps(rows))
    return path


def fast(tiny_model: Path, **kw) -> TrainConfig:
    """Small batches and a high learning rate so that a few steps on CPU show learning."""
    base: dict[str, Any] = dict(
        base=str(tiny_model),
        batch_size=4,
        per_device_batch_size=4,
        max_length=128,
        learning_rate=3e-2,
        warmup_ratio=0.0,
        save_steps=100,
        logging_steps=1,
    )
    base.update(kw)
    return TrainConfig(**base)


def full(tiny_model: Path, **kw) -> TrainConfig:
    """The shared run: four examples, ten steps, a checkpoint at step 5."""
    return fast(tiny_model, **{"max_steps": 10, "save_steps": 5, **kw})


def tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


@pytest.mark.parametrize("with_input", [True, False])
def test_labels_mask_the_prompt_and_keep_response_and_eos(tiny_model, rows, with_input):
    tok = tokenizer(tiny_model)
    row = next(r for r in rows if bool(r["input"].strip()) == with_input)
    item = tokenize_example(tok, row["instruction"], row["input"], row["output"], max_length=None)
    ids, labels = item["input_ids"], item["labels"]
    n_prompt = len(tok(alpaca_prompt(row["instruction"], row["input"]))["input_ids"])
    assert len(ids) == len(labels) and not item["truncated"]
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:] and IGNORE_INDEX not in labels[n_prompt:]
    assert labels[-1] == tok.eos_token_id
    assert tok.decode(ids[:n_prompt]) == alpaca_prompt(row["instruction"], row["input"])
    assert tok.decode(labels[n_prompt:-1]) == row["output"]
    assert ("### Input:" in tok.decode(ids[:n_prompt])) == with_input


def test_truncation_keeps_the_start_and_trl_keeps_our_labels(tiny_model, rows, tmp_path):
    """SFTTrainer must take our labels as they are (not rebuild them over the whole sequence)."""
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from alpagasus.records import Example
    from alpagasus.train import build_dataset

    tok = tokenizer(tiny_model)
    examples = [Example.alpaca(r["instruction"], r["input"], r["output"]) for r in rows[:8]]
    dataset, stats = build_dataset(examples, tok, max_length=128)
    assert stats["examples_truncated"] > 0 and all(len(x) <= 128 for x in dataset["input_ids"])
    args = SFTConfig(
        output_dir=str(tmp_path),
        report_to="none",
        use_cpu=True,
        bf16=False,
        max_length=128,
        activation_checkpointing=False,
    )
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model), args=args, train_dataset=dataset, processing_class=tok
    )
    assert trainer.train_dataset["labels"] == dataset["labels"]
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    first_learned = dataset["labels"][0].index(next(x for x in dataset["labels"][0] if x != IGNORE_INDEX))
    assert (batch["labels"][0, :first_learned] == IGNORE_INDEX).all()


@pytest.fixture(scope="module")
def trained(tiny_model, rows, tmp_path_factory) -> tuple[Path, dict]:
    """Four examples seen ten times at a high learning rate."""
    run = tmp_path_factory.mktemp("runs") / "full"
    metrics = train(rows[:4], run, full(tiny_model))
    return run, metrics


def test_loss_goes_down(trained):
    _, metrics = trained
    losses = [h["loss"] for h in metrics["loss_history"]]
    assert [h["step"] for h in metrics["loss_history"]] == list(range(1, 11))
    assert losses[-1] < 0.7 * losses[0], losses


def test_run_dir_has_metrics_and_reloads(trained, tiny_model):
    import torch

    from alpagasus.models import load_causal_lm

    run, metrics = trained
    saved = json.loads((run / "metrics.json").read_text())
    assert METRIC_FIELDS <= saved.keys()
    assert saved["steps"] == 10 and saved["examples"] == 4 and saved["start_step"] == 0
    assert saved["tokens_seen"] >= 10 * 4 * 20 and saved["final_loss"] == saved["loss_history"][-1]["loss"]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["learning_rate"] == 3e-2 and config["gradient_accumulation_steps"] == 1
    assert not list(run.glob("checkpoint-*")), "checkpoints are removed after the final save"
    lm, tok = load_causal_lm(str(run))
    ids = tok(alpaca_prompt("Name a primary color."), return_tensors="pt")
    with torch.inference_mode():
        out = lm.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
    base, _ = load_causal_lm(str(tiny_model))
    assert not torch.equal(base.model.embed_tokens.weight, lm.model.embed_tokens.weight)


def test_finished_run_is_not_trained_again_and_other_settings_are_refused(trained, tiny_model, rows):
    run, metrics = trained
    again = train(rows[:4], run, full(tiny_model))
    assert again == json.loads((run / "metrics.json").read_text())
    with pytest.raises(TrainError, match="learning_rate"):
        train(rows[:4], run, full(tiny_model, learning_rate=1e-4))


class Interrupted(Exception):
    pass


def stop_after_save(step: int):
    """A callback that simulates a crash right after the checkpoint of `step` is written."""
    from transformers import TrainerCallback

    class StopAfterSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise Interrupted(f"simulated crash after step {step}")

    return StopAfterSave()


def step_recorder():
    from transformers import TrainerCallback

    class RecordSteps(TrainerCallback):
        steps: list[int] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.steps.append(state.global_step)

    return RecordSteps()


def test_resume_continues_from_the_last_checkpoint(tiny_model, data_file, tmp_path):
    run = tmp_path / "run"
    config = fast(tiny_model, max_steps=4, save_steps=2)
    with pytest.raises(Interrupted):
        train(data_file, run, config, callbacks=[stop_after_save(2)])
    assert (run / "checkpoint-2").is_dir() and not (run / "metrics.json").exists()
    clock = run / "checkpoint-2" / "alpagasus_clock.json"
    assert json.loads(clock.read_text())["train_time_s"] > 0  # the training seconds up to the checkpoint
    clock.write_text(json.dumps({"train_time_s": 1000.0, "step": 2}))  # a known value, to see it carried over
    recorder = step_recorder()
    metrics = train(data_file, run, config, callbacks=[recorder])
    assert recorder.steps == [3, 4]
    assert metrics["resumed_from"] == "checkpoint-2" and metrics["start_step"] == 2 and metrics["steps"] == 4
    # the time of the steps kept: before the checkpoint plus after the resume, not just the last part
    assert 1000.0 < metrics["train_time_total_s"] <= 1000.0 + metrics["train_time_s"] + 0.5
    assert [h["step"] for h in metrics["loss_history"]] == [1, 2, 3, 4]
    assert (run / "model.safetensors").exists()


def test_lora_trains_and_saves_adapter_and_merged_model(tiny_model, rows, tmp_path):
    import torch

    from alpagasus.models import load_causal_lm

    run = tmp_path / "lora"
    metrics = train(rows[:4], run, fast(tiny_model, lora=True, lora_r=4, lora_alpha=8, max_steps=3, learning_rate=1e-2))
    assert metrics["steps"] == 3 and metrics["lora"]
    assert (run / "adapter" / "adapter_config.json").exists()
    merged, _ = load_causal_lm(str(run))
    base, _ = load_causal_lm(str(tiny_model))
    q_merged = merged.model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(q_merged, base.model.layers[0].self_attn.q_proj.weight)
    assert torch.equal(merged.model.embed_tokens.weight, base.model.embed_tokens.weight), "LoRA leaves embeddings"


def test_recipe_then_flags(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  learning_rate: 2e-5\n  epochs: 2\n  lora: true\n  max_length: 256\n")
    config = make_config(recipe, epochs=1, max_length=None)
    assert (config.learning_rate, config.epochs, config.lora, config.max_length) == (2e-5, 1, True, 256)
    assert TrainConfig().batch_size == 128 and TrainConfig().lr_scheduler == "cosine"
    recipe.write_text("learning_rate: fast\n")
    with pytest.raises(DataError, match=r"r\.yaml.*learning_rate"):
        make_config(recipe)
    recipe.write_text("lr: 1e-5\n")
    with pytest.raises(DataError, match="unknown training setting 'lr'"):
        make_config(recipe)


def test_cli_train_with_recipe_and_flags(tiny_model, data_file, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "base": str(tiny_model),
                "batch_size": 4,
                "per_device_batch_size": 4,
                "learning_rate": 1e-3,
                "max_length": 128,
            }
        )
    )
    run = tmp_path / "cli-run"
    result = CliRunner().invoke(
        app, ["train", str(data_file), "-o", str(run), "--recipe", str(recipe), "--max-steps", "2", "--lr", "5e-4"]
    )
    assert result.exit_code == 0, result.output
    assert '"steps": 2' in result.output
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["learning_rate"] == 5e-4 and config["batch_size"] == 4 and config["max_steps"] == 2


def test_cli_train_names_the_bad_row(tmp_path, tiny_model):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"instruction": "a", "input": "", "output": "b"})
        + "\n"
        + json.dumps({"instruction": "c", "input": "", "output": ""})
        + "\n"
    )
    result = CliRunner().invoke(app, ["train", str(bad), "-o", str(tmp_path / "r"), "--base", str(tiny_model)])
    assert result.exit_code == 2
    assert "bad.jsonl, row 2, field 'output': is empty" in result.output
