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

from alpagasus.alpaca import prompt_version
from alpagasus.generate.backends import BACKENDS, DEFAULT_BATCH, make_backend, stops_for
from alpagasus.records import Answer
from alpagasus.testsets import Question, expand, load

EXTRA_FIELDS = ("category", "skill", "difficulty")   # copied from the question into its answer row


@dataclass
class GenerateConfig:
    backend: str = "transformers"      # transformers | openai | vllm
    prompt_format: str = "alpaca"      # alpaca | chat (the model's chat template)
    max_new_tokens: int = 512
    temperature: float = 0.0           # 0: greedy decoding
    top_p: float = 1.0
    seed: int | None = None
    batch_size: int | None = None      # None: 8 for transformers, 256 for vLLM, `concurrency` for openai
    limit: int | None = None           # the first N questions of each test set
    name: str | None = None            # the model name written in the rows (default: MODEL as given)
    base_url: str | None = None        # openai backend
    api_key: str | None = None
    concurrency: int = 8
    max_retries: int = 3
    timeout: float = 600.0
    device: str | None = None          # transformers backend: cuda if available, else cpu
    dtype: str = "auto"

    def validate(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if self.prompt_format not in ("alpaca", "chat"):
            raise ValueError(f"prompt format must be alpaca or chat, not {self.prompt_format!r}")
        if self.max_new_tokens < 1 or (self.batch_size is not None and self.batch_size < 1):
            raise ValueError("max_new_tokens and batch_size must be at least 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("temperature must be >= 0 and top_p in (0, 1]")

    def settings(self) -> dict[str, Any]:
        """What shaped the answers, recorded in every row."""
        out: dict[str, Any] = {"backend": self.backend, "prompt_format": self.prompt_format,
                               "max_new_tokens": self.max_new_tokens, "do_sample": self.temperature > 0,
                               "temperature": self.temperature, "top_p": self.top_p, "seed": self.seed}
        if self.prompt_format == "alpaca":
            out["prompt_version"] = prompt_version()
            out["stop"] = stops_for(self)
        return out


@dataclass
class GenerateResult:
    answers: list[Answer]                          # every requested question's answer, in test-set order
    generated: int = 0                             # new answers written by this run
    reused: int = 0                                # answers found in the file already
    failed: list[tuple[str, str, str]] = field(default_factory=list)   # (testset, question_id, error)


def model_name(model: str, config: GenerateConfig) -> str:
    return config.name or model.rstrip("/")


def read_answers(path: str | Path) -> list[dict[str, Any]]:
    """Rows of an answers file. A torn last line (a crash mid-write) is dropped and the file rewritten without
    it, so that appending starts on a clean line."""
    p = Path(path)
    if not p.exists():
        return []
    rows, bad = [], 0
    with p.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            rows.append(row)
    if bad:
        from alpagasus.data import write_jsonl

        write_jsonl(p, rows)
    return rows


def to_row(answer: Answer, question: Question) -> dict[str, Any]:
    row = asdict(answer)
    row.update({k: question.extra[k] for k in EXTRA_FIELDS if question.extra.get(k) is not None})
    return row


def generate(model: str, testsets: str | Iterable[str], out_path: str | Path,
             config: GenerateConfig | None = None,
             on_batch: Callable[[int, int], None] | None = None) -> GenerateResult:
    """Answer the questions of `testsets` ("all", names, or JSONL paths) with `model`, appending to `out_path`.

    `on_batch(done, total)` is called after each batch is written (progress display)."""
    config = config or GenerateConfig()
    config.validate()
    name = model_name(model, config)
    questions = [q for spec in expand(testsets) for q in load(spec, config.limit)]
    out_path = Path(out_path)
    existing: dict[tuple[str, str], dict] = {}
    for row in read_answers(out_path):
        if row.get("model") == name:
            existing[(str(row.get("testset")), str(row.get("question_id")))] = row
    pending = [q for q in questions if (q.testset, q.question_id) not in existing]
    result = GenerateResult(answers=[], reused=len(questions) - len(pending))
    fresh: dict[tuple[str, str], Answer] = {}
    if pending:
        backend = make_backend(model, config)
        size = config.batch_size or DEFAULT_BATCH.get(config.backend, config.concurrency)
        settings = config.settings()
        # longest first: batches of similar length pad less, and a slow batch shows up early
        pending.sort(key=lambda q: len(q.question), reverse=True)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with out_path.open("a", encoding="utf-8") as f:
            for start in range(0, len(pending), size):
                batch = pending[start:start + size]
                texts = backend.generate(batch)
                for q, text in zip(batch, texts):
                    if isinstance(text, Exception):
                        result.failed.append((q.testset, q.question_id, f"{type(text).__name__}: {text}"))
                        continue
                    answer = Answer(q.testset, q.question_id, q.question, text, name, dict(settings))
                    f.write(json.dumps(to_row(answer, q), ensure_ascii=False) + "\n")
                    fresh[(q.testset, q.question_id)] = answer
                f.flush()
                os.fsync(f.fileno())
                result.generated = len(fresh)
                if on_batch:
                    on_batch(min(start + size, len(pending)), len(pending))
    for q in questions:
        key = (q.testset, q.question_id)
        if key in fresh:
            result.answers.append(fresh[key])
        elif key in existing:
            row = existing[key]
            result.answers.append(Answer(q.testset, q.question_id, row.get("question", q.question),
                                         row.get("answer", ""), name, row.get("settings") or {}))
    return result
