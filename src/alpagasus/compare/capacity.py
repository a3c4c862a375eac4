"""Capacity by skill: each model's answers judged against a reference model's (the paper's "% of ChatGPT
capacity" chart, after WizardLM).

Each question is judged once with prompts/capacity.txt: the paper's pairwise prompt with the reference answer
as Assistant 1 and the model's answer as Assistant 2 (the judge is not told which is the reference). Per skill,
capacity = the model's total score / the reference's total score over the same judgments, in percent.
Questions whose judgment has no scores are counted (`unparsed`, `failed`) and left out of both totals.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from alpagasus.compare.aggregate import judging_json
from alpagasus.compare.inputs import AnswerRow
from alpagasus.compare.pairwise import judge_pairs, match, stored_judgments
from alpagasus.compare.types import Judging, Mismatch, Pair
from alpagasus.engine.loop import ProgressFactory
from alpagasus.engine.types import RunOptions
from alpagasus.judges.base import Judge
from alpagasus.prompts.template import Template, load_template
from alpagasus.records import Judgment
from alpagasus.store import Store

ORDER = ("ab",)  # the reference is always Assistant 1


class CapacityError(ValueError):
    pass


@dataclass
class CapacityResult:
    reference: str
    judge: str
    prompt_version: str
    models: dict[str, dict]  # model -> {"skills": {skill: stats}, "all": stats}
    mismatches: dict[str, list[Mismatch]] = field(default_factory=dict)
    no_skill: dict[str, int] = field(default_factory=dict)
    judging: Judging | None = None

    def to_json(self) -> dict:
        return {
            "reference": self.reference,
            "judge": self.judge,
            "prompt_version": self.prompt_version,
            "models": self.models,
            "questions_without_skill": self.no_skill,
            "mismatches": {m: [str(x) for x in v] for m, v in self.mismatches.items()},
            "requests": judging_json(self.judging),
        }


def attach_skills(rows: Sequence[AnswerRow], skills: Mapping[tuple[str, str], str]) -> int:
    """Fill in missing skills from a (testset, id) -> skill table; returns how many rows have one."""
    for r in rows:
        if r.skill is None:
            r.skill = skills.get(r.key)
    return sum(r.skill is not None for r in rows)


def capacity(
    models: Mapping[str, Sequence[AnswerRow]],
    reference: Sequence[AnswerRow],
    judge: Judge,
    store: Store,
    template: Template | None = None,
    options: RunOptions | None = None,
    limit: int | None = None,
    progress: ProgressFactory | None = None,
) -> CapacityResult:
    """Judge every model's answer against the reference's and total the scores per skill."""
    template = template or load_template("capacity")
    ref_name = reference[0].model if reference else "reference"
    per_model: dict[str, list[Pair]] = {}
    mismatches: dict[str, list[Mismatch]] = {}
    no_skill: dict[str, int] = {}
    for name, rows in models.items():
        pairs, mism = match(reference, rows, limit)  # answer_a = the reference, answer_b = the model
        per_model[name] = [p for p in pairs if p.skill]
        no_skill[name] = len(pairs) - len(per_model[name])
        mismatches[name] = mism
    every = [p for ps in per_model.values() for p in ps]
    if not every:
        raise CapacityError(
            "no question with a skill: capacity needs answers carrying `skill` (generate's "
            "output for WizardLM), the bundled WizardLM ids, or --skills FILE"
        )
    judging = judge_pairs(every, judge, store, template, options, ORDER, progress, label="capacity")
    out = {}
    for name, pairs in per_model.items():
        judgments = stored_judgments(pairs, store, judge.id, template.version, ORDER)
        out[name] = skill_table(pairs, judgments)
    return CapacityResult(ref_name, judge.id, template.version, out, mismatches, no_skill, judging)


def skill_table(pairs: Sequence[Pair], judgments: Sequence[Judgment]) -> dict:
    """{"skills": {skill: stats}, "all": stats}, skills in first-seen order; stats hold the totals and the
    model's percentage of the reference's total."""
    by_key = {(j.testset, j.question_id): j for j in judgments}
    groups: dict[str, list[Judgment | None]] = defaultdict(list)
    for p in pairs:
        groups[p.skill or "?"].append(by_key.get((p.testset, p.question_id)))
    every = [j for js in groups.values() for j in js]
    return {"skills": {s: _totals(js) for s, js in groups.items()}, "all": _totals(every)}


def _totals(js: Sequence[Judgment | None]) -> dict:
    ok = [
        (j.score_1, j.score_2)
        for j in js
        if j is not None and j.status == "ok" and j.score_1 is not None and j.score_2 is not None
    ]
    ref = sum(s1 for s1, _ in ok)
    model = sum(s2 for _, s2 in ok)
    unparsed = sum(1 for j in js if j is not None and j.status == "unparsed")
    return {
        "questions": len(js),
        "judged": len(ok),
        "unparsed": unparsed,
        "failed": len(js) - len(ok) - unparsed,
        "model_score": model,
        "reference_score": ref,
        "percent": round(100 * model / ref, 2) if ref else None,
    }
