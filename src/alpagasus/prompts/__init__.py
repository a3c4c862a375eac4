"""Prompts are files: templates (`*.txt` here) with a version recorded in every reply, and the parsers of the
judges' replies (parse.py). A rubric bundles what a run needs of a prompt: version, scale, parser."""

from alpagasus.prompts.rubric import Rubric
from alpagasus.prompts.template import (
    BUILTIN_RATING,
    PLACEHOLDER,
    Template,
    TemplateError,
    builtin_text,
    load_template,
    parse_template,
)

__all__ = [
    "Template",
    "TemplateError",
    "Rubric",
    "load_template",
    "parse_template",
    "builtin_text",
    "BUILTIN_RATING",
    "PLACEHOLDER",
]
