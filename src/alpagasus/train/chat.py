"""Chat-format training examples: a conversation rendered with the base model's chat template, the loss on the
assistant turns only (docs/formats.md).

The template is the model's own when it has one; a template without `{% generation %}` markers is replaced by
TRL's training variant of it (TRL ships them for the Gemma, Llama 3, Qwen, Phi... templates); a base model with no
template (the embedded Gemma 3 270M base) gets alpagasus' default, Gemma's own turn format
(prompts/chat_gemma_turns.txt). The markers tell transformers' `apply_chat_template(...,
return_assistant_tokens_mask=True)` which tokens the assistant wrote: the same call TRL's `assistant_only_loss`
makes, here done once, before the trainer, so that chat and Alpaca examples reach `SFTTrainer` in one shape
(input_ids and labels) with the same truncation and counts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from alpagasus.alpaca import IGNORE_INDEX
from alpagasus.prompts import builtin_text
from alpagasus.train.config import TrainError

DEFAULT_TEMPLATE = "chat_gemma_turns"  # prompts/chat_gemma_turns.txt
# the default template's turn tokens: a base model without them cannot learn to end a turn in one token
DEFAULT_TURN_TOKENS = ("<start_of_turn>", "<end_of_turn>")
_PROBE = [
    {"role": "user", "content": "Hi."},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Bye."},
]


@dataclass(frozen=True)
class ChatTemplate:
    """The template training renders conversations with, where it came from, and the token that ends an
    assistant turn (trained, and a stop token of the saved model's generation config)."""

    text: str
    source: str  # "model" | "trl" (TRL's training variant of the model's) | "default"
    stop_id: int


def chat_prompt_format() -> str:
    """What config.yaml records as the prompt format of a chat run (the default template's content hash: a run
    directory refuses to resume with another)."""
    return "chat@" + hashlib.sha256(builtin_text(DEFAULT_TEMPLATE).encode()).hexdigest()[:10]


def training_template(tok: Any, base: str) -> ChatTemplate:
    """The chat template to train `base` with (its tokenizer `tok`), with generation markers; a TrainError that
    says what to do when there is none."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    own = tok.chat_template
    if isinstance(own, dict):  # a template shipped as named variants: the default one
        own = own.get("default")
    if not own:
        missing = [t for t in DEFAULT_TURN_TOKENS if t not in tok.get_vocab()]
        if missing:
            raise TrainError(
                f"{base}: the base model has no chat template, and its vocabulary lacks {', '.join(missing)} "
                "(the default template's turn tokens); train on a base model that has a chat template, or on "
                "Alpaca-format data"
            )
        text, source = builtin_text(DEFAULT_TEMPLATE), "default"
    elif has_generation_markers(own):
        text, source = own, "model"
    else:
        try:
            patched = get_training_chat_template(tok)
        except ValueError:
            raise TrainError(
                f"{base}: the model's chat template has no {{% generation %}} markers (they say which tokens the "
                "assistant wrote, for the loss) and TRL has no training variant of it; save a copy of the model "
                "whose template wraps each assistant turn in {% generation %}...{% endgeneration %} (docs/formats.md)"
            ) from None
        text, source = (patched, "trl") if patched else (own, "model")
    return ChatTemplate(text, source, _stop_id(tok, text, base))


def _stop_id(tok: Any, template: str, base: str) -> int:
    """The token that ends an assistant turn: the last one the template marks as the assistant's (whitespace
    aside), which must be a special token; otherwise the model would never learn to stop."""
    out = tok.apply_chat_template(
        _PROBE, chat_template=template, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    special = set(tok.get_added_vocab().values()) | set(tok.all_special_ids)
    for token, mine in reversed(list(zip(out["input_ids"], out["assistant_masks"]))):
        if mine and tok.decode([token]).strip():
            if token in special:
                return int(token)
            break
    raise TrainError(
        f"{base}: the chat template leaves the assistant's end-of-turn token out of {{% generation %}}: the model "
        "would never learn to stop; put the token inside the markers (docs/formats.md)"
    )


def tokenize_chat(tok: Any, messages: list[dict[str, str]], template: str, max_length: int | None) -> dict:
    """input_ids and labels for one conversation: every token outside the assistant turns (system, user, the
    template's headers) is IGNORE_INDEX; the assistant turns' tokens, their end-of-turn token included, are
    learned. Cut to `max_length` from the right, as the Alpaca examples are."""
    out = tok.apply_chat_template(
        messages, chat_template=template, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    input_ids = list(out["input_ids"])
    labels = [t if mine else IGNORE_INDEX for t, mine in zip(input_ids, out["assistant_masks"])]
    truncated = max_length is not None and len(input_ids) > max_length
    if truncated:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {"input_ids": input_ids, "labels": labels, "truncated": truncated}
