"""How to reach a model's provider: one client setup per provider, and its Batch API adapter.

`openai.py` builds every OpenAI client (judges, `--batch`, `generate --backend openai`): base URL, key, timeouts,
no client retries (the engine owns the retry policy), connection limits. `openai_batch.py` speaks the Files and
Batches endpoints, `anthropic.py` builds the Anthropic client, `anthropic_batch.py` speaks Message Batches; both
adapters implement `engine.batchapi.BatchApi`, so the batch engine imports no provider's client. Nothing here
imports a client package until a client is built.
`vllm.py` builds every in-process vLLM engine (the `vllm:` and `ifd:vllm:` judges, `generate --backend vllm`).
"""

__all__ = ["openai", "openai_batch", "anthropic", "anthropic_batch", "vllm"]
