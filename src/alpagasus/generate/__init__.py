"""Answers of a model to the test sets (or any questions), resumable, with transformers, an API or vLLM."""

from alpagasus.generate.answer import GenerateResult, generate, read_answer_file
from alpagasus.generate.config import GenerateConfig

__all__ = ["generate", "GenerateConfig", "GenerateResult", "read_answer_file"]
