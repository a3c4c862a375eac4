"""Answers of a model to the test sets (or any questions), resumable, with transformers, an API or vLLM."""
from alpagasus.generate.answer import GenerateConfig, GenerateResult, generate, read_answers

__all__ = ["generate", "GenerateConfig", "GenerateResult", "read_answers"]
