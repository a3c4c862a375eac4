"""The records that flow between stages. Files exist only at the edges (see data.py)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

CORE_FIELDS = ("instruction", "input", "output")
# `empty`: the instruction or the output is empty (bad data the method filters, not a broken file); not sent to
# the judge unless asked, never selected for training
STATUSES = ("ok", "unparsed", "invalid_input", "error", "empty")
# The fields the ratings file adds to each example's own. Where a user's row already has a field of one of these
# names, that row's rating fields are all written as RATING_PREFIX + name instead, so no user value is lost.
RATING_FIELDS = (
    "id",
    "row",
    "score",
    "status",
    "judge",
    "prompt_version",
    "model",
    "explanation",
    "raw",
    "probs",
    "label_mass",
    "flags",
    "field",
)
RATING_PREFIX = "alpagasus_"
# Written by IFD judges only (judges/ifd.py: the raw IFD, both losses, the >= 1 mark), so a rating field only in
# rows such a judge rated (judge "ifd:..."): a user's own `ifd` column in any other ratings file stays theirs.
IFD_FIELD = "ifd"


def content_id(*parts: str) -> str:
    """Stable id of a piece of content: ratings attach to content, not row numbers."""
    h = hashlib.sha256()
    for p in parts:
        b = p.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))  # length-prefix so ("ab","c") != ("a","bc")
        h.update(b)
    return h.hexdigest()[:16]


@dataclass
class Example:
    instruction: str
    input: str
    output: str
    extra: dict[str, Any] = field(default_factory=dict)
    row: int | None = None  # 1-based row in the source file, for messages
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            self.id = content_id(self.instruction, self.input, self.output)

    def fields(self) -> dict[str, Any]:
        """The training-format view: the input's own fields, extras untouched."""
        return {"instruction": self.instruction, "input": self.input, "output": self.output, **self.extra}

    @property
    def empty_field(self) -> str | None:
        """ "instruction" or "output" when that field holds no text (nothing to learn from), else None."""
        return next((f for f in ("instruction", "output") if not getattr(self, f).strip()), None)


@dataclass
class InvalidRow:
    file: str
    row: int
    field: str | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}, row {self.row}" + (f", field '{self.field}'" if self.field else "")
        return f"{where}: {self.reason}"


@dataclass
class Request:
    """One prompt for a judge. `example` lets non-LLM judges (predictors) see the raw fields."""

    key: str  # the item id this reply will be stored under
    system: str
    user: str
    assistant_prefix: str = ""  # primes the answer (logprob mode reads the next token)
    labels: tuple[str, ...] = ("0", "1", "2", "3", "4", "5")
    example: Example | None = None
    temperature: float = 0.0  # 0 = greedy; re-asks after an unparsable reply use a little more
    max_tokens: int = 256  # generate mode: room for the score line and the explanation
    mode: str | None = None  # overrides the judge's mode for this request (a logprob fallback to generate)
    fields: dict[str, str] | None = None  # the values rendered into the prompt (question, answer_1, answer_2):
    # for judges that score the parts, not the prompt (judges/pointwise.py)


@dataclass
class Reply:
    """What a judge backend returns for one Request."""

    text: str | None = None  # generated reply (generate mode)
    probs: dict[str, float] | None = None  # label -> probability (logprob mode)
    score: float | None = None  # a score the backend computed itself (logprob, predictor)
    model: str = ""  # the model name the backend reports
    tokens_in: int = 0
    tokens_out: int = 0
    latency_s: float = 0.0
    error: str | None = None  # transport/backend failure, retried by the caller
    extra: dict[str, Any] | None = None  # backend details worth keeping (label mass, argmax...)
    retry_after: float | None = None  # the server's Retry-After: no retry is sent before it
    retryable: bool = True  # False for errors a retry cannot fix (e.g. HTTP 400)
    outage: bool = False  # the backend is unreachable: pause the run, charge no attempt
    fatal: bool = False  # no request can succeed (a host that does not resolve): stop the run


@dataclass
class Rating:
    example_id: str
    judge: str
    prompt_version: str
    score: float | None
    status: str
    probs: dict[str, float] | None = None
    explanation: str | None = None
    raw: str | None = None
    model: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    latency_s: float = 0.0
    attempts: int = 1
    created_at: float = 0.0
    extra: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


@dataclass
class Answer:
    testset: str
    question_id: str
    question: str
    answer: str
    model: str
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class Judgment:
    testset: str
    question_id: str
    order: str  # "ab" (A is Assistant 1) or "ba"
    score_1: float | None  # Assistant 1's score
    score_2: float | None
    status: str
    raw: str | None = None
    judge: str = ""


def with_rating(fields: dict[str, Any], rating: dict[str, Any]) -> dict[str, Any]:
    """A ratings-file row: the example's own fields, then the rating's; the rating's go under RATING_PREFIX
    when any of their names is taken by the example (a user's `score` or `model` column is kept as it was)."""
    if any(k in fields for k in rating):
        return {**fields, **{RATING_PREFIX + k: v for k, v in rating.items()}}
    return {**fields, **rating}


def rating_field(row: dict[str, Any], name: str, default: Any = None) -> Any:
    """A rating field of a ratings-file row, wherever `with_rating` put it."""
    if RATING_PREFIX + "status" in row:
        return row.get(RATING_PREFIX + name, default)
    return row.get(name, default)


def rating_view(row: dict[str, Any]) -> dict[str, Any]:
    """A ratings-file row as readers that show ratings want it: the rating's fields under their plain names
    (a user's field of the same name is left out of this view, never out of the file)."""
    if RATING_PREFIX + "status" not in row:
        return row
    view = {k: v for k, v in row.items() if not k.startswith(RATING_PREFIX) and k not in RATING_FIELDS}
    view.update((k[len(RATING_PREFIX) :], v) for k, v in row.items() if k.startswith(RATING_PREFIX))
    return view


def user_fields(row: dict[str, Any]) -> dict[str, Any]:
    """The user's own fields of a ratings-file row (the training format), exactly as they were read."""
    if RATING_PREFIX + "status" in row:
        return {k: v for k, v in row.items() if not k.startswith(RATING_PREFIX)}
    names = RATING_FIELDS + (IFD_FIELD,) if str(row.get("judge") or "").startswith("ifd:") else RATING_FIELDS
    return {k: v for k, v in row.items() if k not in names}
