"""Training on conversations (OpenAI messages, ShareGPT): the chat template chosen for the base model, the loss
exactly on the assistant turns, and `alpagasus train` end to end on both file formats with a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from alpagasus.alpaca import IGNORE_INDEX
from alpagasus.cli import app
from alpagasus.models import generate_tokens, load_causal_lm, messages_prompt, prompt_ids
from alpagasus.train import TrainConfig, TrainError, tokenize_chat, train, training_template

pytestmark = pytest.mark.slow  # trains tiny models on chat files with TRL

# ChatML with {% generation %} around each assistant turn's content and its <|im_end|>
MARKED_CHATML = (
    "{% for message in messages %}{% if message['role'] == 'assistant' %}<|im_start|>assistant\n"
    "{% generation %}{{ message['content'] }}<|im_end|>\n{% endgeneration %}"
    "{% else %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CONVERSATION = [
    {"role": "system", "content": "You answer in one sentence."},
    {"role": "user", "content": "Name a primary color."},
    {"role": "assistant", "content": "Red is a primary color."},
    {"role": "user", "content": "Name another one."},
    {"role": "assistant", "content": "Blue is another."},
]


def variant(tiny_model: Path, path: Path, template: str | None, turn_tokens: bool = False) -> Path:
    """A copy of the tiny model with another chat template (None: none), and with Gemma's turn tokens added."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    if turn_tokens:
        tok.add_tokens(["<start_of_turn>", "<end_of_turn>"], special_tokens=True)
        model.resize_token_embeddings(len(tok))
    tok.chat_template = template
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def marked_model(tiny_model, tmp_path_factory) -> Path:
    return variant(tiny_model, tmp_path_factory.mktemp("marked"), MARKED_CHATML)


@pytest.fixture(scope="module")
def bare_model(tiny_model, tmp_path_factory) -> Path:
    """No chat template, as the embedded Gemma 3 270M base: the default (Gemma turn) template applies."""
    return variant(tiny_model, tmp_path_factory.mktemp("bare"), None, turn_tokens=True)


def tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def assistant_spans(text: str, answers: list[str], end: str) -> list[tuple[int, int]]:
    """Character spans of each answer and the end-of-turn text after it, found in the rendered conversation."""
    spans, pos = [], 0
    for answer in answers:
        start = text.index(answer + end, pos)
        pos = start + len(answer + end)
        spans.append((start, pos))
    return spans


def check_mask(tok, template: str, end: str) -> dict:
    """tokenize_chat's labels against the tokens whose characters lie in the assistant turns (by offsets)."""
    item = tokenize_chat(tok, CONVERSATION, template, max_length=None)
    text = tok.apply_chat_template(CONVERSATION, chat_template=template, tokenize=False)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    assert item["input_ids"] == enc["input_ids"] and not item["truncated"]
    answers = [m["content"] for m in CONVERSATION if m["role"] == "assistant"]
    spans = assistant_spans(text, answers, end)
    inside = [any(s <= a and b <= e for s, e in spans) for a, b in enc["offset_mapping"]]
    assert any(inside) and not all(inside)
    expected = [t if mine else IGNORE_INDEX for t, mine in zip(item["input_ids"], inside)]
    assert item["labels"] == expected
    learned = [t for t in item["labels"] if t != IGNORE_INDEX]
    assert tok.decode(learned) == "".join(a + end for a in answers)
    return item


def test_labels_are_learned_exactly_on_the_assistant_turns(marked_model):
    tok = tokenizer(marked_model)
    template = training_template(tok, str(marked_model))
    assert template.source == "model" and template.text == MARKED_CHATML
    assert template.stop_id == tok.convert_tokens_to_ids("<|im_end|>")
    item = check_mask(tok, template.text, "<|im_end|>\n")
    # the system prompt, the user turns and the "<|im_start|>assistant\n" headers carry no loss
    text = tok.decode([t for t, lab in zip(item["input_ids"], item["labels"]) if lab == IGNORE_INDEX])
    assert "You answer in one sentence." in text and "Name another one." in text
    assert text.count("<|im_start|>assistant\n") == 2


def test_truncation_cuts_from_the_right(marked_model):
    tok = tokenizer(marked_model)
    full = tokenize_chat(tok, CONVERSATION, MARKED_CHATML, max_length=None)
    cut = tokenize_chat(tok, CONVERSATION, MARKED_CHATML, max_length=20)
    assert cut["truncated"] and cut["input_ids"] == full["input_ids"][:20] and cut["labels"] == full["labels"][:20]


def test_a_base_without_a_template_gets_the_gemma_turn_format(bare_model):
    tok = tokenizer(bare_model)
    assert not tok.chat_template
    template = training_template(tok, str(bare_model))
    assert template.source == "default" and "generation -%}" in template.text
    assert template.stop_id == tok.convert_tokens_to_ids("<end_of_turn>")
    check_mask(tok, template.text, "<end_of_turn>\n")
    text = tok.apply_chat_template(CONVERSATION, chat_template=template.text, tokenize=False)
    # Gemma has no system role: the system prompt opens the first user turn; the assistant's role is "model"
    assert text.startswith(tok.bos_token + "<start_of_turn>user\nYou answer in one sentence.\n\nName a primary")
    assert text.count("<start_of_turn>model\n") == 2 and "assistant" not in text
    prompt = tok.apply_chat_template(
        CONVERSATION[:2], chat_template=template.text, tokenize=False, add_generation_prompt=True
    )
    assert prompt.endswith("<end_of_turn>\n<start_of_turn>model\n")


def test_a_template_trl_knows_gets_its_training_variant(tiny_model, tmp_path):
    from trl.chat_template_utils import qwen2_5_chat_template

    tok = tokenizer(variant(tiny_model, tmp_path / "qwen", qwen2_5_chat_template))
    template = training_template(tok, "qwen-like")
    assert template.source == "trl" and template.text != qwen2_5_chat_template
    assert template.stop_id == tok.convert_tokens_to_ids("<|im_end|>")
    item = tokenize_chat(tok, CONVERSATION, template.text, max_length=None)
    learned = tok.decode([t for t in item["labels"] if t != IGNORE_INDEX])
    # TRL's Qwen variant also marks the newline after the header; the answers and their end of turn are in
    assert "Red is a primary color.<|im_end|>" in learned and "Blue is another.<|im_end|>" in learned
    assert "Name another one." not in learned and "assistant" not in learned and "system" not in learned


def test_templates_that_cannot_mask_are_refused_with_what_to_do(tiny_model, tmp_path):
    chatml = tokenizer(tiny_model)  # ChatML without generation markers, which TRL does not know
    with pytest.raises(TrainError, match="generation"):
        training_template(chatml, "plain-chatml")
    bare = tokenizer(variant(tiny_model, tmp_path / "bare-no-turns", None))
    with pytest.raises(TrainError, match="no chat template.*<start_of_turn>"):
        training_template(bare, "bare")
    unstoppable = MARKED_CHATML.replace("<|im_end|>\n{% endgeneration %}", "{% endgeneration %}<|im_end|>\n")
    with pytest.raises(TrainError, match="never learn to stop"):
        training_template(tokenizer(variant(tiny_model, tmp_path / "nostop", unstoppable)), "nostop")


# ---- end to end -------------------------------------------------------------------------------------------
def conversations(alpaca_rows: list[dict], n: int = 50) -> list[list[dict]]:
    """n conversations from real Alpaca rows: a third with a system prompt, a third with two turns."""
    rows = [r for r in alpaca_rows if r["output"].strip() and not r["input"].strip()][: 2 * n]
    out = []
    for i in range(n):
        a, b = rows[2 * i], rows[2 * i + 1]
        turns = [{"role": "system", "content": "You are a helpful assistant."}] if i % 3 == 0 else []
        turns += [{"role": "user", "content": a["instruction"]}, {"role": "assistant", "content": a["output"]}]
        if i % 3 == 1:
            turns += [{"role": "user", "content": b["instruction"]}, {"role": "assistant", "content": b["output"]}]
        out.append(turns)
    return out


@pytest.fixture(scope="module")
def chat_files(alpaca_rows, tmp_path_factory) -> dict[str, Path]:
    convs = conversations(alpaca_rows)
    folder = tmp_path_factory.mktemp("chat")
    messages = folder / "messages.jsonl"
    messages.write_text("".join(json.dumps({"messages": c, "source": "test"}) + "\n" for c in convs))
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    sharegpt = folder / "sharegpt.json"
    rows = [{"conversations": [{"from": names[t["role"]], "value": t["content"]} for t in c]} for c in convs]
    sharegpt.write_text(json.dumps(rows))
    return {"messages": messages, "sharegpt": sharegpt}


@pytest.mark.parametrize("fmt", ["messages", "sharegpt"])
def test_cli_trains_on_a_chat_file(fmt, chat_files, bare_model, tmp_path):
    run = tmp_path / "run"
    args = ["train", str(chat_files[fmt]), "-o", str(run), "--base", str(bare_model), "--max-steps", "2"]
    args += ["--batch-size", "4", "--per-device-batch-size", "4", "--max-length", "128", "--lr", "1e-3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert '"steps": 2' in result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["examples"] == 50 and metrics["chat_template"] == "default"
    assert metrics["examples_trained"] == 50 and 0 < metrics["dataset_response_tokens"] < metrics["dataset_tokens"]
    assert yaml.safe_load((run / "config.yaml").read_text())["prompt_format"].startswith("chat@")
    # the saved model answers in the format it learned: its tokenizer holds the template, it stops at end of turn
    saved = tokenizer(run)
    assert "<start_of_turn>model" in saved.chat_template
    gen = json.loads((run / "generation_config.json").read_text())
    assert saved.convert_tokens_to_ids("<end_of_turn>") in gen["eos_token_id"]
    lm, tok = load_causal_lm(str(run))
    prompt = messages_prompt(tok, CONVERSATION[:2])  # what `generate --chat-template` sends
    assert prompt.endswith("<start_of_turn>model\n") and prompt.count(tok.bos_token) == 1
    out, width = generate_tokens(lm, tok, [prompt_ids(tok, prompt)], max_new_tokens=4)
    assert out.shape[1] > width


def test_the_same_conversations_in_both_formats_train_alike(chat_files, marked_model, tmp_path):
    """ShareGPT's human/gpt are read as user/assistant: both files give the same tokens, the same loss."""
    config = TrainConfig(
        base=str(marked_model), max_steps=1, batch_size=2, per_device_batch_size=2, max_length=96, save_steps=100
    )
    first = train(chat_files["messages"], tmp_path / "m", config)
    second = train(chat_files["sharegpt"], tmp_path / "s", config)
    assert first["chat_template"] == second["chat_template"] == "model"
    keys = ("dataset_tokens", "dataset_response_tokens", "examples_truncated", "final_loss")
    assert [first[k] for k in keys] == [second[k] for k in keys]


def test_a_named_format_is_checked_and_formats_do_not_mix(chat_files, marked_model, tmp_path):
    from alpagasus.data import DataError
    from alpagasus.formats import get
    from alpagasus.records import Example

    run = tmp_path / "r"
    args = ["train", str(chat_files["messages"]), "-o", str(run), "--base", str(marked_model), "--format", "sharegpt"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "messages.jsonl, row 1" in result.output, result.output
    chat = get("messages").read({"messages": CONVERSATION}, 1, "<test>")
    assert isinstance(chat, Example)
    with pytest.raises(DataError, match="mix conversations and Alpaca rows"):
        train([chat, Example.alpaca("Name a color.", "", "Red.")], run, TrainConfig(base=str(marked_model)))
