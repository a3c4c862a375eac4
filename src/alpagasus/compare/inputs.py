"""Inputs of `alpagasus compare`: answer files and judge reviews made elsewhere.

Answer files are the output of `alpagasus generate` (one model per file) or any table with a question id,
the question and the answer; a file may also hold two models' answers in two columns named after them (the
AlpaGasus release's `{question_id, text, alpagasus2, alpaca2}`). Review files are the official AlpaGasus
evaluation's output: a JSON list of those records, each with the judge's raw reply in `review`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alpagasus.data import DataError, iter_objects
from alpagasus.testsets import ID_FIELDS, NAMES, QUESTION_FIELDS

ANSWER_FIELDS = ("answer", "output", "response", "completion")
SKILL_FIELDS = ("skill", "Skill")


@dataclass
class AnswerRow:
    testset: str
    question_id: str  # as written in the file
    question: str
    answer: str
    model: str = ""
    skill: str | None = None
    source: str = ""  # "FILE, row N", for messages

    @property
    def key(self) -> tuple[str, str]:
        return self.testset, norm_id(self.testset, self.question_id)


@dataclass
class ReviewRow:
    """One record of an official review file: Assistant 1's and 2's answers and the judge's raw reply."""

    testset: str
    question_id: str
    question: str
    answer_1: str
    answer_2: str
    review: str | None
    source: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return self.testset, norm_id(self.testset, self.question_id)


def norm_id(testset: str, qid: str) -> str:
    """ "vicuna_7" and "7" name the same Vicuna question: the release files prefix ids with the set's name."""
    prefix = f"{testset}_"
    return qid[len(prefix) :] if qid.startswith(prefix) and len(qid) > len(prefix) else qid


def norm_text(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def testset_of(path: str | Path, given: str | None = None) -> str:
    """The test set a file's rows belong to when they do not say: --testset, else a known name in the file
    name (vicuna, koala, sinstruct, wizardlm), else the file's stem."""
    if given:
        return given
    stem = Path(path).stem
    low = stem.lower()
    return next((n for n in NAMES if n in low), stem)


def _text(path: str | Path, row: int, rec: dict, name: str, value: Any, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        kind = "null" if value is None else type(value).__name__
        raise DataError(f"{path}, row {row}, field '{name}': must be a string, got {kind}")
    if not allow_empty and not value.strip():
        raise DataError(f"{path}, row {row}, field '{name}': is empty")
    return value


def question_of(path: str | Path, row: int, rec: dict) -> str:
    """The question as a judge sees it. Self-Instruct rows keep their input in `instances` (or `input`):
    the question is then "{instruction} Input: {input}", as in the paper's evaluation code."""
    if "question" in rec:
        return _text(path, row, rec, "question", rec["question"])
    name = next((f for f in QUESTION_FIELDS if f in rec), None)
    if name is None:
        raise DataError(f"{path}, row {row}, field 'question': missing (one of {', '.join(QUESTION_FIELDS)})")
    text = _text(path, row, rec, name, rec[name])
    inp = rec.get("input")
    if not isinstance(inp, str):
        inst = rec.get("instances")
        inp = inst[0].get("input") if isinstance(inst, list) and inst and isinstance(inst[0], dict) else ""
    return f"{text} Input: {inp}" if isinstance(inp, str) and inp.strip() else text


def _qid(rec: dict, row: int) -> str:
    name = next((f for f in ID_FIELDS if rec.get(f) is not None), None)
    return str(rec[name]) if name else str(row)  # no id: the row number (texts are still checked)


def _skill(rec: dict) -> str | None:
    value = next((rec[f] for f in SKILL_FIELDS if rec.get(f) not in (None, "")), None)
    return str(value) if value is not None else None


def _check_unique(path: str | Path, rows: list) -> None:
    seen: dict[tuple[str, str], str] = {}
    for r in rows:
        if r.key in seen:
            raise DataError(
                f"{r.source}: question {r.testset}/{r.question_id} appears twice in {path} (first at {seen[r.key]})"
            )
        seen[r.key] = r.source


def columns(path: str | Path) -> set[str]:
    """The fields of the first record (to tell a two-column file from a one-model file)."""
    for _, rec in iter_objects(path):
        return set(rec)
    return set()


def read_answers(path: str | Path, model: str | None = None, testset: str | None = None) -> list[AnswerRow]:
    """One model's answers. A file holding several models' rows (a `model` field) needs `model` to choose."""
    recs = list(iter_objects(path))
    if not recs:
        raise DataError(f"{path}: no rows")
    models = sorted({str(r["model"]) for _, r in recs if r.get("model") is not None})
    if len(models) > 1 and model not in models:
        raise DataError(
            f"{path} holds answers of several models ({', '.join(models)}): name one with --model-a / --model-b"
        )
    keep = model if model in models else None
    out: list[AnswerRow] = []
    for row, rec in recs:
        if keep is not None and str(rec.get("model")) != keep:
            continue
        field = next((f for f in ANSWER_FIELDS if f in rec), None)
        if field is None:
            raise DataError(f"{path}, row {row}, field 'answer': missing (one of {', '.join(ANSWER_FIELDS)})")
        ts = rec["testset"] if isinstance(rec.get("testset"), str) and rec["testset"] else testset_of(path, testset)
        out.append(
            AnswerRow(
                ts,
                _qid(rec, row),
                question_of(path, row, rec),
                _text(path, row, rec, field, rec[field], allow_empty=True),
                model or (models[0] if models else Path(path).stem),
                _skill(rec),
                f"{path}, row {row}",
            )
        )
    _check_unique(path, out)
    return out


def read_two_columns(
    path: str | Path, model_a: str, model_b: str, testset: str | None = None
) -> tuple[list[AnswerRow], list[AnswerRow]]:
    """Both models' answers from one file whose columns are named after the models."""
    a_rows: list[AnswerRow] = []
    b_rows: list[AnswerRow] = []
    for row, rec in iter_objects(path):
        ts = rec["testset"] if isinstance(rec.get("testset"), str) and rec["testset"] else testset_of(path, testset)
        qid, question, skill = _qid(rec, row), question_of(path, row, rec), _skill(rec)
        for model, rows in ((model_a, a_rows), (model_b, b_rows)):
            if model not in rec:
                raise DataError(f"{path}, row {row}, field '{model}': missing (the column of model {model})")
            rows.append(
                AnswerRow(
                    ts,
                    qid,
                    question,
                    _text(path, row, rec, model, rec[model], allow_empty=True),
                    model,
                    skill,
                    f"{path}, row {row}",
                )
            )
    _check_unique(path, a_rows)
    return a_rows, b_rows


def read_reviews(path: str | Path, model_1: str, model_2: str, testset: str | None = None) -> list[ReviewRow]:
    """An official review file: model_1 was Assistant 1. Any pre-parsed `score` field is ignored: scores are
    read from `review` itself, by the same parser as our own judgments."""
    out: list[ReviewRow] = []
    for row, rec in iter_objects(path):
        for model in (model_1, model_2):
            if model not in rec:
                raise DataError(f"{path}, row {row}, field '{model}': missing (the answer of model {model})")
        if "review" not in rec:
            raise DataError(f"{path}, row {row}, field 'review': missing (the judge's reply)")
        review = rec["review"] if isinstance(rec["review"], str) else None  # null: no reply, counted unparsed
        ts = testset_of(path, testset)
        out.append(
            ReviewRow(
                ts,
                _qid(rec, row),
                question_of(path, row, rec),
                _text(path, row, rec, model_1, rec[model_1], allow_empty=True),
                _text(path, row, rec, model_2, rec[model_2], allow_empty=True),
                review,
                f"{path}, row {row}",
            )
        )
    _check_unique(path, out)
    return out


def read_skills(path: str | Path, testset: str | None = None) -> dict[tuple[str, str], str]:
    """Skill per question from a file like the WizardLM test set ({idx, Skill, ...})."""
    ts = testset_of(path, testset)
    if ts not in NAMES:
        ts = "wizardlm"  # skills exist in WizardLM's set; a file of another name is taken to hold its ids
    out: dict[tuple[str, str], str] = {}
    for row, rec in iter_objects(path):
        skill = _skill(rec)
        if skill is None:
            raise DataError(f"{path}, row {row}, field 'Skill': missing or empty")
        out[(ts, norm_id(ts, _qid(rec, row)))] = skill
    return out


def bundled_skills() -> dict[tuple[str, str], str]:
    """Skills of the bundled WizardLM test set."""
    from alpagasus.testsets import load

    return {("wizardlm", q.question_id): str(q.extra["skill"]) for q in load("wizardlm") if q.extra.get("skill")}
