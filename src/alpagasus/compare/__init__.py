"""Pairwise comparison of two models, as the AlpaGasus paper does it (both orders, win/tie/lose).

`compare_files` / `reaggregate_files` are the file-level calls behind `alpagasus compare`; `compare` judges
answers already in memory.
"""
from alpagasus.compare.files import CompareReport, compare_files, load_answers, reaggregate_files
from alpagasus.compare.pairwise import CompareResult, Pair, aggregate, compare, match, reaggregate

__all__ = ["compare_files", "reaggregate_files", "load_answers", "CompareReport", "compare", "reaggregate",
           "match", "aggregate", "CompareResult", "Pair"]
