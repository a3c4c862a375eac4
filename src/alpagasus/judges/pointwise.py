"""A pairwise judge that scores each answer alone: `pointwise:PREDICTOR` (a shipped predictor's name, or a
folder saved by `alpagasus distill`). The default of `alpagasus compare` when no --judge is given and the
predictor's encoder is installed (judges.default_pairwise_judge).

Each answer is scored once by the predictor, as the strong judge's calibrated log-odds of keeping it as a
reply to the question, and the judge answers with the typed pairwise verdict (`Reply.pair`: PairScores, two
1-10 scores and why), stored as any other pairwise judge's parsed review is: no review text to parse back.
Because a score never depends on the other answer or on its position, both orders give the same verdict:
position bias cannot be measured with this judge (`order_blind`, noted in compare's summary).

The tie rule, in the predictor's calibrated units: the predictor's 0-5 score is 5 * sigmoid(z), z the log-odds
that the strong judge keeps the answer (z's scale is the Platt slope fitted on held-out rows, so a noisier
predictor has flatter z and calls more ties). The answers tie unless one's odds are at least `tie_odds` times
the other's (|z1 - z2| >= log(tie_odds)). The margin is a fixed odds ratio, not a number fitted to any file, so
a retrained predictor keeps the same meaning. docs/compare.md gives what it measured.
"""

from __future__ import annotations

import math
import threading
from typing import Any

from alpagasus.judges.base import CPU, JudgeError, LocalJudge
from alpagasus.records import Example, PairScores, Reply, Request, content_id

MODES = (None, "generate")
TIE_ODDS = 1.5
EMPTY_Z = -30.0  # an empty answer: below any answer the predictor scores (an empty reply loses, never ties)
SCALE = (1.0, 10.0)  # the pairwise prompt's scale, which the verdict's scores are on


def log_odds(score_0_5: float) -> float:
    """The predictor's calibrated log-odds from its 0-5 score (5 * sigmoid(z)); clipped so saturated scores stay
    finite."""
    p = min(max(score_0_5 / 5.0, 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))


def verdict(z1: float, z2: float, margin: float) -> int:
    """1 when Assistant 1's answer is better, 2 when Assistant 2's is, 0 for a tie (|z1 - z2| < margin)."""
    if abs(z1 - z2) < margin:
        return 0
    return 1 if z1 > z2 else 2


def review_scores(z1: float, z2: float, margin: float) -> tuple[float, float]:
    """The two 1-10 scores of the verdict: 1 + 9 * P(keep)-like sigmoid(z), equal for a tie (their mean), and
    never equal for a decision (4 decimals; a saturated pair is set 0.0001 apart)."""
    lo, hi = SCALE
    s1, s2 = (round(lo + (hi - lo) / (1 + math.exp(-max(min(z, 60.0), -60.0))), 4) for z in (z1, z2))
    v = verdict(z1, z2, margin)
    if v == 0:
        m = round((s1 + s2) / 2, 4)
        return m, m
    if s1 == s2:  # both near a bound: keep the order the log-odds gave, inside the scale
        step = 0.0001
        if v == 1:
            s1, s2 = (s1, s2 - step) if s2 - step >= lo else (s1 + step, s2)
        else:
            s1, s2 = (s1 - step, s2) if s1 - step >= lo else (s1, s2 + step)
    return s1, s2


class PointwiseJudge(LocalJudge):
    mode = "generate"  # compare's judging mode (kept: the judge's id and stored judgments do not change)
    batch_size = 128
    order_blind = True  # a verdict never depends on which answer came first
    pair_scores = True  # it answers with Reply.pair: two typed scores, no review text to parse back
    resources = CPU

    def __init__(
        self,
        arg: str,
        mode: str | None = None,
        backend: str = "pointwise",
        batch_size: int | None = None,
        tie_odds: float = TIE_ODDS,
    ):
        from alpagasus.judges.predictor import PredictorJudge

        if not arg:
            from alpagasus.predictors import shipped

            raise JudgeError(
                f"pointwise judge needs a predictor: pointwise:NAME ({', '.join(shipped())}) or "
                "pointwise:FOLDER saved by `alpagasus distill`"
            )
        if mode not in MODES:
            raise JudgeError(f"pointwise:{arg} gives pairwise verdicts (mode 'generate'), not {mode!r}")
        if not tie_odds >= 1.0:
            raise JudgeError(f"pointwise:{arg}: tie_odds must be >= 1 (1 = no ties), not {tie_odds!r}")
        self.arg, self.tie_odds = arg, float(tie_odds)
        self.margin = math.log(self.tie_odds)
        self.batch_size = batch_size or self.batch_size
        self._scorer = PredictorJudge(arg, batch_size=self.batch_size)
        self._z: dict[str, float] = {}  # content id of (question, answer) -> log-odds: each answer scored once
        self._lock = threading.Lock()

    @property
    def id(self) -> str:
        # the predictor's digest: a retrained predictor never reuses stale verdicts; the margin likewise
        return f"pointwise:{self._scorer.id.split(':', 1)[1]}/tie-odds-{self.tie_odds:g}"

    @property
    def predictor_name(self) -> str:
        return str(self._scorer.predictor.name)

    def load(self) -> None:
        self._scorer.load()

    def close(self) -> None:
        self._scorer.close()

    def count_tokens(self, text: str) -> int:
        return self._scorer.count_tokens(text)

    def _score(self, todo: dict[str, tuple[str, str]]) -> None:
        """Fill the cache for these (question, answer) pairs; empty answers get EMPTY_Z without the model."""
        reqs = []
        for k, (q, a) in todo.items():
            if not a.strip():
                self._z[k] = EMPTY_Z
            else:
                reqs.append(Request(key=k, system="", user="", example=Example.alpaca(q, "", a)))
        for req, rep in zip(reqs, self._scorer.score_sync(reqs) if reqs else []):
            if rep.score is None:
                raise JudgeError(f"pointwise:{self.arg}: the predictor gave no score ({rep.error})")
            self._z[req.key] = log_odds(float(rep.score))

    def score_sync(self, requests: list[Request]) -> list[Reply]:
        need = {"question", "answer_1", "answer_2"}
        missing = [r.key for r in requests if not r.fields or not need <= set(r.fields)]
        if missing:
            raise JudgeError(
                f"pointwise:{self.arg} judges a question and two answers (compare), not a prompt: "
                f"request {missing[0]!r} carries no question/answer_1/answer_2"
            )
        if not requests:
            return []
        self.load()
        todo: dict[str, tuple[str, str]] = {}
        for r in requests:
            f = r.fields or {}
            for a in (f["answer_1"], f["answer_2"]):
                todo.setdefault(content_id(f["question"], a), (f["question"], a))
        with self._lock:  # one batch for every answer of these requests that the cache lacks
            self._score({k: v for k, v in todo.items() if k not in self._z})
        return [self._reply(r) for r in requests]

    def _reply(self, r: Request) -> Reply:
        f = r.fields or {}
        z1 = self._z[content_id(f["question"], f["answer_1"])]
        z2 = self._z[content_id(f["question"], f["answer_2"])]
        s1, s2 = review_scores(z1, z2, self.margin)
        v = verdict(z1, z2, self.margin)
        said = "a tie: the difference is within the tie margin" if v == 0 else f"Assistant {v}'s answer is better"
        why = (
            f"Pointwise judge (predictor {self.predictor_name}): each answer scored alone as the "
            f"strong judge's log-odds of keeping it: Assistant 1 {z1:.3f}, Assistant 2 {z2:.3f}; difference "
            f"{z1 - z2:+.3f}, tie margin {self.margin:.3f} (odds ratio {self.tie_odds:g}): {said}."
        )
        extra: dict[str, Any] = {
            "log_odds_1": round(z1, 4),
            "log_odds_2": round(z2, 4),
            "tie_margin": round(self.margin, 4),
        }
        tokens = sum(len(f[k]) for k in ("question", "answer_1", "answer_2")) // 4
        return Reply(pair=PairScores(s1, s2, why), model=self.predictor_name, tokens_in=tokens, extra=extra)
