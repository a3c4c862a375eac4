"""A rubric: what a judging run needs of its prompt besides the text. The version stored with every reply,
the scale a score must fall in, and the parser of a written reply (a rating's score, a review's two)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

from alpagasus.prompts.parse import Parsed, parse_pair_reply, parse_score
from alpagasus.prompts.template import Template


@dataclass(frozen=True)
class Rubric:
    version: str
    scale: tuple[float, float]
    parse: Callable[[str | None], Parsed]

    @classmethod
    def rating(cls, template: Template) -> Rubric:
        """One score per reply (the paper's rating prompt)."""
        lo, hi = template.scale
        return cls(template.version, template.scale, functools.partial(parse_score, lo=lo, hi=hi))

    @classmethod
    def pairwise(cls, template: Template) -> Rubric:
        """Two scores per reply, Assistant 1's first (the paper's review prompt); the second goes to `extra`."""
        lo, hi = template.scale
        return cls(template.version, template.scale, functools.partial(parse_pair_reply, lo=lo, hi=hi))

    def in_scale(self, score: float) -> bool:
        return self.scale[0] <= score <= self.scale[1]
