"""The Alpaca prompt format, shared by training and answer generation so both see the same tokens.

Training text is `prompt + response + EOS` with no separator, as in Stanford Alpaca's train.py. The prompt and
the response are tokenized separately and their ids concatenated: the prompt's ids are then exactly those a
generator sees at inference (no token merges across the boundary), and the label mask is exact.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from typing import Any

from alpagasus.prompts import builtin_text

_PLACEHOLDER = re.compile(r"\{(instruction|input)\}")
# A base or lightly trained model often goes on to write the next "### Instruction:" block; answers end there.
STOP_STRINGS = ("### Instruction:", "### Input:", "### Response:")
IGNORE_INDEX = -100


@cache
def _templates() -> tuple[str, str]:
    return builtin_text("alpaca_input"), builtin_text("alpaca_no_input")


def prompt_version() -> str:
    """Content hash of the two templates, recorded with every run and answer."""
    with_input, no_input = _templates()
    return "alpaca@" + hashlib.sha256((with_input + "\0" + no_input).encode()).hexdigest()[:10]


def alpaca_prompt(instruction: str, input: str = "") -> str:
    """The Alpaca prompt (the with-input variant when `input` is not blank), ending in "### Response:"."""
    with_input, no_input = _templates()
    template = with_input if input.strip() else no_input
    values = {"instruction": instruction, "input": input}
    # one pass, so braces or placeholders inside the data are never substituted again
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def cut_at_stop(text: str, stops: tuple[str, ...] | list[str] = STOP_STRINGS) -> str:
    """The answer up to the first stop string, stripped."""
    end = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:end].strip()


def tokenize_example(tokenizer: Any, instruction: str, input: str, output: str, max_length: int | None) -> dict:
    """input_ids and labels for one example: prompt tokens are IGNORE_INDEX; response tokens and EOS are learned.

    The prompt is tokenized with the tokenizer's special tokens (BOS where it adds one, e.g. Gemma), the response
    without, then EOS is appended. Sequences are cut to `max_length` from the right, like the paper's 512.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; training needs one to teach the model to stop")
    prompt_ids = list(tokenizer(alpaca_prompt(instruction, input))["input_ids"])
    response_ids = list(tokenizer(output, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]
    input_ids = prompt_ids + response_ids
    labels = [IGNORE_INDEX] * len(prompt_ids) + response_ids
    truncated = max_length is not None and len(input_ids) > max_length
    if truncated:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {"input_ids": input_ids, "labels": labels, "truncated": truncated}
