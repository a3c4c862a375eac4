"""Heads of a predictor (logistic, MLP, logistic with TF-IDF terms), out-of-fold scores, metrics, calibration."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from alpagasus.distill.labels import DistillError
from alpagasus.predictors import Predictor
from alpagasus.predictors.text import HAND_FEATURES
from alpagasus.records import Example

# Heads tried by --head auto. Measured on the Alpaca labels (docs/predictors.md): on the embeddings alone the
# logistic head is as good as an MLP and ten times cheaper to fit, so small C values cover most of what matters.
# With --features rich, three logistic regressions, each with its own C (embeddings + length, hand features,
# TF-IDF of output and prompt), are summed, each scaled to unit spread: cross-validated, this beat one
# regression over all columns on Claude's label, not on ChatGPT's (docs/predictors.md), so --head auto tries
# both kinds. A sum of linear heads is still one linear head: either ships as one weight vector.
TFIDF = {"max_features": 20000, "min_df": 3}
HEADS: dict[str, dict[str, Any]] = {
    **{f"logistic-{c}": {"kind": "logistic", "C": c} for c in (0.001, 0.003, 0.01, 0.03, 0.1, 1.0)},
    "mlp": {"kind": "mlp", "hidden": 64, "alpha": 1.0},
    **{
        f"tfidf-{c}-{s}": {"kind": "logistic", "C": c, "dense_scale": s, "tfidf": TFIDF}
        for c, s in ((1.0, 0.055), (1.0, 0.1), (0.3, 0.1))
    },
    **{
        f"ensemble-{ce}-{ch}-{ct}": {
            "kind": "ensemble",
            "C_embeddings": ce,
            "C_hand": ch,
            "C_tfidf": ct,
            "tfidf": TFIDF,
        }
        for ce, ch, ct in ((0.001, 0.1, 0.3), (0.003, 0.1, 1.0))
    },
}
AUTO_HEADS = {
    "embeddings": ("logistic-0.001", "logistic-0.003", "logistic-0.01"),
    "rich": ("ensemble-0.001-0.1-0.3", "ensemble-0.003-0.1-1.0", "tfidf-1.0-0.055"),
}


def fit_head(
    spec: Mapping[str, Any], x: Any, y: Any, w: Any, seed: int = 0, examples: Sequence[Example] | None = None
) -> dict[str, Any]:
    """Standardise, fit, and return the head as plain arrays (see Predictor.raw). A spec with "tfidf" also
    fits TF-IDF vocabularies of the examples' outputs and prompts and learns their terms jointly."""
    import numpy as np

    mean = np.average(x, axis=0, weights=w)
    scale = np.sqrt(np.average((x - mean) ** 2, axis=0, weights=w))
    scale[scale < 1e-8] = 1.0
    z = (x - mean) / scale
    w_norm = w * (len(w) / w.sum())  # keeps C's meaning independent of the weights' scale
    arrays: dict[str, Any] = {"mean": mean, "scale": scale}
    if spec["kind"] == "ensemble":
        if examples is None:
            raise DistillError("a TF-IDF head needs the examples' texts")
        arrays.update(_fit_ensemble(spec, z, y, w_norm, examples))
    elif spec["kind"] == "logistic" and spec.get("tfidf"):
        if examples is None:
            raise DistillError("a TF-IDF head needs the examples' texts")
        arrays.update(_fit_tfidf_logistic(spec, z, y, w_norm, examples))
    elif spec["kind"] == "logistic":
        from sklearn.linear_model import LogisticRegression

        m = LogisticRegression(C=spec["C"], max_iter=3000).fit(z, y, sample_weight=w_norm)
        arrays.update(n_layers=np.array([1]), W0=m.coef_.T.astype(np.float64), b0=m.intercept_.astype(np.float64))
    elif spec["kind"] == "mlp":
        from sklearn.neural_network import MLPClassifier

        m = MLPClassifier(
            hidden_layer_sizes=(spec["hidden"],), alpha=spec["alpha"], max_iter=300, random_state=seed
        ).fit(z, y, sample_weight=w_norm)
        arrays["n_layers"] = np.array([len(m.coefs_)])
        for i, (W, b) in enumerate(zip(m.coefs_, m.intercepts_)):
            arrays[f"W{i}"], arrays[f"b{i}"] = W.astype(np.float64), b.astype(np.float64)
    else:
        raise DistillError(f"unknown head kind {spec['kind']!r}")
    return arrays


def _tfidf_matrix(spec: Mapping[str, Any], examples: Sequence[Example]) -> tuple[Any, dict[str, Any]]:
    """TF-IDF columns of the outputs and prompts (vocabularies fitted here) and the fitted vectorizers."""
    import numpy as np
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer

    from alpagasus.predictors import prompt_text
    from alpagasus.predictors.text import ngrams

    texts = {"output": [e.response for e in examples], "prompt": [prompt_text(e) for e in examples]}
    vecs = {
        k: TfidfVectorizer(
            analyzer=ngrams,
            min_df=spec["tfidf"]["min_df"],
            sublinear_tf=True,
            max_features=spec["tfidf"]["max_features"],
            dtype=np.float64,
        ).fit(t)
        for k, t in texts.items()
    }
    return hstack([vecs[k].transform(t) for k, t in texts.items()]).tocsr(), vecs


def _tfidf_arrays(vecs: dict[str, Any], coef: Any) -> dict[str, Any]:
    from alpagasus.predictors.text import Tfidf

    arrays: dict[str, Any] = {}
    n = 0
    for k, v in vecs.items():
        vocab = v.get_feature_names_out()
        arrays.update(Tfidf(list(vocab), v.idf_, coef[n : n + len(vocab)]).arrays(f"tfidf_{k}"))
        n += len(vocab)
    return arrays


def _fit_ensemble(spec: Mapping[str, Any], z: Any, y: Any, w: Any, examples: Sequence[Example]) -> dict:
    """Three logistic heads: the 774 embedding + length columns, the hand columns (the rest of z) and the
    TF-IDF terms, each with its C; their logits are divided by their spread on the training rows and summed."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    n_emb = z.shape[1] - len(HAND_FEATURES)
    tf, vecs = _tfidf_matrix(spec, examples)
    parts = []
    for x, c in ((z[:, :n_emb], spec["C_embeddings"]), (z[:, n_emb:], spec["C_hand"]), (tf, spec["C_tfidf"])):
        m = LogisticRegression(C=c, max_iter=5000).fit(x, y, sample_weight=w)
        sd = float(np.std(m.decision_function(x))) or 1.0
        parts.append((m.coef_[0].astype(np.float64) / sd, float(m.intercept_[0]) / sd))
    return {
        "n_layers": np.array([1]),
        "W0": np.concatenate([parts[0][0], parts[1][0]]).reshape(-1, 1),
        "b0": np.array([sum(b for _, b in parts)]),
        **_tfidf_arrays(vecs, parts[2][0]),
    }


def _fit_tfidf_logistic(spec: Mapping[str, Any], z: Any, y: Any, w: Any, examples: Sequence[Example]) -> dict:
    """One logistic regression over [dense z * dense_scale | TF-IDF(output) | TF-IDF(prompt)]. The dense block
    is shrunk so that one C suits both parts (the dense columns alone want a C about 300x smaller)."""
    import numpy as np
    from scipy.sparse import csr_matrix, hstack
    from sklearn.linear_model import LogisticRegression

    tf, vecs = _tfidf_matrix(spec, examples)
    s = float(spec["dense_scale"])
    m = LogisticRegression(C=spec["C"], max_iter=5000).fit(hstack([csr_matrix(z * s), tf]).tocsr(), y, sample_weight=w)
    coef, n = m.coef_[0].astype(np.float64), z.shape[1]
    return {
        "n_layers": np.array([1]),
        "W0": (coef[:n] * s).reshape(-1, 1),
        "b0": m.intercept_.astype(np.float64),
        **_tfidf_arrays(vecs, coef[n:]),
    }


def out_of_fold(
    spec: Mapping[str, Any],
    x: Any,
    y: Any,
    w: Any,
    strata: Any,
    folds: int,
    seed: int,
    examples: Sequence[Example] | None = None,
) -> Any:
    """Raw scores of each row from a head that did not see it (for head choice and calibration)."""
    import numpy as np
    from sklearn.model_selection import StratifiedKFold

    raw = np.zeros(len(y))
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, strata):
        sub = (lambda idx: [examples[i] for i in idx]) if examples is not None else (lambda idx: None)
        head = Predictor(fit_head(spec, x[tr], y[tr], w[tr], seed, sub(tr)))
        raw[te] = head.raw(x[te], sub(te))
    return raw


# ---- metrics ----------------------------------------------------------------------------------------
def metrics(
    keep: Any, raw: Any, p: Any = None, value: Any = None, score: Any = None, threshold: float | None = None
) -> dict[str, float]:
    """Ranking and calibration figures on rows of the natural distribution."""
    import numpy as np
    from scipy.stats import spearmanr
    from sklearn.metrics import average_precision_score, roc_auc_score

    keep = np.asarray(keep)
    k = max(1, int(keep.sum()))
    top = np.argsort(-np.asarray(raw), kind="stable")[:k]
    out = {
        "rows": int(len(keep)),
        "positive_rate": float(keep.mean()),
        "roc_auc": float(roc_auc_score(keep, raw)),
        "average_precision": float(average_precision_score(keep, raw)),
        "precision_at_kept_fraction": float(keep[top].mean()),
    }
    if value is not None:
        out["spearman"] = float(spearmanr(value, raw).statistic)
    if p is not None:
        out["brier"] = float(np.mean((p - keep) ** 2))
        bins = np.minimum((p * 10).astype(int), 9)
        out["ece"] = float(
            sum(
                abs(p[bins == b].mean() - keep[bins == b].mean()) * (bins == b).mean()
                for b in range(10)
                if (bins == b).any()
            )
        )
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
    return {
        "iso_x": np.asarray(iso.X_thresholds_, dtype=np.float64),
        "iso_y": np.asarray(iso.y_thresholds_, dtype=np.float64),
        "score_map": np.array([max(slope, 1e-3), cut, t], dtype=np.float64),
    }
