"""Shared fixtures: tiny random models built from a config (no download), real data from ../shared/data."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODELS_DIR = os.environ.get("ALPAGASUS_MODELS_DIR") or str(
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "alpagasus" / "models"
)
SHARED_DATA = Path(os.environ.get("ALPAGASUS_SHARED_DATA", REPO.parent / "shared" / "data"))

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def plain(text: str) -> str:
    """What a terminal shows, as words: rich's table and panel lines (box drawing, U+2500-U+257F) and runs of
    whitespace become one space, so tests assert on labels and numbers, not on how a table is drawn."""
    return " ".join(re.sub("[\u2500-\u257f]", " ", text).split())


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never touch the user's real cache (the default store lives there)."""
    cache = tmp_path_factory.getbasetemp() / "xdg-cache"
    # converted embedded models are a pure function of the shipped weights: keep them between runs
    monkeypatch.setenv("ALPAGASUS_MODELS_DIR", MODELS_DIR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def alpaca_rows() -> list[dict]:
    return json.loads((SHARED_DATA / "alpaca" / "alpaca_random_9k.json").read_text())


def build_tiny_model(path: Path, texts: list[str], layers: int = 2, hidden: int = 64, vocab: int = 800) -> Path:
    """A 2-layer random Llama with a BPE tokenizer trained here on `texts`; digits are single tokens."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHATML
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = fast.pad_token_id
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, alpaca_rows) -> Path:
    """Path of a tiny random causal LM directory (transformers format)."""
    texts = [f"{r['instruction']} {r['input']} {r['output']}" for r in alpaca_rows[:2000]]
    texts += ["Score: 0 1 2 3 4 5 6 7 8 9 10", "### Instruction: ### Input: ### Response:"]
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), texts)
