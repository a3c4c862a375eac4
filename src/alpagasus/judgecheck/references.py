"""Reference sets a judge is measured against: published verdicts read into plain items.

- pairwise, AlpacaEval annotations (`results/<model>/<annotator>/annotations.json` in tatsu-lab/alpaca_eval, a
  JSON list, or JSONL, optionally .gz): {instruction, output_1, generator_1, output_2, generator_2, annotator,
  preference}; preference 1 = output_1 better, 2 = output_2 better, 1.5 or 0 = a draw (AlpacaEval counts 0 as
  a draw), null = no verdict; a continuous value in [1, 2] (AlpacaEval 2's weighted judge) is decided by its
  side of 1.5 and kept as it is for win rates. The judged model is `generator_2`.
- pairwise, AlpaGasus reviews (`compare --reviews-ab/--reviews-ba`): the two orders' reviews of each question,
  with both answers, combined by the paper's rule (compare.aggregate); model B is the judged model.
- rating, a ratings or labels file with a decision column (true/false, or a number kept at >= 4.5), read as
  `alpagasus distill` reads labels; optionally only its uniform rows, or only the rows `distill --holdout F
  --seed S` held out (so a shipped predictor is measured on rows it was not trained on).

Sampling (`sample`): stratified by default (proportional allocation: per judged model for pairwise sets, per
decision for rating sets, so the positive rate is kept), or uniform.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from alpagasus.data import DataError
from alpagasus.records import Example, content_id

SIDES = ("1", "2", "tie")  # a verdict: answer 1 better, answer 2 better, a draw


@dataclass
class PairItem:
    """One question with two answers and the reference's verdict on them."""

    key: str  # content id of (question, answer 1, answer 2[, judged model])
    question: str
    answer_1: str
    answer_2: str
    reference: str | None  # "1" | "2" | "tie"; None: the reference gave no verdict
    preference: float | None  # the reference's preference for answer 2 in [0, 1] (a draw 0.5), for win rates
    group: str  # the judged model (answer 2's), for per-model win rates
    source: str = ""  # "FILE, row N"


@dataclass
class RatingItem:
    """One example and the strong judge's recorded keep decision."""

    example: Example
    decision: bool
    source: str = ""

    @property
    def key(self) -> str:
        return self.example.id


@dataclass
class ReferenceSet:
    kind: str  # "pairwise" | "rating"
    format: str  # "alpacaeval" | "alpagasus-reviews" | "labels"
    files: list[str]
    annotator: str  # whose verdicts: the annotator, or the decision column
    pairs: list[PairItem] = field(default_factory=list)
    ratings: list[RatingItem] = field(default_factory=list)
    rows: int = 0  # rows read
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def items(self) -> Sequence[PairItem] | Sequence[RatingItem]:
        return self.pairs if self.kind == "pairwise" else self.ratings


def read_alpacaeval(paths: Sequence[str | Path]) -> ReferenceSet:
    """AlpacaEval annotation files, read by compare.alpacaeval (several are pooled; a pair seen twice for one
    judged model is kept once; a null preference is no verdict, 0 and 1.5 a draw, a soft one decided by its side of 1.5)."""
    from alpagasus.compare.alpacaeval import read_annotations

    ref = ReferenceSet("pairwise", "alpacaeval", [str(p) for p in paths], "")
    annotators: set[str] = set()
    seen: set[str] = set()
    for v in read_annotations(list(paths)):
        ref.rows += 1
        # per judged model: identical answers of two models are two verdicts (GPT-4 does not always agree with
        # itself on them); the store still judges their prompts once (its ids hash the content)
        key = content_id(v.instruction, v.output_1, v.output_2, v.generator_2)
        if key in seen:
            ref.skipped["duplicate pair"] = ref.skipped.get("duplicate pair", 0) + 1
            continue
        seen.add(key)
        if v.side is None:
            ref.skipped["no verdict"] = ref.skipped.get("no verdict", 0) + 1
            continue
        annotators.add(v.annotator)
        ref.pairs.append(
            PairItem(key, v.instruction, v.output_1, v.output_2, v.side, v.outcome, v.generator_2, v.source)
        )
    ref.annotator = ", ".join(sorted(annotators))
    return ref


def read_reviews_reference(
    reviews_ab: Sequence[str | Path], reviews_ba: Sequence[str | Path], model_a: str, model_b: str
) -> ReferenceSet:
    """Reviews in the official AlpaGasus format, both orders, combined by the paper's rule per question."""
    from alpagasus.compare.aggregate import question_outcome
    from alpagasus.compare.inputs import read_reviews, testset_of
    from alpagasus.compare.pairwise import reaggregate

    if not reviews_ab or len(reviews_ab) != len(reviews_ba):
        raise DataError("give as many --reviews-ba files as --reviews-ab files (one of each per test set)")
    ab: list = []
    ba: list = []
    for f_ab, f_ba in zip(reviews_ab, reviews_ba):  # the n-th files of each order hold the same test set
        ts = testset_of(f_ab)
        ab += read_reviews(f_ab, model_a, model_b, ts)
        ba += read_reviews(f_ba, model_b, model_a, ts)
    result = reaggregate(ab, ba, model_a, model_b)
    by_q: dict[tuple[str, str], dict] = defaultdict(dict)
    for j in result.judgments:
        by_q[(j.testset, j.question_id)][j.order] = j
    ref = ReferenceSet(
        "pairwise",
        "alpagasus-reviews",
        [str(f) for f in [*reviews_ab, *reviews_ba]],
        "the reviews' judge",
        rows=len(ab) + len(ba),
    )
    ref.skipped = {"unmatched": len(result.mismatches)} if result.mismatches else {}
    for p in result.pairs:
        outcome, _ = question_outcome(by_q[(p.testset, p.question_id)])
        if outcome is None:
            ref.skipped["no verdict"] = ref.skipped.get("no verdict", 0) + 1
            continue
        verdict = {"win": "1", "lose": "2", "tie": "tie"}[outcome]
        ref.pairs.append(
            PairItem(
                content_id(p.question, p.answer_a, p.answer_b),
                p.question,
                p.answer_a,
                p.answer_b,
                verdict,
                {"1": 0.0, "2": 1.0, "tie": 0.5}[verdict],
                model_b,
                f"{p.testset}/{p.question_id}",
            )
        )
    return ref


def read_labels_reference(
    path: str | Path,
    decision: str,
    uniform_column: str | None = None,
    holdout: float | None = None,
    holdout_seed: int = 0,
) -> ReferenceSet:
    """A ratings or labels file with a decision column. `uniform_column`: only the rows it marks true;
    `holdout`: only the rows `alpagasus distill --holdout HOLDOUT --seed HOLDOUT_SEED --uniform-column ...`
    held out (uniform rows)."""
    from alpagasus.distill.labels import load_labels

    ls = load_labels(path, label=decision, uniform_column=uniform_column)
    keep = [bool(u) for u in ls.uniform] if uniform_column else [True] * len(ls.examples)
    if holdout is not None:
        from alpagasus.distill.train import split_holdout

        if not 0.0 < holdout < 1.0:
            raise DataError(f"--holdout must be in (0, 1), got {holdout}")
        keep = [bool(m) for m in split_holdout(ls, holdout, holdout_seed)]
    ref = ReferenceSet(
        "rating",
        "labels",
        [str(path)],
        decision,
        rows=len(ls.examples) + sum(ls.skipped.values()),
        skipped=dict(ls.skipped),
    )
    ref.ratings = [RatingItem(e, bool(k), f"{path}, row {e.row}") for e, k, m in zip(ls.examples, ls.keep, keep) if m]
    left_out = len(ls.examples) - len(ref.ratings)
    if left_out:
        ref.skipped["not uniform or not held out"] = left_out
    return ref


def sample(items: Sequence[Any], n: int | None, seed: int, uniform: bool = False) -> list[Any]:
    """A seeded sample of `n` items in their original order (all of them when n is None or >= len).
    Stratified (proportional; largest remainders) by `group` for pairs and by `decision` for ratings, unless
    `uniform`."""
    if n is None or n >= len(items):
        return list(items)
    rng = random.Random(seed)
    if uniform:
        return [items[i] for i in sorted(rng.sample(range(len(items)), n))]
    strata: dict[Any, list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        strata[it.group if isinstance(it, PairItem) else it.decision].append(i)
    names = sorted(strata, key=str)
    quota = {g: n * len(strata[g]) / len(items) for g in names}
    take = {g: int(q) for g, q in quota.items()}
    for g in sorted(names, key=lambda g: (-(quota[g] - take[g]), str(g)))[: n - sum(take.values())]:
        take[g] += 1
    chosen = [i for g in names for i in rng.sample(strata[g], take[g])]
    return [items[i] for i in sorted(chosen)]
