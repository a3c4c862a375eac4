"""Where answers come from: transformers in process, an OpenAI-compatible endpoint, or vLLM in process.

The local backends share `encode_prompts`, so transformers and vLLM see the very same token ids (tested on
CPU through the transformers path); the OpenAI backend sends the same Alpaca prompt text (the server's
tokenizer then adds its own BOS) or the question as a chat message.
"""

from __future__ import annotations

import asyncio
from typing import Any

from alpagasus.alpaca import alpaca_prompt, cut_at_stop
from alpagasus.generate.config import BACKENDS, GenerateConfig, stops_for
from alpagasus.models import chat_prompt, generate_tokens, has_chat_template, load_causal_lm, prompt_ids
from alpagasus.testsets import Question


class BackendError(RuntimeError):
    pass


def encode_prompts(questions: list[Question], prompt_format: str, tokenizer: Any) -> list[list[int]]:
    """Token ids of each question's prompt: the Alpaca prompt (as in training, with the tokenizer's own special
    tokens) or the model's chat template with the question as the user turn."""
    if prompt_format == "alpaca":
        return [list(tokenizer(alpaca_prompt(q.instruction, q.input))["input_ids"]) for q in questions]
    if prompt_format != "chat":
        raise ValueError(f"prompt format must be alpaca or chat, not {prompt_format!r}")
    # chat_prompt would fall back to plain text; here the chat format was asked for explicitly
    if not has_chat_template(tokenizer):
        raise BackendError("this model's tokenizer has no chat template; use the Alpaca format (drop --chat-template)")
    return [prompt_ids(tokenizer, chat_prompt(tokenizer, "", q.question)) for q in questions]


class TransformersBackend:
    """Batched generation with left padding; greedy unless a temperature is set."""

    def __init__(self, model: str, config: GenerateConfig):
        self.config = config
        self.lm, self.tok = load_causal_lm(model, dtype=config.dtype, device=config.device)
        self.tok.padding_side = "left"
        if config.seed is not None:
            import torch

            torch.manual_seed(config.seed)

    def generate(self, questions: list[Question]) -> list[str | Exception]:
        cfg = self.config
        stops = stops_for(cfg)
        out, width = generate_tokens(
            self.lm,
            self.tok,
            encode_prompts(questions, cfg.prompt_format, self.tok),
            cfg.max_new_tokens,
            cfg.temperature,
            cfg.top_p,
            stops,
        )
        texts = self.tok.batch_decode(out[:, width:], skip_special_tokens=True)
        return [cut_at_stop(t, stops) for t in texts]


class VLLMBackend:
    """vLLM in process (GPU machines); imported only when chosen."""

    def __init__(self, model: str, config: GenerateConfig):
        from alpagasus.backends import vllm

        self.config = config
        self.llm = vllm.engine(model, BackendError, "the vllm backend needs vLLM", seed=config.seed or 0)
        self.tok = self.llm.get_tokenizer()
        self.params = vllm.sampling(
            temperature=config.temperature,
            top_p=config.top_p,
            seed=config.seed,
            max_tokens=config.max_new_tokens,
            stop=stops_for(config) or None,
        )

    def generate(self, questions: list[Question]) -> list[str | Exception]:
        ids = encode_prompts(questions, self.config.prompt_format, self.tok)
        outs = self.llm.generate([{"prompt_token_ids": i} for i in ids], self.params, use_tqdm=False)
        return [cut_at_stop(o.outputs[0].text, stops_for(self.config)) for o in outs]


class OpenAIBackend:
    """Any OpenAI-compatible server: /v1/completions for the Alpaca prompt, /v1/chat/completions for chat.
    Requests of a batch run concurrently (at most `concurrency` at once); a failed one comes back as its error."""

    def __init__(self, model: str, config: GenerateConfig):
        from alpagasus.backends.openai import resolve

        if resolve(config.base_url, config.api_key)[1] is None:
            raise BackendError("the openai backend needs --base-url URL (or OPENAI_BASE_URL / OPENAI_API_KEY)")
        self.model, self.config = model, config

    def generate(self, questions: list[Question]) -> list[str | Exception]:
        return asyncio.run(self._all(questions))

    async def _all(self, questions: list[Question]) -> list[str | Exception]:
        from alpagasus.backends.openai import openai_client

        cfg = self.config
        limit = asyncio.Semaphore(max(1, cfg.concurrency))
        # one client per batch: its connections belong to this event loop. generate has no retry loop of its own,
        # so its client retries (--max-retries); a local server (a base URL) takes any key
        async with openai_client(
            cfg.base_url, cfg.api_key, cfg.timeout, connections=cfg.concurrency, max_retries=cfg.max_retries
        ) as client:

            async def one(q: Question) -> str | Exception:
                async with limit:
                    try:
                        return await self._ask(client, q)
                    except Exception as e:  # noqa: BLE001 - reported per question, retried on the next run
                        return e

            return list(await asyncio.gather(*(one(q) for q in questions)))

    async def _ask(self, client: Any, q: Question) -> str:
        cfg = self.config
        common: dict[str, Any] = {
            "model": self.model,
            "max_tokens": cfg.max_new_tokens,
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
        }
        if cfg.seed is not None:
            common["seed"] = cfg.seed
        if cfg.prompt_format == "alpaca":
            r = await client.completions.create(
                prompt=alpaca_prompt(q.instruction, q.input), stop=stops_for(cfg), **common
            )
            text = r.choices[0].text if r.choices else None
        else:
            r = await client.chat.completions.create(messages=[{"role": "user", "content": q.question}], **common)
            text = r.choices[0].message.content if r.choices else None
        if text is None:
            raise BackendError("the server returned no text")
        return cut_at_stop(text, stops_for(cfg))


def make_backend(model: str, config: GenerateConfig) -> Any:
    cls = {"transformers": TransformersBackend, "openai": OpenAIBackend, "vllm": VLLMBackend}.get(config.backend)
    if cls is None:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {config.backend!r}")
    return cls(model, config)
