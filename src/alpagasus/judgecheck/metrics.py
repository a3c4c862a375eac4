"""The figures of a judge against a reference set (plain Python; scipy's rank correlations when installed).

Pairwise (a verdict per item: "1", "2" or "tie"):
- `agreement`: the share of items the judge and the reference both decided three-way alike;
- `agreement_decided`: on the items the reference decided (not a draw), the share where the judge picked the
  same answer (a judge's tie there is a miss);
- `ties`: the share of the judge's verdicts that are ties;
- `position_bias`: the share of items whose two orders disagree (both orders asked; None when not asked, or
  for a judge that scores each answer alone);
- `prefers_longer`: among the judge's decided verdicts on answers of different lengths, the share won by the
  longer answer (0.5: no preference);
- per judged model, the win rate of answer 2 (a tie counts one half; the reference's soft preference as it
  is), and the rank correlation of the judge's win rates with the reference's (Spearman, Kendall's tau-b),
  over models with at least one item, with three or more models.
Rating (a score per item against a keep decision): ROC-AUC, precision at the kept fraction (the top k rows by
score, k = the decisions' keeps), and Spearman of the score with the response length in characters.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from alpagasus.judgecheck.references import PairItem, RatingItem
from alpagasus.report.stats import ranks  # average ranks, ties sharing their mean: one implementation

STRONG_LONGER = 0.7  # prefers_longer at or above this (or at or below 1 - this) is a strong length preference
STRONG_RHO = 0.4  # |Spearman of score with length| at or above this is a strong length preference


@dataclass
class PairwiseFigures:
    items: int = 0  # items with a reference verdict
    judged: int = 0  # of them, items the judge gave a verdict
    agreement: float | None = None
    agreement_decided: float | None = None
    decided: int = 0  # items the reference decided (not a draw) and the judge judged
    ties: float | None = None
    position_bias: float | None = None
    prefers_longer: float | None = None
    spearman: float | None = None
    kendall: float | None = None
    models: int = 0
    win_rates: dict[str, float] = field(default_factory=dict)  # judged model -> answer 2's win rate


@dataclass
class RatingFigures:
    items: int = 0
    rated: int = 0  # items the judge gave a score
    positives: int = 0
    roc_auc: float | None = None
    precision_at_kept: float | None = None
    kept_fraction: float | None = None
    length_spearman: float | None = None


def _share(hits: int, n: int) -> float | None:
    return round(hits / n, 4) if n else None


def _r(v: float | None) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 4)


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho; None with fewer than 3 pairs or a constant side."""
    from alpagasus.report.stats import spearman as rho

    return _r(rho(list(x), list(y))) if len(x) >= 3 else None


def kendall(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b (scipy's when installed); None with fewer than 3 pairs or a constant side."""
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    try:
        from scipy.stats import kendalltau
    except ImportError:
        conc = disc = tx = ty = 0
        for i in range(len(x)):
            for j in range(i + 1, len(x)):
                dx, dy = x[i] - x[j], y[i] - y[j]
                if dx == 0 and dy == 0:
                    continue
                if dx == 0:
                    tx += 1
                elif dy == 0:
                    ty += 1
                else:
                    conc, disc = conc + (dx * dy > 0), disc + (dx * dy < 0)
        return _r((conc - disc) / math.sqrt((conc + disc + tx) * (conc + disc + ty)))
    return _r(kendalltau(x, y).statistic)


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """ROC-AUC from average ranks (the Mann-Whitney U); ties count one half. None without both classes."""
    pos = sum(1 for y in labels if y)
    neg = len(labels) - pos
    if not pos or not neg:
        return None
    r = ranks(scores)
    return _r((sum(ri for ri, y in zip(r, labels) if y) - pos * (pos + 1) / 2) / (pos * neg))


def precision_at_kept(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Precision of the top k by score, k = the number of keeps (equal scores keep their input order)."""
    k = sum(1 for y in labels if y)
    if not k:
        return None
    top = sorted(range(len(scores)), key=lambda i: -scores[i])[:k]
    return _r(sum(1 for i in top if labels[i]) / k)


def win_rates(items: Sequence[PairItem], verdicts: Mapping[str, str | None]) -> tuple[dict, dict]:
    """Per judged model: (the judge's win rate of answer 2, the reference's on the same items)."""
    judge: dict[str, list[float]] = defaultdict(list)
    ref: dict[str, list[float]] = defaultdict(list)
    for it in items:
        v = verdicts.get(it.key)
        if v is None or it.reference is None:
            continue
        judge[it.group].append({"2": 1.0, "tie": 0.5, "1": 0.0}[v])
        ref[it.group].append(
            it.preference if it.preference is not None else {"2": 1.0, "tie": 0.5, "1": 0.0}[it.reference]
        )
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    return ({g: round(mean(v), 4) for g, v in judge.items()}, {g: round(mean(v), 4) for g, v in ref.items()})


def pairwise_figures(
    items: Sequence[PairItem], verdicts: Mapping[str, str | None], disagree: Mapping[str, bool] | None = None
) -> PairwiseFigures:
    """The figures of one judge's verdicts (by item key; None or absent: no verdict). `disagree`: per item,
    whether its two orders disagreed (None: one order only, or a judge that scores each answer alone)."""
    f = PairwiseFigures(items=sum(1 for it in items if it.reference is not None))
    same = same_decided = ties = longer = length_decided = 0
    for it in items:
        v = verdicts.get(it.key)
        if it.reference is None or v is None:
            continue
        f.judged += 1
        same += v == it.reference
        ties += v == "tie"
        if it.reference != "tie":
            f.decided += 1
            same_decided += v == it.reference
        if v != "tie" and len(it.answer_1) != len(it.answer_2):
            length_decided += 1
            longer += (v == "1") == (len(it.answer_1) > len(it.answer_2))
    f.agreement, f.agreement_decided = _share(same, f.judged), _share(same_decided, f.decided)
    f.ties, f.prefers_longer = _share(ties, f.judged), _share(longer, length_decided)
    if disagree is not None:
        asked = [disagree[it.key] for it in items if it.key in disagree and verdicts.get(it.key) is not None]
        f.position_bias = _share(sum(asked), len(asked))
    judge_wr, ref_wr = win_rates(items, verdicts)
    f.win_rates, f.models = judge_wr, len(judge_wr)
    models = sorted(judge_wr)
    if len(models) >= 3:
        f.spearman = spearman([judge_wr[m] for m in models], [ref_wr[m] for m in models])
        f.kendall = kendall([judge_wr[m] for m in models], [ref_wr[m] for m in models])
    return f


def rating_figures(items: Sequence[RatingItem], scores: Mapping[str, float | None]) -> RatingFigures:
    """The figures of one judge's scores (by example id; None or absent: no score) against the decisions."""
    got = [(x, it) for it in items if (x := scores.get(it.key)) is not None]
    s = [float(x) for x, _ in got]
    y = [it.decision for _, it in got]
    lengths = [float(len(it.example.response)) for _, it in got]
    f = RatingFigures(items=len(items), rated=len(got), positives=sum(y))
    f.roc_auc, f.precision_at_kept = roc_auc(s, y), precision_at_kept(s, y)
    f.kept_fraction = _share(sum(y), len(y))
    f.length_spearman = spearman(s, lengths)
    return f


def pairwise_length_reading(prefers_longer: float | None) -> str | None:
    """A plain reading of a strong length preference in pairwise verdicts, None when it is not strong."""
    if prefers_longer is None:
        return None
    if prefers_longer >= STRONG_LONGER:
        return f"the judge strongly prefers the longer answer ({prefers_longer:.0%} of its decided verdicts)"
    if prefers_longer <= 1 - STRONG_LONGER:
        return f"the judge strongly prefers the shorter answer ({1 - prefers_longer:.0%} of its decided verdicts)"
    return None


def rating_length_reading(rho: float | None) -> str | None:
    """A plain reading of a strong Spearman of score with response length, None when it is not strong."""
    if rho is None or abs(rho) < STRONG_RHO:
        return None
    side = "longer" if rho > 0 else "shorter"
    return (
        f"the judge strongly prefers {side} answers (Spearman {rho:+.2f} of score with length): "
        f"part of what it ranks is length"
    )
