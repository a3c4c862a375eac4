"""Where the cascade's predictor comes from, and how the strong judge's sample is shared out.

The sample is split (stratified by the judge's decision, seeded) into a certification part (`certify`
share: only ever used by rate/certify.py, after everything else is fixed) and a development part, itself
split into rows that train the distilled predictor and rows that compare the candidates:

- **shipped**: the predictor shipped for the template's dimension (`predictor:alpaca-claude-accuracy` for
  accuracy prompts, `predictor:alpaca-chatgpt-helpfulness` for helpfulness ones), trained on 10k labelled
  Alpaca rows; it never saw the user's rows, so every development row can set its band path;
- **distilled**: a predictor distilled from the training rows (`alpagasus.distill.fit_predictor`);
- **combined**: the mean of the two, each standardised on the comparison rows.

The candidate whose scores rank the comparison rows best (ROC-AUC against the judge's decisions) is used.
Scores are compared and combined on the logit scale: z = logit(score / 5), which orders rows as the
predictor's 0-5 score does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from alpagasus.records import Example

SHIPPED = {"accuracy": "predictor:alpaca-claude-accuracy", "helpfulness": "predictor:alpaca-chatgpt-helpfulness"}
TRAIN_SHARE = 0.6  # of the development part: trains the distilled predictor; the rest compares the candidates


def shipped_for(template_name: str) -> str | None:
    """The shipped predictor of a template's dimension (rate_accuracy, rate_helpfulness_guarded...), if any."""
    for dim, spec in SHIPPED.items():
        if dim in template_name:
            return spec
    return None


@dataclass(frozen=True)
class Split:
    """Positions in the sample: the distilled predictor's training rows, the comparison rows, the
    certification rows."""

    train: Any
    choose: Any
    cal: Any

    @property
    def dev(self) -> Any:
        import numpy as np

        return np.sort(np.concatenate([self.train, self.choose]))


def split_sample(keep: Any, certify: float, seed: int) -> Split:
    """Each class shuffled (seeded) and cut in the same shares, so every part has its share of kept rows."""
    import numpy as np

    y = np.asarray(keep, dtype=bool)
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[], [], []]
    for cls in (True, False):
        idx = rng.permutation(np.where(y == cls)[0])
        n_cal = round(certify * len(idx))
        n_train = round(TRAIN_SHARE * (len(idx) - n_cal))
        for part, chunk in zip(parts, (idx[n_cal : n_cal + n_train], idx[n_cal + n_train :], idx[:n_cal])):
            part.extend(int(i) for i in chunk)
    train, choose, cal = (np.sort(np.asarray(p, dtype=np.int64)) for p in parts)
    return Split(train, choose, cal)


def logit(score: Any) -> Any:
    """z = logit(score / 5): a predictor's 0-5 score on an unbounded scale, same order."""
    import numpy as np

    p = np.clip(np.asarray(score, dtype=float) / 5.0, 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class Scorer:
    """How the band's value of a row is made from its predictors' stored 0-5 scores:
    z = sum(weight_i * (logit(score_i / 5) - offset_i))."""

    start: str  # "shipped", "distilled" or "combined"
    predictors: tuple[str, ...]  # judge specs, in the order of the weights
    weights: tuple[float, ...]
    offsets: tuple[float, ...]

    def combine(self, scores: Sequence[Any]) -> Any:
        """z of each row from each predictor's scores (arrays of the same length, or one float each)."""
        return sum(w * (logit(s) - o) for w, o, s in zip(self.weights, self.offsets, scores))

    def value(self, scores: Sequence[float | None]) -> float | None:
        """One row's z from its predictors' scores; None if one is missing."""
        if any(s is None or not math.isfinite(s) for s in scores):
            return None
        return float(self.combine([float(s) for s in scores]))  # type: ignore[arg-type]


@dataclass
class Start:
    """The chosen candidate: its scorer, the rows its band path is built on, and each candidate's ROC-AUC."""

    scorer: Scorer
    z: Any  # z of every sample row (train rows of a distilled start: not used)
    path_rows: Any  # positions whose z and decisions build the band path
    auc: dict[str, float]


def _auc(keep: Any, z: Any) -> float:
    import numpy as np
    from sklearn.metrics import roc_auc_score

    y = np.asarray(keep, dtype=bool)
    return float(roc_auc_score(y, z)) if 0 < y.sum() < len(y) else math.nan


def choose_start(
    keep: Any, split: Split, shipped: tuple[str, Any] | None, distilled: tuple[str, Any] | None
) -> Start | None:
    """The candidate ranking the comparison rows best. `shipped` / `distilled`: (judge spec, 0-5 scores of
    every sample row) or None where there is none (no shipped predictor for the dimension; too few rows to
    distil). None when neither exists."""
    import numpy as np

    y = np.asarray(keep, dtype=bool)
    ch = split.choose
    cands: dict[str, tuple[Scorer, Any, Any]] = {}
    if shipped is not None:
        cands["shipped"] = (Scorer("shipped", (shipped[0],), (1.0,), (0.0,)), logit(shipped[1]), split.dev)
    if distilled is not None:
        cands["distilled"] = (Scorer("distilled", (distilled[0],), (1.0,), (0.0,)), logit(distilled[1]), ch)
    if shipped is not None and distilled is not None and len(ch) > 1:
        zs = [logit(shipped[1]), logit(distilled[1])]
        off = tuple(float(z[ch].mean()) for z in zs)
        w = tuple(0.5 / max(float(z[ch].std()), 1e-9) for z in zs)
        sc = Scorer("combined", (shipped[0], distilled[0]), w, off)
        cands["combined"] = (sc, sc.combine([shipped[1], distilled[1]]), ch)
    if not cands:
        return None
    auc = {name: _auc(y[ch], z[ch]) for name, (_, z, _) in cands.items()}
    order = ("shipped", "combined", "distilled")  # on a tie (or no AUC), the one needing the fewest fitted rows
    best = max(cands, key=lambda k: (-1.0 if math.isnan(auc[k]) else auc[k], -order.index(k)))
    sc, z, rows = cands[best]
    return Start(sc, np.asarray(z, dtype=float), rows, auc)


def distil(
    examples: list[Example], scores: Any, threshold: float, seed: int, feature_set: str, x: Any, name: str
) -> Any:
    """A predictor fitted on these rows (distill's recipe, head chosen by cross-validation); raises
    DistillError when a class is too small."""
    import numpy as np

    from alpagasus.distill import LabelSet, fit_predictor

    value = np.asarray(scores, dtype=np.float64)
    n = len(examples)
    ls = LabelSet(
        name,
        "score",
        threshold,
        list(examples),
        (value >= threshold).astype(np.int64),
        value,
        np.ones(n),
        np.ones(n, dtype=bool),
    )
    return fit_predictor(ls, holdout=0.0, seed=seed, features=x, name=name, feature_set=feature_set)


def predicted_scores(pred: Any, x: Any, examples: list[Example]) -> Any:
    """A predictor's 0-5 scores from the 774 embedding columns `x` (and the texts, for the "rich" features)."""
    from alpagasus.predictors import with_hand

    return pred.score(pred.raw(with_hand(x, examples, pred.feature_set), examples))
