"""A free pairwise judge that reads the question and both answers: `pairwise:NAME` (a model shipped in
`alpagasus/predictors/pairwise-NAME/`) or `pairwise:FOLDER` (saved by `alpagasus distill-pairwise`).

It gives P(answer 2 is better) from gradient-boosted trees (scikit-learn's HistGradientBoosting, stored as
plain node arrays and evaluated in numpy) over features of the pair (`pair_inputs`): each answer's length and
format features (`answer_features`), their difference and sum, how close each answer's MiniLM embedding is to
the question's, the two answers' similarity, and the question's own features. The trees are trained on both
orders and applied to both: P(a, b) = (g(a, b) + 1 - g(b, a)) / 2, so swapping the answers gives exactly
1 - P. The verdict cannot depend on which answer comes first (position bias zero by construction:
`order_blind`).

Ties: the answers tie when |P - 0.5| < `tie_band` (identical answers always: P = 0.5 exactly). The shipped
band is chosen on the training pairs so the judge ties about as often as the reference judge did there;
`tie_band=` overrides it. The verdict is typed (`Reply.pair`: two 1-10 scores, 1 + 9 P each side), no review
text to parse back. Trained by `alpagasus distill-pairwise` (alpagasus.distill.pairwise) on AlpacaEval's
published verdicts.
"""

from __future__ import annotations

import json
import math
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from alpagasus.judges.base import CPU, JudgeError, LocalJudge
from alpagasus.records import PairScores, Reply, Request

FORMAT = 1
PREFIX = "pairwise-"  # shipped models live in alpagasus/predictors/pairwise-NAME/
WEIGHTS, CARD = "pairwise.npz", "pairwise.json"  # not head.npz/card.json: a pairwise model is no predictor
SCALE = (1.0, 10.0)
WORD = re.compile(r"\w+")
LIST_ITEM = re.compile(r"\s*(\d+[.)]|[-*\u2022])\s")
CODE = re.compile(r"```|def |\{|\};|</|import |print\(|=>|==")
NUMBER = re.compile(r"\d+(?:\.\d+)?")
REFUSAL = ("i'm sorry", "i am sorry", "as an ai", "i cannot", "i can't", "unable to", "i don't have", "not able to")
# what each answer is described by (their differences enter the model)
FEATURES = (
    "log_chars",
    "log_words",
    "log_lines",
    "log_list_items",
    "log_headers",
    "log_bold",
    "has_code",
    "log_paragraphs",
    "refusal",
    "type_token_ratio",
    "mean_word_length",
    "question_words_covered",
    "ends_with_punctuation",
    "duplicate_line_share",
    "log_numbers",
    "log_sentences",
    "empty",
)
QUESTION_FEATURES = ("log_words_question", "asks_code", "asks_list")


def answer_features(question: str, answer: str) -> list[float]:
    """The FEATURES of one answer to `question` (plain Python: regular expressions and counts)."""
    a = answer.strip()
    words = WORD.findall(a.lower())
    qwords = {w for w in WORD.findall(question.lower()) if len(w) >= 3}
    lines = [s.strip() for s in a.split("\n") if s.strip()]
    low = a[:300].lower()
    return [
        math.log1p(len(a)),
        math.log1p(len(words)),
        math.log1p(len(lines)),
        math.log1p(sum(1 for s in lines if LIST_ITEM.match(s))),
        math.log1p(sum(1 for s in lines if s.startswith("#"))),
        math.log1p(a.count("**") // 2),
        float(bool(CODE.search(a))),
        math.log1p(a.count("\n\n")),
        float(any(r in low for r in REFUSAL)),
        len(set(words)) / max(1, len(words)),
        sum(len(w) for w in words) / max(1, len(words)),
        len(qwords & set(words)) / max(1, len(qwords)),
        float(a[-1:] in ".!?)`\"'"),
        1.0 - len(set(lines)) / max(1, len(lines)),
        math.log1p(len(NUMBER.findall(a))),
        math.log1p(a.count(". ") + a.count("! ") + a.count("? ") + a.count(".\n")),
        float(not a),
    ]


def pair_inputs(fq: Any, fa: Any, fb: Any, eq: Any, ea: Any, eb: Any) -> Any:
    """The trees' input for pairs (a = answer 1, b = answer 2), one row each: the answers' feature differences
    and sums, how close each answer's embedding is to the question's (difference and sum), the two answers'
    similarity, and the question's features. fq: (n, len(QUESTION_FEATURES)); fa, fb: (n, len(FEATURES));
    eq, ea, eb: (n, 384) unit embeddings."""
    import numpy as np

    fa, fb = np.asarray(fa, dtype=np.float64), np.asarray(fb, dtype=np.float64)
    qa, qb, ab = ((x * z).sum(1) for x, z in ((eq, ea), (eq, eb), (ea, eb)))
    return np.hstack([fb - fa, fa + fb, np.c_[qb - qa, qa + qb, ab], np.asarray(fq, dtype=np.float64)])


def question_features(question: str) -> list[float]:
    """The QUESTION_FEATURES: how long the question is and whether it asks for code or a list."""
    q = question.lower()
    return [math.log1p(len(WORD.findall(q))), float(bool(CODE.search(question)) or "code" in q), float("list" in q)]


def model_dir(name_or_path: str | Path) -> Path:
    """A shipped model's name (`alpacaeval-gpt4`) or a folder saved by `distill-pairwise`."""
    from alpagasus.predictors import HERE

    p = Path(name_or_path)
    if (p / CARD).exists():
        return p
    shipped_dir = HERE / f"{PREFIX}{name_or_path}"
    if (shipped_dir / CARD).exists():
        return shipped_dir
    raise JudgeError(
        f"no pairwise model {str(name_or_path)!r}: not a folder with {CARD}, nor a shipped name "
        f"({', '.join(shipped()) or 'none shipped'})"
    )


def shipped() -> list[str]:
    """Names of the pairwise models that ship with the package."""
    from alpagasus.predictors import HERE

    return sorted(p.name[len(PREFIX) :] for p in HERE.glob(f"{PREFIX}*") if (p / CARD).exists())


@dataclass
class PairModel:
    """Scaling, weights and tie band as plain arrays (no pickle), and the card (settings, data, figures)."""

    arrays: dict[str, Any]
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.card.get("name", "pairwise"))

    @property
    def tie_band(self) -> float:
        return float(self.arrays["tie_band"][0])

    @property
    def digest(self) -> str:
        """Hash of what changes a verdict: a retrained model never reuses stale judgments."""
        from alpagasus.predictors import arrays_hash

        return str(arrays_hash(self.arrays).hexdigest()[:10])

    def raw(self, x: Any) -> Any:
        """The trees' log-odds that answer 2 is better, for pair inputs in the order given (sklearn's
        HistGradientBoostingClassifier.decision_function, recomputed from its nodes: x <= threshold goes left)."""
        import numpy as np

        a = self.arrays
        x = np.asarray(x, dtype=np.float64)
        rows = np.arange(len(x))
        out = np.full(len(x), float(a["baseline"][0]))
        feat, thr, left, right, leaf, value = (a[k] for k in ("feature", "threshold", "left", "right", "leaf", "value"))
        for root in a["roots"]:
            node = np.full(len(x), int(root))
            active = ~leaf[node]
            while active.any():
                n = node[active]
                go_left = x[rows[active], feat[n]] <= thr[n]
                node[active] = np.where(go_left, left[n], right[n])
                active = ~leaf[node]
            out += value[node]
        return out

    def prob(self, x_ab: Any, x_ba: Any) -> Any:
        """P(answer 2 is better), the two orders averaged: P(a, b) = (g(a, b) + 1 - g(b, a)) / 2, so swapping
        the answers gives exactly 1 - P (no position bias)."""
        import numpy as np

        g = lambda x: 1.0 / (1.0 + np.exp(-np.clip(self.raw(x), -60, 60)))  # noqa: E731
        return (g(x_ab) + 1.0 - g(x_ba)) / 2.0

    def save(self, folder: str | Path) -> Path:
        import numpy as np

        from alpagasus.data import atomic_writer, write_json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_writer(folder / WEIGHTS, "wb") as f:
            np.savez_compressed(f, **self.arrays)
        self.card["digest"] = self.digest
        write_json(folder / CARD, self.card)
        return folder

    @classmethod
    def load(cls, name_or_path: str | Path) -> PairModel:
        import numpy as np

        folder = model_dir(name_or_path)
        try:
            card = json.loads((folder / CARD).read_text(encoding="utf-8"))
            with np.load(folder / WEIGHTS, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise JudgeError(f"{folder}: cannot read the pairwise model ({e})") from e
        if card.get("format") != FORMAT:
            raise JudgeError(f"{folder}/{CARD}: format {card.get('format')!r}, this version reads {FORMAT}")
        missing = {"feature", "threshold", "left", "right", "leaf", "value", "roots", "baseline", "tie_band"} - set(
            arrays
        )
        if missing:
            raise JudgeError(f"{folder}/{WEIGHTS}: missing arrays {sorted(missing)}")
        return cls(arrays, card)


def pair_scores(p: float, band: float) -> tuple[float, float, int]:
    """(score of answer 1, score of answer 2, verdict 1 / 2 / 0 = tie) from P(answer 2 is better): each side
    1 + 9 x its probability; equal (their mean, 5.5) inside the tie band."""
    lo, hi = SCALE
    if abs(p - 0.5) < band or p == 0.5:
        mid = (lo + hi) / 2
        return mid, mid, 0
    return round(lo + (hi - lo) * (1 - p), 6), round(lo + (hi - lo) * p, 6), 2 if p > 0.5 else 1


class PairwiseModelJudge(LocalJudge):
    mode = "generate"  # compare's judging mode; the verdict comes typed in Reply.pair
    batch_size = 128
    order_blind = True  # antisymmetric: both orders give the same verdict, so position bias is zero
    pair_scores = True
    resources = CPU

    def __init__(
        self,
        arg: str,
        mode: str | None = None,
        backend: str = "pairwise",
        batch_size: int | None = None,
        tie_band: float | None = None,
    ):
        if not arg:
            raise JudgeError(
                f"pairwise judge needs a model: pairwise:NAME ({', '.join(shipped())}) or pairwise:FOLDER saved "
                "by `alpagasus distill-pairwise`"
            )
        if mode not in (None, "generate"):
            raise JudgeError(f"pairwise:{arg} gives pairwise verdicts (mode 'generate'), not {mode!r}")
        if tie_band is not None and not 0.0 <= tie_band < 0.5:
            raise JudgeError(f"pairwise:{arg}: tie_band must be in [0, 0.5), not {tie_band!r}")
        self.arg = arg
        self.batch_size = batch_size or self.batch_size
        self.model = PairModel.load(arg)
        self.band = self.model.tie_band if tie_band is None else float(tie_band)
        self._encoder: Any = None
        self._emb: dict[str, Any] = {}  # text -> unit embedding: each question and answer encoded once
        self._lock = threading.Lock()

    @property
    def id(self) -> str:
        return f"pairwise:{self.model.name}@{self.model.digest}/tie-band-{self.band:g}"

    def load(self) -> None:
        if self._encoder is None:
            from alpagasus.predictors import PredictorError, shared_encoder

            try:
                self._encoder = shared_encoder()
            except PredictorError as e:
                raise JudgeError(str(e)) from None

    def _embed(self, texts: Sequence[str]) -> None:
        todo = list(dict.fromkeys(t for t in texts if t not in self._emb))
        if todo:
            self._emb.update(zip(todo, self._encoder.encode(todo)))

    def probabilities(self, triples: Sequence[tuple[str, str, str]]) -> Any:
        """P(answer 2 is better) for (question, answer 1, answer 2) triples."""
        import numpy as np

        self.load()
        with self._lock:  # the encoder is not re-entrant
            self._embed([t for tr in triples for t in tr])
        eq, ea, eb = (np.stack([self._emb[tr[i]] for tr in triples]).astype(np.float64) for i in range(3))
        fq = np.array([question_features(q) for q, _, _ in triples]).reshape(len(triples), len(QUESTION_FEATURES))
        fa = np.array([answer_features(q, a) for q, a, _ in triples]).reshape(len(triples), len(FEATURES))
        fb = np.array([answer_features(q, b) for q, _, b in triples]).reshape(len(triples), len(FEATURES))
        return self.model.prob(pair_inputs(fq, fa, fb, eq, ea, eb), pair_inputs(fq, fb, fa, eq, eb, ea))

    def score_sync(self, requests: list[Request]) -> list[Reply]:
        need = {"question", "answer_1", "answer_2"}
        missing = [r.key for r in requests if not r.fields or not need <= set(r.fields)]
        if missing:
            raise JudgeError(
                f"pairwise:{self.arg} judges a question and two answers (compare), not a prompt: "
                f"request {missing[0]!r} carries no question/answer_1/answer_2"
            )
        if not requests:
            return []
        triples = [(r.fields["question"], r.fields["answer_1"], r.fields["answer_2"]) for r in requests if r.fields]
        return [self._reply(t, float(p)) for t, p in zip(triples, self.probabilities(triples))]

    def _reply(self, triple: tuple[str, str, str], p: float) -> Reply:
        s1, s2, v = pair_scores(p, self.band)
        said = "a tie: within the tie band" if v == 0 else f"Assistant {v}'s answer is better"
        why = (
            f"Pairwise model {self.model.name}: P(Assistant 2's answer is better) = {p:.3f} from both answers' "
            f"length, format and MiniLM features; tie band {self.band:g} around 0.5: {said}."
        )
        tokens = sum(len(t) for t in triple) // 4
        return Reply(pair=PairScores(s1, s2, why), model=self.model.name, tokens_in=tokens, extra={"p_2": round(p, 5)})
