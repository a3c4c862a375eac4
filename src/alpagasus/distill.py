"""Distil a strong judge's ratings into a cheap predictor (the FineWeb-Edu / NeMo Curator recipe).

Labels -> frozen MiniLM embeddings + length features -> a small sklearn head, chosen by cross-validation
-> calibrated on out-of-fold rows of the natural distribution -> measured on held-out rows -> saved as
plain arrays with a card (see alpagasus.predictors for the file format and the 0-5 score mapping).
"""
from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from alpagasus.data import DataError, atomic_writer, read_table, to_example
from alpagasus.predictors import (CHEAP_FEATURES, ENCODER_NAME, ENCODER_PIP, FORMAT, MAX_TOKENS, Encoder,
                                  Predictor, featurize)
from alpagasus.records import RATING_PREFIX, Example, InvalidRow, rating_field

TRUE = {"true", "yes", "y", "t", "keep", "1"}
FALSE = {"false", "no", "n", "f", "drop", "0"}
# Heads tried by --head auto. Measured on the Alpaca labels (docs/predictors.md): the logistic head is as
# good as an MLP there and ten times cheaper to fit, so small C values cover most of what matters.
HEADS: dict[str, dict[str, Any]] = {
    **{f"logistic-{c}": {"kind": "logistic", "C": c} for c in (0.001, 0.003, 0.01, 0.03, 0.1, 1.0)},
    "mlp": {"kind": "mlp", "hidden": 64, "alpha": 1.0},
}
AUTO_HEADS = ("logistic-0.001", "logistic-0.003", "logistic-0.01")


class DistillError(DataError):
    """Bad labels or options; the message names the file, the row and the column."""


@dataclass
class LabelSet:
    """Labelled examples, as read from a `rate` output or any table with a label column."""
    source: str
    label: str
    threshold: float
    examples: list[Example]
    keep: Any                    # 0/1: the strong judge keeps the row
    value: Any | None            # numeric labels (e.g. 0-5 scores), None for boolean labels
    weight: Any
    uniform: Any                 # True where the row was drawn uniformly (held out / calibrated on)
    skipped: dict[str, int] = field(default_factory=dict)
    invalid: list[str] = field(default_factory=list)  # why rows were skipped as invalid (the first few)
    uniform_column: str | None = None
    weight_column: str | None = None


def _parse_label(v: Any) -> float | bool | None:
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if math.isnan(float(v)):
            return None
        return float(v)
    if isinstance(v, str):
        s = v.strip().lower()
        if s in TRUE - {"1"} or s in FALSE - {"0"}:
            return s in TRUE
        return float(s)  # ValueError -> reported with the row by the caller
    raise ValueError(type(v).__name__)


def load_labels(path: str | Path, label: str | None = None, threshold: float = 4.5,
                weight_column: str | None = None, uniform_column: str | None = None,
                field_map: Mapping[str, str] | None = None) -> LabelSet:
    """Read labels. Without `label`, the file must be `alpagasus rate` output: `score` is the label and
    rows whose `status` is not "ok" are skipped. Numeric labels become keep = value >= threshold."""
    import numpy as np

    src = str(path)
    examples, values, weights, uniform = [], [], [], []
    skipped: dict[str, int] = {}
    invalid: list[str] = []
    columns: set[str] = set()
    for row, rec in enumerate(read_table(path), 1):
        if row == 1:
            columns = set(rec)
            if label is None:  # `rate` output: its score, namespaced where the user's rows had their own
                label = RATING_PREFIX + "score" if RATING_PREFIX + "status" in rec else "score"
                if label not in rec:
                    raise DistillError(f"{src}: no --label given and no 'score' column (an `alpagasus rate` "
                                       f"output has one); columns: {', '.join(sorted(columns))}")
            for what, col in (("label", label), ("weight", weight_column), ("uniform", uniform_column)):
                if col is not None and col not in rec:
                    raise DistillError(f"{src}: no {what} column {col!r}; columns: {', '.join(sorted(columns))}")
        status = rating_field(rec, "status")
        if status is not None and status != "ok":
            skipped[f"status {status}"] = skipped.get(f"status {status}", 0) + 1
            continue
        ex = to_example(rec, row, src, field_map)
        if isinstance(ex, InvalidRow):  # e.g. an empty output (`rate` marks it `empty`)
            skipped["invalid row"] = skipped.get("invalid row", 0) + 1
            invalid.append(str(ex))
            continue
        try:
            v = _parse_label(rec.get(label))
        except ValueError:
            raise DistillError(f"{src}, row {row}, column {label!r}: expected a number or true/false, "
                               f"got {rec.get(label)!r}") from None
        if v is None:
            skipped["no label"] = skipped.get("no label", 0) + 1
            continue
        examples.append(ex)
        values.append(v)
        weights.append(_row_weight(rec, weight_column, src, row))
        uniform.append(_row_uniform(rec, uniform_column, src, row))
    if label is None:
        raise DistillError(f"{src}: no rows")
    vals = np.asarray([float(v) for v in values], dtype=np.float64)
    boolean = all(isinstance(v, bool) for v in values) or set(np.unique(vals)) <= {0.0, 1.0}
    keep = (vals > 0.5) if boolean else (vals >= threshold)
    ls = LabelSet(src, label, threshold, examples, keep.astype(np.int64), None if boolean else vals,
                  np.asarray(weights, dtype=np.float64), np.asarray(uniform, dtype=bool), skipped,
                  invalid[:5], uniform_column, weight_column)
    check_labels(ls)
    return ls


def _row_weight(rec: Mapping[str, Any], column: str | None, src: str, row: int) -> float:
    """The row's sample weight (1 without a weight column); not a number >= 0 is an error naming the cell."""
    if column is None:
        return 1.0
    try:
        w = float(rec.get(column))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        w = -1.0
    if not w >= 0 or math.isinf(w):
        raise DistillError(f"{src}, row {row}, column {column!r}: a weight must be a number >= 0, "
                           f"got {rec.get(column)!r}")
    return w


def _row_uniform(rec: Mapping[str, Any], column: str | None, src: str, row: int) -> bool:
    """Whether the row was drawn uniformly (every row, without a uniform column)."""
    if column is None:
        return True
    try:
        return bool(_parse_label(rec.get(column)))
    except ValueError:
        raise DistillError(f"{src}, row {row}, column {column!r}: expected true/false, "
                           f"got {rec.get(column)!r}") from None


def check_labels(ls: LabelSet, min_per_class: int = 10) -> None:
    pos, neg = int(ls.keep.sum()), int(len(ls.keep) - ls.keep.sum())
    rule = f"{ls.label} >= {ls.threshold}" if ls.value is not None else f"{ls.label} true"
    if min(pos, neg) < min_per_class:
        raise DistillError(f"{ls.source}: column {ls.label!r} gives {pos} kept and {neg} dropped rows ({rule}); "
                           f"training needs at least {min_per_class} of each")
    if not ls.uniform.any():
        raise DistillError(f"{ls.source}: no row is marked as uniformly drawn; nothing to hold out or calibrate on")


def cached_features(examples: Sequence[Example], cache: str | Path | None,
                    encoder: Encoder | None = None, log: Callable[[str], None] = lambda s: None) -> Any:
    """Features of `examples`, reusing rows already in `cache` (an .npz keyed by example id, written back
    with any new rows): training several predictors from one labels file encodes its rows once."""
    import numpy as np
    sig = f"{ENCODER_NAME}|{MAX_TOKENS}|prompt,output|{','.join(CHEAP_FEATURES)}"  # what the rows hold
    known: dict[str, Any] = {}
    if cache is not None and Path(cache).exists():
        try:
            with np.load(cache, allow_pickle=False) as z:
                same = "sig" in z.files and str(z["sig"]) == sig
                known = dict(zip(z["ids"].tolist(), z["x"])) if same else {}
        except (ValueError, OSError, KeyError) as e:  # not an .npz, or not one of ours
            raise DistillError(f"{cache}: not a feature cache ({e}); delete it or give another --cache") from None
        if not same:
            log(f"{cache}: made with other feature settings; encoding again")
    todo = list({e.id: e for e in examples if e.id not in known}.values())
    if todo:
        log(f"encoding {len(todo)} rows with {ENCODER_NAME} ({len(examples) - len(todo)} from the cache)")
        known.update(zip([e.id for e in todo], featurize(todo, encoder)))
        if cache is not None:
            with atomic_writer(cache, "wb") as f:
                np.savez(f, ids=np.array(list(known)), x=np.stack(list(known.values())), sig=np.array(sig))
    return np.stack([known[e.id] for e in examples])


# ---- heads ------------------------------------------------------------------------------------------
def fit_head(spec: Mapping[str, Any], x: Any, y: Any, w: Any, seed: int = 0) -> dict[str, Any]:
    """Standardise, fit, and return the head as plain arrays (see Predictor.raw)."""
    import numpy as np

    mean = np.average(x, axis=0, weights=w)
    scale = np.sqrt(np.average((x - mean) ** 2, axis=0, weights=w))
    scale[scale < 1e-8] = 1.0
    z = (x - mean) / scale
    w_norm = w * (len(w) / w.sum())  # keeps C's meaning independent of the weights' scale
    arrays: dict[str, Any] = {"mean": mean, "scale": scale}
    if spec["kind"] == "logistic":
        from sklearn.linear_model import LogisticRegression

        m = LogisticRegression(C=spec["C"], max_iter=3000).fit(z, y, sample_weight=w_norm)
        arrays.update(n_layers=np.array([1]), W0=m.coef_.T.astype(np.float64), b0=m.intercept_.astype(np.float64))
    elif spec["kind"] == "mlp":
        from sklearn.neural_network import MLPClassifier

        m = MLPClassifier(hidden_layer_sizes=(spec["hidden"],), alpha=spec["alpha"], max_iter=300,
                          random_state=seed).fit(z, y, sample_weight=w_norm)
        arrays["n_layers"] = np.array([len(m.coefs_)])
        for i, (W, b) in enumerate(zip(m.coefs_, m.intercepts_)):
            arrays[f"W{i}"], arrays[f"b{i}"] = W.astype(np.float64), b.astype(np.float64)
    else:
        raise DistillError(f"unknown head kind {spec['kind']!r}")
    return arrays


def out_of_fold(spec: Mapping[str, Any], x: Any, y: Any, w: Any, strata: Any, folds: int, seed: int) -> Any:
    """Raw scores of each row from a head that did not see it (for head choice and calibration)."""
    import numpy as np
    from sklearn.model_selection import StratifiedKFold

    raw = np.zeros(len(y))
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, strata):
        raw[te] = Predictor(fit_head(spec, x[tr], y[tr], w[tr], seed)).raw(x[te])
    return raw


# ---- metrics ----------------------------------------------------------------------------------------
def metrics(keep: Any, raw: Any, p: Any = None, value: Any = None, score: Any = None,
            threshold: float | None = None) -> dict[str, float]:
    """Ranking and calibration figures on rows of the natural distribution."""
    import numpy as np
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    keep = np.asarray(keep)
    k = max(1, int(keep.sum()))
    top = np.argsort(-np.asarray(raw), kind="stable")[:k]
    out = {"rows": int(len(keep)), "positive_rate": float(keep.mean()), "roc_auc": float(roc_auc_score(keep, raw)),
           "precision_at_kept_fraction": float(keep[top].mean())}
    if value is not None:
        out["spearman"] = float(spearmanr(value, raw).statistic)
    if p is not None:
        out["brier"] = float(np.mean((p - keep) ** 2))
        bins = np.minimum((p * 10).astype(int), 9)
        out["ece"] = float(sum(abs(p[bins == b].mean() - keep[bins == b].mean()) * (bins == b).mean()
                               for b in range(10) if (bins == b).any()))
    if score is not None and threshold is not None:
        sel = np.asarray(score) >= threshold
        out["kept_fraction_at_threshold"] = float(sel.mean())
        out["precision_at_threshold"] = float(keep[sel].mean()) if sel.any() else float("nan")
        out["recall_at_threshold"] = float(keep[sel].sum() / max(1, keep.sum()))
    return {k2: round(v, 4) for k2, v in out.items()}


def calibrate(raw: Any, keep: Any, w: Any, threshold: float) -> dict[str, Any]:
    """Isotonic P(keep | raw) and the 0-5 score map (Platt slope, cut at the strong judge's keep rate)."""
    import numpy as np
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw, keep, sample_weight=w)
    slope = float(LogisticRegression(C=1e6).fit(raw.reshape(-1, 1), keep, sample_weight=w).coef_[0, 0])
    rate = float(np.average(keep, weights=w))
    order = np.argsort(raw)
    cum = np.cumsum(w[order]) / w.sum()
    cut = float(raw[order][min(len(raw) - 1, int(np.searchsorted(cum, 1.0 - rate)))])
    t = min(max(threshold, 0.05), 4.95)  # the anchor logit(t/5) must be finite
    return {"iso_x": np.asarray(iso.X_thresholds_, dtype=np.float64),
            "iso_y": np.asarray(iso.y_thresholds_, dtype=np.float64),
            "score_map": np.array([max(slope, 1e-3), cut, t], dtype=np.float64)}


# ---- training ---------------------------------------------------------------------------------------
def split_holdout(ls: LabelSet, holdout: float, seed: int) -> Any:
    """Boolean mask of held-out rows, drawn only from uniform rows. It depends on the rows, the fraction and
    the seed, not on the label, so predictors trained on different columns of one file share their held-out
    rows and can be compared side by side."""
    import numpy as np

    idx = np.where(ls.uniform)[0]
    mask = np.zeros(len(ls.keep), dtype=bool)
    mask[np.random.default_rng(seed).permutation(idx)[: int(round(holdout * len(idx)))]] = True
    return mask


def fit_predictor(ls: LabelSet, holdout: float = 0.2, seed: int = 0, head: str = "auto", folds: int = 5,
          features: Any = None, encoder: Encoder | None = None, name: str | None = None,
          log: Callable[[str], None] = lambda s: None) -> Predictor:
    """Fit, calibrate and measure a predictor; `features` (rows x 774) skips the encoder when given."""
    import numpy as np

    if not 0.0 <= holdout < 1.0:
        raise DistillError(f"--holdout must be in [0, 1), got {holdout}")
    if features is None:
        features = cached_features(ls.examples, None, encoder, log)
    x = np.asarray(features, dtype=np.float64)
    test = split_holdout(ls, holdout, seed) if holdout > 0 else np.zeros(len(ls.keep), dtype=bool)
    tr = ~test
    x_tr, y_tr, w_tr, u_tr = x[tr], ls.keep[tr], ls.weight[tr], ls.uniform[tr]
    checks = [("training", y_tr[u_tr], folds)] + ([("held-out", ls.keep[test], 1)] if test.any() else [])
    for what, keep, need in checks:
        if min(keep.sum(), len(keep) - keep.sum()) < need:
            raise DistillError(f"{ls.source}: the {what} uniform rows have {int(keep.sum())} kept and "
                               f"{int(len(keep) - keep.sum())} dropped; more rows or another --holdout are needed")
    strata = y_tr * 2 + u_tr  # every fold gets its share of uniform rows of each class
    candidates = list(AUTO_HEADS) if head == "auto" else [head]
    unknown = [c for c in candidates if c not in HEADS]
    if unknown:
        raise DistillError(f"unknown head {unknown[0]!r}; choose auto or one of {', '.join(HEADS)}")
    cv: dict[str, float] = {}
    oof: dict[str, Any] = {}
    for c in candidates:
        oof[c] = out_of_fold(HEADS[c], x_tr, y_tr, w_tr, strata, folds, seed)
        cv[c] = metrics(y_tr[u_tr], oof[c][u_tr])["roc_auc"]
        log(f"head {c}: cross-validated ROC-AUC {cv[c]:.4f} on {int(u_tr.sum())} uniform training rows")
    best = max(candidates, key=lambda c: cv[c])
    calib = calibrate(oof[best][u_tr], y_tr[u_tr], w_tr[u_tr], ls.threshold if ls.value is not None else 4.5)
    arrays = {**fit_head(HEADS[best], x_tr, y_tr, w_tr, seed), **calib}
    pred = Predictor(arrays, {})
    report: dict[str, Any] = {"cross_validation": {"roc_auc_by_head": cv, "chosen_head": best}}
    if test.any():
        raw = pred.raw(x[test])
        value = ls.value[test] if ls.value is not None else None
        report["holdout"] = metrics(ls.keep[test], raw, pred.p_keep(raw), value, pred.score(raw),
                                    float(arrays["score_map"][2]))
        report["holdout_length_only"] = metrics(ls.keep[test], x[test, -len(CHEAP_FEATURES)],
                                                value=value)
    pred.card = make_card(ls, name, HEADS[best], best, report, holdout, seed, int(tr.sum()), int(test.sum()))
    return pred


def make_card(ls: LabelSet, name: str | None, spec: Mapping[str, Any], head: str, report: dict[str, Any],
              holdout: float, seed: int, n_train: int, n_test: int) -> dict[str, Any]:
    rule = f"{ls.label} >= {ls.threshold}" if ls.value is not None else f"{ls.label} is true"
    return {
        "format": FORMAT, "name": name or Path(ls.source).stem,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "task": f"P(the strong judge keeps the row), keep = {rule}",
        "training_data": {"file": Path(ls.source).name, "label": ls.label, "label_kind":
                          "numeric" if ls.value is not None else "boolean", "threshold": ls.threshold,
                          "rows": len(ls.keep), "train_rows": n_train, "holdout_rows": n_test,
                          "holdout_fraction": holdout, "seed": seed, "skipped": ls.skipped,
                          "invalid": [m.replace(ls.source, Path(ls.source).name) for m in ls.invalid],
                          "uniform_rows": int(ls.uniform.sum()), "uniform_column": ls.uniform_column,
                          "weight_column": ls.weight_column, "weighted": bool((ls.weight != 1).any())},
        "features": {"encoder": ENCODER_NAME, "encoder_package": ENCODER_PIP, "max_tokens": MAX_TOKENS,
                     "texts": ["instruction + input", "output"], "cheap": list(CHEAP_FEATURES)},
        "head": {"name": head, **spec},
        "score": "5 * sigmoid(slope * (raw - cut) + logit(threshold / 5)); score >= threshold keeps about the "
                 "strong judge's keep rate on rows like the uniform ones; p_keep is isotonic-calibrated",
        "metrics": report,
        "licence": "the head is derived from the training labels: check their licence; the encoder "
                   "all-MiniLM-L6-v2 is Apache-2.0 (sentence-transformers)",
    }


def write_readme(pred: Predictor, folder: str | Path, notes: str = "") -> None:
    """A human-readable card beside card.json."""
    c = pred.card
    td, m = c["training_data"], c["metrics"]
    lines = [f"# Predictor `{c['name']}`", "", f"{c['task']}.", "",
             f"- Created: {c['created']}; digest `{pred.digest}`",
             f"- Training data: `{td['file']}`, label `{td['label']}` ({td['label_kind']}), {td['rows']} rows "
             f"({td['train_rows']} train, {td['holdout_rows']} held out, seed {td['seed']}; "
             f"{td['uniform_rows']} uniform rows; weighted: {td['weighted']})",
             f"- Encoder: {c['features']['encoder']} from PyPI `{c['features']['encoder_package']}` (frozen), "
             f"texts: {', '.join(c['features']['texts'])}, plus length features",
             f"- Head: {c['head']['name']} (cross-validated ROC-AUC: "
             + ", ".join(f"{k} {v:.3f}" for k, v in m["cross_validation"]["roc_auc_by_head"].items()) + ")",
             f"- Score: {c['score']}", ""]
    if "holdout" in m:
        lines += ["## Held-out rows (uniform rows only)", "",
                  "| metric | predictor | output length alone (longer ranks higher) |",
                  "| --- | --- | --- |"]
        for k, v in m["holdout"].items():
            lines.append(f"| {k} | {v} | {m['holdout_length_only'].get(k, '')} |")
        lines.append("")
    lines += ["## Licence", "", c["licence"] + ".", ""]
    if notes:
        lines += ["## Notes", "", notes, ""]
    (Path(folder) / "README.md").write_text("\n".join(lines), encoding="utf-8")


def distill(labels: str | Path, out: str | Path, label: str | None = None, threshold: float = 4.5,
            weight_column: str | None = None, uniform_column: str | None = None, holdout: float = 0.2,
            seed: int = 0, head: str = "auto", name: str | None = None,
            field_map: Mapping[str, str] | None = None, features: Any = None, cache: str | Path | None = None,
            notes: str = "",
            log: Callable[[str], None] = lambda s: None) -> Predictor:
    """The `alpagasus distill` command as a library call: read, train, measure, save (head + card)."""
    ls = load_labels(labels, label, threshold, weight_column, uniform_column, field_map)
    log(f"{len(ls.examples)} labelled rows ({int(ls.keep.sum())} kept), {int(ls.uniform.sum())} uniform"
        + (f"; skipped {ls.skipped}" if ls.skipped else ""))
    for why in ls.invalid:
        log(f"skipped: {why}")
    if features is None:
        features = cached_features(ls.examples, cache, None, log)
    pred = fit_predictor(ls, holdout, seed, head, features=features, name=name or Path(out).name, log=log)
    pred.save(out)
    write_readme(pred, out, notes)
    return pred
