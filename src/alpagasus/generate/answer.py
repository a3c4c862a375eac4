"""Answers of one model to the evaluation questions, appended to a JSONL file as each batch finishes.

The output file is the resume state: a question already answered there by the same model (same testset and
question_id) is skipped, so an interrupted run loses at most the batch in flight.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from alpagasus.data import DataError, iter_jsonl, write_jsonl
from alpagasus.generate.backends import make_backend
from alpagasus.generate.config import GenerateConfig
from alpagasus.records import Answer, InvalidRow
from alpagasus.redact import redact
from alpagasus.testsets import Question, expand, load

EXTRA_FIELDS = ("category", "skill", "difficulty")  # copied from the question into its answer row


@dataclass
class GenerateResult:
    answers: list[Answer]  # every requested question's answer, in test-set order
    generated: int = 0  # new answers written by this run
    reused: int = 0  # answers found in the file already
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (testset, question_id, error)


def model_name(model: str, config: GenerateConfig) -> str:
    return config.name or model.rstrip("/")


def read_answer_file(path: str | Path) -> list[dict[str, Any]]:
    """Rows of an answers file. A line that is not JSON (a torn last line: a crash mid-write) is dropped and the
    file rewritten without it, so that appending starts on a clean line; a row that is JSON but not an object
    is an error naming the file and the row."""
    p = Path(path)
    if not p.exists():
        return []
    if not p.is_file():
        raise DataError(f"{p}: not a file; give a JSONL file for the answers")
    rows, bad = [], 0
    for row, rec in iter_jsonl(p):  # whatever the file's suffix: we write JSONL
        if isinstance(rec, InvalidRow):
            bad += 1
        elif not isinstance(rec, dict):
            raise DataError(str(InvalidRow(str(p), row, None, f"expected an object, got {type(rec).__name__}")))
        else:
            rows.append(rec)
    if bad:
        write_jsonl(p, rows)
    return rows


def to_row(answer: Answer, question: Question) -> dict[str, Any]:
    row = asdict(answer)
    row.update({k: question.extra[k] for k in EXTRA_FIELDS if question.extra.get(k) is not None})
    return row


def generate(
    model: str,
    testsets: str | Iterable[str],
    out_path: str | Path,
    config: GenerateConfig | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> GenerateResult:
    """Answer the questions of `testsets` ("all", names, or JSONL paths) with `model`, appending to `out_path`.

    `on_batch(done, total)` is called after each batch is written (progress display)."""
    config = config or GenerateConfig()
    config.validate()
    name = model_name(model, config)
    questions = [q for spec in expand(testsets) for q in load(spec, config.limit, config.fraction, config.sample_seed)]
    out_path = Path(out_path)
    existing: dict[tuple[str, str], dict] = {}
    for row in read_answer_file(out_path):
        if row.get("model") == name:
            existing[(str(row.get("testset")), str(row.get("question_id")))] = row
    pending = [q for q in questions if (q.testset, q.question_id) not in existing]
    result = GenerateResult(answers=[], reused=len(questions) - len(pending))
    fresh = _answer(model, name, pending, out_path, config, result, on_batch) if pending else {}
    for q in questions:
        key = (q.testset, q.question_id)
        if key in fresh:
            result.answers.append(fresh[key])
        elif key in existing:
            row = existing[key]
            result.answers.append(
                Answer(
                    q.testset,
                    q.question_id,
                    row.get("question", q.question),
                    row.get("answer", ""),
                    name,
                    row.get("settings") or {},
                )
            )
    return result


def _answer(
    model: str,
    name: str,
    pending: list[Question],
    out_path: Path,
    config: GenerateConfig,
    result: GenerateResult,
    on_batch: Callable[[int, int], None] | None,
) -> dict[tuple[str, str], Answer]:
    """Answer `pending` batch by batch, appending each batch to `out_path` (synced) as it finishes; failures go
    to `result.failed`. Returns the new answers by (testset, question_id)."""
    backend = make_backend(model, config)
    size = config.batch()
    settings = config.settings()
    fresh: dict[tuple[str, str], Answer] = {}
    # longest first: batches of similar length pad less, and a slow batch shows up early
    pending = sorted(pending, key=lambda q: len(q.question), reverse=True)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("a", encoding="utf-8") as f:
        for start in range(0, len(pending), size):
            batch = pending[start : start + size]
            for q, text in zip(batch, backend.generate(batch)):
                if isinstance(text, Exception):
                    error = redact(f"{type(text).__name__}: {text}", [config.api_key])  # a 401 echoes the key
                    result.failed.append((q.testset, q.question_id, error))
                    continue
                answer = Answer(q.testset, q.question_id, q.question, text, name, dict(settings))
                f.write(json.dumps(to_row(answer, q), ensure_ascii=False) + "\n")
                fresh[(q.testset, q.question_id)] = answer
            f.flush()
            os.fsync(f.fileno())
            result.generated = len(fresh)
            if on_batch:
                on_batch(min(start + size, len(pending)), len(pending))
    return fresh
