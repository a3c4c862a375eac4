"""The four evaluation sets of the AlpaGasus paper, shipped with the package (licences in NOTICE.md), and a
reader for a user's own JSONL of questions.

Each question keeps what a later step needs: Vicuna's `category`, WizardLM's `skill` and `difficulty`, and
Self-Instruct's separate `instruction` / `input` (its question text is "{instruction} Input: {input}" when the
input is not empty, else the instruction alone).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from alpagasus.data import DataError, iter_objects

NAMES = ("vicuna", "koala", "sinstruct", "wizardlm")
ID_FIELDS = ("question_id", "id", "idx")
QUESTION_FIELDS = ("question", "text", "prompt", "instruction", "Instruction")  # the question's text, first found


@dataclass
class Question:
    testset: str
    question_id: str
    question: str  # the text a judge and a chat model see
    instruction: str = ""  # the Alpaca prompt's parts (instruction = question unless the set splits them)
    input: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # category / skill / difficulty, copied into answers

    def __post_init__(self) -> None:
        if not self.instruction:
            self.instruction = self.question


def builtin_path(name: str) -> Path:
    return Path(str(resources.files(__name__).joinpath(f"{name}_test_set.jsonl")))


def expand(specs: str | Iterable[str]) -> list[str]:
    """ "all" -> the four names; "vicuna,koala" -> two; paths pass through. Order kept, duplicates dropped."""
    items = [specs] if isinstance(specs, str) else list(specs)
    out: list[str] = []
    for item in items:
        for part in (p.strip() for p in item.split(",")) if not Path(item).exists() else [item]:
            for name in NAMES if part == "all" else (part,):
                if name and name not in out:
                    out.append(name)
    return out


def load(spec: str, limit: int | None = None, fraction: float | None = None, seed: int = 0) -> list[Question]:
    """Questions of a bundled test set (by name) or of a JSONL file; `limit` keeps the first N, `fraction` a
    seeded random share of them (stratified when applied per test set), kept in file order."""
    if spec in NAMES:
        questions = [_BUILTIN[spec](row) for _, row in iter_objects(builtin_path(spec), jsonl=True)]
    else:
        path = Path(spec)
        if not path.exists():
            raise DataError(f"{spec}: not a bundled test set ({', '.join(NAMES)}, all) and no such file")
        if not path.is_file():
            raise DataError(f"{spec}: a directory, not a JSONL file of questions")
        questions = [_user_question(path, n, row) for n, row in iter_objects(path, jsonl=True)]
        _check_unique(path, questions)
    questions = questions[:limit] if limit is not None else questions
    return subset(questions, fraction, seed) if fraction is not None else questions


def subset(questions: list[Question], fraction: float, seed: int = 0) -> list[Question]:
    """round(fraction x N) questions (at least one) drawn with `seed`, in their file order: the same subset on
    every run and machine, so answers and verdicts of different models are of the same questions."""
    import random

    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], not {fraction}")
    k = min(len(questions), max(1, round(fraction * len(questions))))
    rng = random.Random(f"{seed}:{questions[0].testset}" if questions else seed)  # each set its own draw
    keep = sorted(rng.sample(range(len(questions)), k))
    return [questions[i] for i in keep]


def _vicuna(row: dict) -> Question:
    return Question("vicuna", str(row["question_id"]), row["text"], extra={"category": row.get("category")})


def _koala(row: dict) -> Question:
    return Question("koala", str(row["id"]), row["prompt"])


def _sinstruct(row: dict) -> Question:
    inp = (row.get("instances") or [{}])[0].get("input", "") or ""
    text = f"{row['instruction']} Input: {inp}" if inp.strip() else row["instruction"]
    return Question(
        "sinstruct", str(row["id"]), text, row["instruction"], inp, extra={"motivation_app": row.get("motivation_app")}
    )


def _wizardlm(row: dict) -> Question:
    return Question(
        "wizardlm",
        str(row["idx"]),
        row["Instruction"],
        extra={"skill": row.get("Skill"), "difficulty": row.get("Difficulty")},
    )


_BUILTIN = {"vicuna": _vicuna, "koala": _koala, "sinstruct": _sinstruct, "wizardlm": _wizardlm}


def _user_question(path: Path, n: int, row: dict) -> Question:
    id_field = next((f for f in ID_FIELDS if f in row), None)
    text_field = next((f for f in QUESTION_FIELDS if isinstance(row.get(f), str) and row[f].strip()), None)
    if id_field is None:
        raise DataError(f"{path}, row {n}, field 'question_id': missing (one of {', '.join(ID_FIELDS)} is needed)")
    if text_field is None:
        raise DataError(
            f"{path}, row {n}, field 'question': missing or empty (one of {', '.join(QUESTION_FIELDS)} is needed)"
        )
    raw_input = row.get("input")
    inp = raw_input if isinstance(raw_input, str) else ""
    text = row[text_field]
    question = f"{text} Input: {inp}" if inp.strip() else text
    try:  # undecodable bytes reach here as lone surrogates: name the row rather than fail at writing answers
        question.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(f"{path}, row {n}, field '{text_field}': contains invalid UTF-8") from None
    extra = {
        k.lower(): row[k] for k in ("category", "Category", "skill", "Skill", "difficulty", "Difficulty") if k in row
    }
    return Question(path.stem, str(row[id_field]), question, text, inp, extra=extra)


def _check_unique(path: Path, questions: list[Question]) -> None:
    seen: set[str] = set()
    for q in questions:
        if q.question_id in seen:
            raise DataError(f"{path}: question_id {q.question_id!r} appears more than once")
        seen.add(q.question_id)
