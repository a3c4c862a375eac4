"""Training: encode (with a cache), fit the head, calibrate on out-of-fold uniform rows, measure, save."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from alpagasus.data import atomic_writer
from alpagasus.distill.heads import AUTO_HEADS, HEADS, calibrate, fit_head, metrics, out_of_fold
from alpagasus.distill.labels import DistillError, LabelSet, load_labels
from alpagasus.predictors import (
    CHEAP_FEATURES,
    ENCODER_NAME,
    ENCODER_PIP,
    FORMAT,
    MAX_TOKENS,
    Encoder,
    Predictor,
    featurize,
    with_hand,
)
from alpagasus.predictors.text import HAND_FEATURES
from alpagasus.records import Example


def cached_features(
    examples: Sequence[Example],
    cache: str | Path | None,
    encoder: Encoder | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> Any:
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


def split_holdout(ls: LabelSet, holdout: float, seed: int) -> Any:
    """Boolean mask of held-out rows, drawn only from uniform rows. It depends on the rows, the fraction and
    the seed, not on the label, so predictors trained on different columns of one file share their held-out
    rows and can be compared side by side."""
    import numpy as np

    idx = np.where(ls.uniform)[0]
    mask = np.zeros(len(ls.keep), dtype=bool)
    mask[np.random.default_rng(seed).permutation(idx)[: int(round(holdout * len(idx)))]] = True
    return mask


def fit_predictor(
    ls: LabelSet,
    holdout: float = 0.2,
    seed: int = 0,
    head: str = "auto",
    folds: int = 5,
    features: Any = None,
    encoder: Encoder | None = None,
    name: str | None = None,
    log: Callable[[str], None] = lambda s: None,
    feature_set: str = "embeddings",
) -> Predictor:
    """Fit, calibrate and measure a predictor; `features` (rows x 774 embedding columns) skips the encoder.
    feature_set "rich" adds hand features and TF-IDF terms (the shipped predictors); "embeddings" is the
    774 columns alone (a head that scores from `featurize(examples)` without the texts)."""
    import numpy as np

    if not 0.0 <= holdout < 1.0:
        raise DistillError(f"--holdout must be in [0, 1), got {holdout}")
    if feature_set not in AUTO_HEADS:
        raise DistillError(f"unknown --features {feature_set!r}; choose one of {', '.join(AUTO_HEADS)}")
    if features is None:
        features = cached_features(ls.examples, None, encoder, log)
    x = np.asarray(with_hand(np.asarray(features), ls.examples, feature_set), dtype=np.float64)
    texts = ls.examples if feature_set == "rich" else None
    sub = (lambda m: [ls.examples[i] for i in np.where(m)[0]]) if texts else (lambda m: None)
    test = split_holdout(ls, holdout, seed) if holdout > 0 else np.zeros(len(ls.keep), dtype=bool)
    tr = ~test
    x_tr, y_tr, w_tr, u_tr = x[tr], ls.keep[tr], ls.weight[tr], ls.uniform[tr]
    checks = [("training", y_tr[u_tr], folds)] + ([("held-out", ls.keep[test], 1)] if test.any() else [])
    for what, keep, need in checks:
        if min(keep.sum(), len(keep) - keep.sum()) < need:
            raise DistillError(
                f"{ls.source}: the {what} uniform rows have {int(keep.sum())} kept and "
                f"{int(len(keep) - keep.sum())} dropped; more rows or another --holdout are needed"
            )
    strata = y_tr * 2 + u_tr  # every fold gets its share of uniform rows of each class
    candidates = list(AUTO_HEADS[feature_set]) if head == "auto" else [head]
    unknown = [c for c in candidates if c not in HEADS]
    if unknown:
        raise DistillError(f"unknown head {unknown[0]!r}; choose auto or one of {', '.join(HEADS)}")
    if any(bool(HEADS[c].get("tfidf")) != (feature_set == "rich") for c in candidates):
        raise DistillError(
            f"--features {feature_set} takes the heads "
            f"{', '.join(c for c in HEADS if bool(HEADS[c].get('tfidf')) == (feature_set == 'rich'))}"
        )
    cv: dict[str, float] = {}
    oof: dict[str, Any] = {}
    for c in candidates:
        oof[c] = out_of_fold(HEADS[c], x_tr, y_tr, w_tr, strata, folds, seed, sub(tr))
        cv[c] = metrics(y_tr[u_tr], oof[c][u_tr])["roc_auc"]
        log(f"head {c}: cross-validated ROC-AUC {cv[c]:.4f} on {int(u_tr.sum())} uniform training rows")
    best = max(candidates, key=lambda c: cv[c])
    calib = calibrate(oof[best][u_tr], y_tr[u_tr], w_tr[u_tr], ls.threshold if ls.value is not None else 4.5)
    arrays = {**fit_head(HEADS[best], x_tr, y_tr, w_tr, seed, sub(tr)), **calib}
    pred = Predictor(arrays, {})
    report: dict[str, Any] = {"cross_validation": {"roc_auc_by_head": cv, "chosen_head": best}}
    if test.any():
        raw = pred.raw(x[test], sub(test))
        value = ls.value[test] if ls.value is not None else None
        report["holdout"] = metrics(
            ls.keep[test], raw, pred.p_keep(raw), value, pred.score(raw), float(arrays["score_map"][2])
        )
        report["holdout_length_only"] = metrics(
            ls.keep[test], np.asarray(features)[test, -len(CHEAP_FEATURES)], value=value
        )
    pred.card = make_card(
        ls, name, HEADS[best], best, report, holdout, seed, int(tr.sum()), int(test.sum()), feature_set
    )
    return pred


def make_card(
    ls: LabelSet,
    name: str | None,
    spec: Mapping[str, Any],
    head: str,
    report: dict[str, Any],
    holdout: float,
    seed: int,
    n_train: int,
    n_test: int,
    feature_set: str = "embeddings",
) -> dict[str, Any]:
    rule = f"{ls.label} >= {ls.threshold}" if ls.value is not None else f"{ls.label} is true"
    return {
        "format": FORMAT,
        "name": name or Path(ls.source).stem,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "task": f"P(the strong judge keeps the row), keep = {rule}",
        "training_data": {
            "file": Path(ls.source).name,
            "label": ls.label,
            "label_kind": "numeric" if ls.value is not None else "boolean",
            "threshold": ls.threshold,
            "rows": len(ls.keep),
            "train_rows": n_train,
            "holdout_rows": n_test,
            "holdout_fraction": holdout,
            "seed": seed,
            "skipped": ls.skipped,
            "invalid": [m.replace(ls.source, Path(ls.source).name) for m in ls.invalid],
            "uniform_rows": int(ls.uniform.sum()),
            "uniform_column": ls.uniform_column,
            "weight_column": ls.weight_column,
            "weighted": bool((ls.weight != 1).any()),
        },
        "features": {
            "set": feature_set,
            "encoder": ENCODER_NAME,
            "encoder_package": ENCODER_PIP,
            "max_tokens": MAX_TOKENS,
            "texts": ["instruction + input", "output"],
            "cheap": list(CHEAP_FEATURES),
            **(
                {
                    "hand": list(HAND_FEATURES),
                    "tfidf": {
                        "texts": ["output", "instruction + input"],
                        "ngrams": "words of 2+ characters and word pairs, lower-cased",
                        "sublinear_tf": True,
                        **dict(spec.get("tfidf", {})),
                    },
                }
                if feature_set == "rich"
                else {}
            ),
        },
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
    lines = [
        f"# Predictor `{c['name']}`",
        "",
        f"{c['task']}.",
        "",
        f"- Created: {c['created']}; digest `{pred.digest}`",
        f"- Training data: `{td['file']}`, label `{td['label']}` ({td['label_kind']}), {td['rows']} rows "
        f"({td['train_rows']} train, {td['holdout_rows']} held out, seed {td['seed']}; "
        f"{td['uniform_rows']} uniform rows; weighted: {td['weighted']})",
        f"- Encoder: {c['features']['encoder']} from PyPI `{c['features']['encoder_package']}` (frozen), "
        f"texts: {', '.join(c['features']['texts'])}, plus length features"
        + (
            " and, feature set `rich`, hand features and TF-IDF terms of prompt and output"
            if c["features"].get("set") == "rich"
            else ""
        ),
        f"- Head: {c['head']['name']} (cross-validated ROC-AUC: "
        + ", ".join(f"{k} {v:.3f}" for k, v in m["cross_validation"]["roc_auc_by_head"].items())
        + ")",
        f"- Score: {c['score']}",
        "",
    ]
    if "holdout" in m:
        lines += [
            "## Held-out rows (uniform rows only)",
            "",
            "| metric | predictor | output length alone (longer ranks higher) |",
            "| --- | --- | --- |",
        ]
        for k, v in m["holdout"].items():
            lines.append(f"| {k} | {v} | {m['holdout_length_only'].get(k, '')} |")
        lines.append("")
    lines += ["## Licence", "", c["licence"] + ".", ""]
    if notes:
        lines += ["## Notes", "", notes, ""]
    (Path(folder) / "README.md").write_text("\n".join(lines), encoding="utf-8")


def distill(
    labels: str | Path,
    out: str | Path,
    label: str | None = None,
    threshold: float = 4.5,
    weight_column: str | None = None,
    uniform_column: str | None = None,
    holdout: float = 0.2,
    seed: int = 0,
    head: str = "auto",
    name: str | None = None,
    field_map: Mapping[str, str] | None = None,
    features: Any = None,
    cache: str | Path | None = None,
    notes: str = "",
    log: Callable[[str], None] = lambda s: None,
    feature_set: str = "embeddings",
) -> Predictor:
    """The `alpagasus distill` command as a library call: read, train, measure, save (head + card)."""
    if feature_set not in AUTO_HEADS:  # before the slow encoding
        raise DistillError(f"unknown --features {feature_set!r}; choose one of {', '.join(AUTO_HEADS)}")
    ls = load_labels(labels, label, threshold, weight_column, uniform_column, field_map)
    log(
        f"{len(ls.examples)} labelled rows ({int(ls.keep.sum())} kept), {int(ls.uniform.sum())} uniform"
        + (f"; skipped {ls.skipped}" if ls.skipped else "")
    )
    for why in ls.invalid:
        log(f"skipped: {why}")
    if features is None:
        features = cached_features(ls.examples, cache, None, log)
    pred = fit_predictor(
        ls, holdout, seed, head, features=features, name=name or Path(out).name, log=log, feature_set=feature_set
    )
    pred.save(out)
    write_readme(pred, out, notes)
    return pred
