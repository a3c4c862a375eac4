"""alpagasus: choose instruction-tuning data with an LLM judge (Chen et al., 2023, arXiv 2307.08701).

Library first: `read_examples`, `rate`, `select`; the CLI is a thin layer over these.
Importing this package never imports torch or transformers.
"""
from alpagasus.records import Answer, Example, Judgment, Rating, Reply, Request

__version__ = "0.1.0"

__all__ = ["Answer", "Example", "Judgment", "Rating", "Reply", "Request", "__version__"]
