"""Pairwise comparison of two models, as the AlpaGasus paper does it (both orders, win/tie/lose).

`compare_files` / `reaggregate_files` are the file-level calls behind `alpagasus compare`; `compare` judges
answers already in memory.
"""
from alpagasus.compare.files import CompareReport, compare_files, load_answers, reaggregate_files
from alpagasus.compare.aggregate import aggregate, combine, order_result, question_outcome
from alpagasus.compare.pairwise import compare, judge_pairs, match, plan, reaggregate, stored_judgments
from alpagasus.compare.types import ORDERS, CompareResult, Judging, Mismatch, Pair

__all__ = ["compare_files", "reaggregate_files", "load_answers", "CompareReport", "compare", "reaggregate",
           "match", "plan", "judge_pairs", "stored_judgments", "aggregate", "combine", "order_result",
           "question_outcome", "CompareResult", "Judging", "Mismatch", "Pair", "ORDERS"]
