"""The training examples: read in any format, then tokenized into input_ids and labels (-100 where no loss is
taken). Alpaca and Dolly rows train in the Alpaca prompt format (alpaca.py: prompt + response + EOS, the loss on
the response); conversations (OpenAI messages, ShareGPT) with a chat template, the loss on the assistant turns
(train/chat.py). One file is one format, so a run is one or the other."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable, Mapping

from alpagasus import formats
from alpagasus.alpaca import IGNORE_INDEX, prompt_version, tokenize_example
from alpagasus.data import DataError, read_examples, to_example
from alpagasus.records import Example
from alpagasus.train.chat import chat_prompt_format, tokenize_chat


def load_examples(
    data: str | Path | Iterable[Example | Mapping[str, Any]], skip_invalid: bool = False, format: str | None = None
) -> list[Example]:
    """Examples from a dataset file (any format `read_examples` reads), Example objects, or plain dicts; in
    `format` (a formats/ name), or the one detected from the rows."""
    if isinstance(data, (str, Path)):
        return read_examples(data, skip_invalid=skip_invalid, format=format).examples
    out = []
    for row, item in enumerate(data, 1):
        ex = item if isinstance(item, Example) else to_example(item, row, "<examples>", format=format)
        if not isinstance(ex, Example):
            if skip_invalid:
                continue
            raise DataError(str(ex))
        out.append(ex)
    return out


def is_chat(examples: list[Example]) -> bool:
    """Whether these examples train as conversations (chat template) rather than in the Alpaca prompt format:
    rows without Alpaca's three fields (`parts`), i.e. OpenAI messages or ShareGPT rows."""
    chat = {ex.parts is None for ex in examples}
    if len(chat) > 1:  # a file is read in one format; only examples given in code can mix them
        raise DataError("the training examples mix conversations and Alpaca rows; train on one format at a time")
    return chat == {True}


def prompt_format(chat: bool) -> str:
    """The prompt format config.yaml records (a template's change makes another run)."""
    return chat_prompt_format() if chat else prompt_version()


def data_digest(examples: list[Example]) -> str:
    return hashlib.sha256("\n".join(e.id for e in examples).encode()).hexdigest()[:16]


def tokenize_one(ex: Example, tok: Any, max_length: int, chat_template: str | None) -> dict:
    """input_ids, labels and `truncated` for one example: with the chat template for a conversation, in the
    Alpaca prompt format for an Alpaca row."""
    if chat_template is not None:
        return tokenize_chat(tok, formats.training_messages(ex), chat_template, max_length)
    if ex.parts is None:
        raise DataError(f"row {ex.row}: a conversation, but no chat template was chosen")
    instruction, input, output = ex.parts
    return tokenize_example(tok, instruction, input, output, max_length)


def build_dataset(
    examples: Iterable[Example], tok: Any, max_length: int, chat_template: str | None = None
) -> tuple[Any, dict[str, int]]:
    """A datasets.Dataset of input_ids and labels for training, and counts: rows with nothing left to learn
    within max_length (the prompt alone fills it) are dropped, truncated ones counted."""
    from datasets import Dataset

    ids, labels, truncated, dropped, tokens, response = [], [], 0, 0, 0, 0
    for ex in examples:
        item = tokenize_one(ex, tok, max_length, chat_template)
        learned = sum(1 for x in item["labels"] if x != IGNORE_INDEX)
        if learned == 0:  # nothing to learn from this row
            dropped += 1
            continue
        truncated += item["truncated"]
        ids.append(item["input_ids"])
        labels.append(item["labels"])
        tokens += len(item["input_ids"])
        response += learned
    stats = {
        "examples_trained": len(ids),
        "examples_truncated": truncated,
        "examples_dropped": dropped,
        "dataset_tokens": tokens,
        "dataset_response_tokens": response,
    }
    return Dataset.from_dict({"input_ids": ids, "labels": labels}), stats
