"""Pairwise comparison of two models, as the AlpaGasus paper does it (both orders, win/tie/lose).

`compare_files` / `reaggregate_files` are the file-level calls behind `alpagasus compare`; `compare` judges
answers already in memory. `annotations_files` re-aggregates AlpacaEval's published verdicts (`compare
--annotations`), read by `compare.alpacaeval`; `compare.lc` holds the length-controlled scores.
"""

from alpagasus.compare.aggregate import aggregate, combine, order_result, question_outcome
from alpagasus.compare.alpacaeval import Verdict, WinRate, by_model, read_annotations, win_rate, win_rates
from alpagasus.compare.files import (
    AnnotationsReport,
    CompareReport,
    annotations_files,
    compare_files,
    load_answers,
    reaggregate_files,
)
from alpagasus.compare.lc import LengthControlled, alpaca_eval_lc, lc_winning_score
from alpagasus.compare.pairwise import compare, judge_pairs, match, plan, reaggregate, stored_judgments
from alpagasus.compare.types import ORDERS, CompareResult, Judging, Mismatch, Pair

__all__ = [
    "compare_files",
    "reaggregate_files",
    "load_answers",
    "CompareReport",
    "compare",
    "reaggregate",
    "match",
    "plan",
    "judge_pairs",
    "stored_judgments",
    "aggregate",
    "combine",
    "order_result",
    "question_outcome",
    "CompareResult",
    "Judging",
    "Mismatch",
    "Pair",
    "ORDERS",
    "annotations_files",
    "AnnotationsReport",
    "Verdict",
    "WinRate",
    "read_annotations",
    "by_model",
    "win_rate",
    "win_rates",
    "LengthControlled",
    "lc_winning_score",
    "alpaca_eval_lc",
]
