"""What pairwise comparison works on: a question both models answered, a question that could not be matched,
what a judging run did, and a comparison's result."""

from __future__ import annotations

from dataclasses import dataclass, field

from alpagasus.engine.types import RunCounts
from alpagasus.records import Judgment, content_id

ORDERS = ("ab", "ba")


@dataclass
class Pair:
    """One question both models answered."""

    testset: str
    question_id: str
    question: str
    answer_a: str
    answer_b: str
    skill: str | None = None

    def answers(self, order: str) -> tuple[str, str]:
        """(Assistant 1's answer, Assistant 2's) in this order."""
        return (self.answer_a, self.answer_b) if order == "ab" else (self.answer_b, self.answer_a)

    def item_id(self, order: str) -> str:
        return content_id(self.question, *self.answers(order))


@dataclass
class Mismatch:
    testset: str
    question_id: str
    reason: str

    def __str__(self) -> str:
        return f"{self.testset}/{self.question_id}: {self.reason}"


@dataclass
class Judging:
    """What judging a set of pairs did: prompts the store already held, and the engine's run for the rest."""

    already_in_store: int = 0
    run: RunCounts = field(default_factory=RunCounts)


@dataclass
class CompareResult:
    model_a: str
    model_b: str
    judge: str
    prompt_version: str
    pairs: list[Pair]
    judgments: list[Judgment]
    summary: dict  # aggregate(): per test set and "all"
    mismatches: list[Mismatch] = field(default_factory=list)
    judging: Judging | None = None  # requests sent, tokens, cost (None: re-aggregated)
    order_blind: bool = False  # the judge scores each answer alone (judges/pointwise.py)
