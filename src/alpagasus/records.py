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


def content_id(*parts: str) -> str:
    """Stable id of a piece of content: ratings attach to content, not row numbers."""
    h = hashlib.sha256()
    for p in parts:
        b = p.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))  # length-prefix so ("ab","c") != ("a","bc")
        h.update(b)
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Turn:
    """One turn of a conversation. Roles are ours: ShareGPT's human/gpt are read as user/assistant."""

    role: str  # "system" | "user" | "assistant"
    content: str


def _joined(instruction: str, input: str) -> str:
    """Alpaca's prompt as one text: the instruction, then the input after a blank line when there is one."""
    return instruction + "\n\n" + input if input.strip() else instruction


@dataclass
class Example:
    """The format-neutral sample (docs/formats.md): the conversation as read, the row as read, and the views
    every stage outside `formats/` reads (`prompt`, `response`, `prompt_fields()`), never a format's field
    names. Alpaca and Dolly rows also keep their three fields (`parts`): their content id and prompt come from
    them exactly as before, so stores written before formats existed keep their ratings."""

    messages: tuple[Turn, ...]  # the conversation as read; Alpaca: (user, assistant)
    format: str = "alpaca"  # a formats/ name: "alpaca" | "dolly" | "messages" | "sharegpt"
    row_data: dict[str, Any] = field(default_factory=dict)  # the row exactly as read (select writes it back)
    row: int | None = None  # 1-based row in the source file, for messages
    id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # the row's other columns, kept and written back
    parts: tuple[str, str, str] | None = None  # Alpaca/Dolly: (instruction, input, output); None for chat rows

    def __post_init__(self) -> None:
        if not self.id:
            self.id = self._content_id()

    @classmethod
    def alpaca(
        cls,
        instruction: str,
        input: str,
        output: str,
        extra: dict[str, Any] | None = None,
        row: int | None = None,
        format: str = "alpaca",
        row_data: dict[str, Any] | None = None,
    ) -> Example:
        """An Alpaca-shaped example from its three fields (code and tests that build examples)."""
        return cls(
            messages=(Turn("user", _joined(instruction, input)), Turn("assistant", output)),
            format=format,
            row_data=row_data if row_data is not None else {},  # the reader's own dict: not copied
            row=row,
            extra=dict(extra or {}),
            parts=(instruction, input, output),
        )

    def _content_id(self) -> str:
        if self.parts is not None:  # unchanged since the first store: every paid rating stays found
            return content_id(*self.parts)
        turns = json.dumps([[t.role, t.content] for t in self.messages], ensure_ascii=False)
        return content_id("messages/v1", turns)

    @property
    def response(self) -> str:
        """The judged response: the last assistant turn's content (Alpaca: the output)."""
        if self.parts is not None:
            return self.parts[2]
        return next((t.content for t in reversed(self.messages) if t.role == "assistant"), "")

    @property
    def context(self) -> tuple[Turn, ...]:
        """The turns before the judged response: system prompt, earlier turns, the last user turn."""
        last = max((i for i, t in enumerate(self.messages) if t.role == "assistant"), default=len(self.messages))
        return self.messages[:last]

    @property
    def prompt(self) -> str:
        """What comes before the judged response, as text: Alpaca's instruction (+ blank line + input); a
        conversation's context rendered as docs/formats.md shows (`render_context`)."""
        if self.parts is not None:
            return _joined(self.parts[0], self.parts[1])
        return render_context(self.context)

    def prompt_fields(self) -> dict[str, str]:
        """The rubric template's variables: Alpaca's own three fields; for a conversation, `instruction` is the
        rendered context, `input` is empty and `output` is the last assistant turn."""
        if self.parts is not None:
            return dict(zip(CORE_FIELDS, self.parts))
        return {"instruction": self.prompt, "input": "", "output": self.response}

    def fields(self) -> dict[str, Any]:
        """The row as it is written back (ratings and selection files): Alpaca and Dolly as today, their three
        fields under our names then the other columns; a conversation, the row exactly as read."""
        if self.parts is not None:
            return {**dict(zip(CORE_FIELDS, self.parts)), **self.extra}
        return dict(self.row_data)

    # Transitional: the three Alpaca names for modules not yet moved to the views (prompt_fields' values, so a
    # conversation reads as its rendered context and last answer); tests/test_architecture.py lists who reads them.
    @property
    def instruction(self) -> str:
        return self.prompt_fields()["instruction"]

    @property
    def input(self) -> str:
        return self.prompt_fields()["input"]

    @property
    def output(self) -> str:
        return self.response

    @property
    def empty_field(self) -> str | None:
        """The part that holds no text (nothing to learn from), else None: "instruction" or "output" for Alpaca,
        "last user turn" or "last assistant turn" for a conversation."""
        if self.parts is not None:
            return next((f for f, v in zip(("instruction", "output"), self.parts[::2]) if not v.strip()), None)
        if not self.response.strip():
            return "last assistant turn"
        users = [t for t in self.context if t.role == "user"]
        return "last user turn" if not users or not users[-1].content.strip() else None


ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}


def render_context(turns: tuple[Turn, ...] | list[Turn]) -> str:
    """The text a judge sees in the instruction's place for a conversation (docs/formats.md): one user turn
    alone is its text as is (a one-turn chat row reads like an Alpaca instruction); otherwise each turn as
    "Role: content", separated by blank lines."""
    if len(turns) == 1 and turns[0].role == "user":
        return turns[0].content
    return "\n\n".join(f"{ROLE_NAMES.get(t.role, t.role.title())}: {t.content}" for t in turns)


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


@dataclass(frozen=True)
class PairScores:
    """A pairwise verdict on one question, typed: Assistant 1's score, Assistant 2's (on the pairwise prompt's
    scale, 1-10) and why. A pairwise scorer returns it in `Reply.pair`; an LLM judge's written review is parsed
    into it (prompts.parse.parse_pair_scores); either way it is stored as a Rating with score = score_1 and
    extra["score_2"] = score_2."""

    score_1: float
    score_2: float
    explanation: str = ""


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
    pair: PairScores | None = None  # a pairwise scorer's two scores (no review text to parse back)
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
