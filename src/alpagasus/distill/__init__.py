"""Distil a strong judge's ratings into a cheap predictor (the FineWeb-Edu / NeMo Curator recipe).

Labels (labels.py) -> features: frozen MiniLM embeddings + length features, and for the "rich" set hand
features and TF-IDF terms (alpagasus.predictors) -> a small head chosen by cross-validation (heads.py)
-> calibrated on out-of-fold rows of the natural distribution -> measured on held-out rows -> saved as
plain arrays with a card (train.py; see alpagasus.predictors for the file format and the 0-5 score map).
"""

from __future__ import annotations

from alpagasus.distill.heads import AUTO_HEADS, HEADS, calibrate, fit_head, metrics, out_of_fold
from alpagasus.distill.labels import FALSE, TRUE, DistillError, LabelSet, check_labels, load_labels
from alpagasus.distill.train import cached_features, distill, fit_predictor, make_card, split_holdout, write_readme

__all__ = [
    "AUTO_HEADS",
    "FALSE",
    "HEADS",
    "TRUE",
    "DistillError",
    "LabelSet",
    "cached_features",
    "calibrate",
    "check_labels",
    "distill",
    "fit_head",
    "fit_predictor",
    "load_labels",
    "make_card",
    "metrics",
    "out_of_fold",
    "split_holdout",
    "write_readme",
]
