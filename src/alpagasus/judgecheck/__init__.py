"""Know your judge: `alpagasus judge-check` measures any judge on a reference set of published verdicts,
beside trivial judges (longer wins, shorter wins, always first, a coin), and writes its judge card.

references.py (reading reference sets, sampling), metrics.py (agreement, position bias, length preference,
rank correlation of per-model win rates, ROC-AUC, precision at the kept fraction), baselines.py (the trivial
judges), cards.py (the card record; `find_card`, `caveat`: the line other outputs show), check.py
(`judge_check`: the judge through the engine and the store). See docs/judge_check.md.
"""

from alpagasus.judgecheck.cards import JudgeCard, caveat, find_card, read_card, write_card
from alpagasus.judgecheck.check import ReferenceSpec, judge_check
from alpagasus.judgecheck.metrics import PairwiseFigures, RatingFigures, pairwise_figures, rating_figures

__all__ = [
    "judge_check",
    "ReferenceSpec",
    "JudgeCard",
    "read_card",
    "write_card",
    "find_card",
    "caveat",
    "PairwiseFigures",
    "RatingFigures",
    "pairwise_figures",
    "rating_figures",
]
