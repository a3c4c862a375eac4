"""Supervised fine-tuning on TRL's SFTTrainer (full fine-tuning or LoRA through PEFT), resumable.

The paper's settings are the defaults (3 epochs, lr 2e-5, batch 128, length 512, cosine, 3% warmup). Alpaca rows
train in the Alpaca prompt format (loss on the response and EOS); conversations (OpenAI messages, ShareGPT) with
the base model's chat template (loss on the assistant turns; docs/formats.md). Multi-GPU runs need no code of their
own: `accelerate launch --config_file configs/fsdp.yaml -m alpagasus.cli train ...` (docs/train_generate.md).

    config.py   TrainConfig, make_config (recipe then flags), the resolved settings config.yaml records
    data.py     the examples read and tokenized into input_ids and labels (Alpaca or chat)
    chat.py     the chat template a base model trains with, and a conversation's labels
    rundir.py   the run directory: refusal of another run's settings, checkpoints, the training clock
    trainer.py  `train`: SFTTrainer built, run, the final model saved, metrics.json
"""

from alpagasus.train.chat import ChatTemplate, tokenize_chat, training_template
from alpagasus.train.config import (
    CLOCK_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    RUNTIME_FIELDS,
    TrainConfig,
    TrainError,
    load_train_recipe,
    make_config,
)
from alpagasus.train.data import build_dataset, is_chat, load_examples
from alpagasus.train.trainer import train

__all__ = [
    "TrainConfig",
    "TrainError",
    "make_config",
    "load_train_recipe",
    "load_examples",
    "train",
    "build_dataset",
    "is_chat",
    "tokenize_chat",
    "training_template",
    "ChatTemplate",
    "CONFIG_FILE",
    "METRICS_FILE",
    "CLOCK_FILE",
    "RUNTIME_FIELDS",
]
