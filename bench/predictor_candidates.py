"""Candidate designs for the shipped predictors, side by side on one fixed split of the uniform label rows.

    python bench/predictor_candidates.py [--cache emb.npz] [--only SUBSTRING ...]

Split: of the 5,998 uniform rows (`from_random_sample`) of shared/data/labels/alpaca_llm_labels.jsonl, 1,500
are held out (alpagasus.distill.split_holdout(ls, 0.25, seed 0), the split `distill --holdout 0.25 --seed 0`
uses); nothing is chosen on them. Choices use 5-fold cross-validation over the other rows (training on the
other folds' uniform and added rows, scoring the held-back fold's uniform rows). Per candidate and label it
prints one JSON line: cross-validated and held-out ROC-AUC and average precision.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ALPAGASUS_SHARED_DATA", REPO.parent / "shared" / "data"))
LABELS = ("claude_accuracy_ge_4_5", "chatgpt_helpfulness_ge_4_5")


def linear(x, c, dense_scale=None, tfidf=False, dense=True, texts=None):
    """fit(train_idx, y, test_idx) -> decision values: logistic regression on standardised dense columns,
    optionally with TF-IDF columns of output and prompt (the dense block scaled by dense_scale)."""
    import numpy as np
    from scipy.sparse import csr_matrix, hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from alpagasus.predictors.text import ngrams

    def fit(a, y, b):
        mats_a, mats_b = [], []
        if dense:
            sc = StandardScaler().fit(x[a])
            za, zb = sc.transform(x[a]), sc.transform(x[b])
            if not tfidf:
                return LogisticRegression(C=c, max_iter=3000).fit(za, y).decision_function(zb)
            mats_a.append(csr_matrix(za * dense_scale))
            mats_b.append(csr_matrix(zb * dense_scale))
        for t in texts:
            v = TfidfVectorizer(analyzer=ngrams, min_df=3, sublinear_tf=True, max_features=20000,
                                dtype=np.float64).fit([t[i] for i in a])
            mats_a.append(v.transform([t[i] for i in a]))
            mats_b.append(v.transform([t[i] for i in b]))
        m = LogisticRegression(C=c, max_iter=5000).fit(hstack(mats_a).tocsr(), y)
        return m.decision_function(hstack(mats_b).tocsr())
    return fit


def ensemble(e, h, texts, c_emb, c_hand, c_tfidf):
    """The shipped design (`distill --features rich`, heads ensemble-C-C-C): three logistic heads (embeddings +
    length, hand features, TF-IDF of output and prompt), each logit divided by its spread, summed."""
    import numpy as np
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from alpagasus.predictors.text import ngrams

    def fit(a, y, b):
        outs = []
        for x, c in ((e, c_emb), (h, c_hand)):
            sc = StandardScaler().fit(x[a])
            m = LogisticRegression(C=c, max_iter=3000).fit(sc.transform(x[a]), y)
            outs.append((m.decision_function(sc.transform(x[a])), m.decision_function(sc.transform(x[b]))))
        vecs = [TfidfVectorizer(analyzer=ngrams, min_df=3, sublinear_tf=True, max_features=20000,
                                dtype=np.float64).fit([t[i] for i in a]) for t in texts]
        ta = hstack([v.transform([t[i] for i in a]) for v, t in zip(vecs, texts)]).tocsr()
        tb = hstack([v.transform([t[i] for i in b]) for v, t in zip(vecs, texts)]).tocsr()
        m = LogisticRegression(C=c_tfidf, max_iter=5000).fit(ta, y)
        outs.append((m.decision_function(ta), m.decision_function(tb)))
        return sum(db / da.std() for da, db in outs)
    return fit


def evaluate(fit, ls, test, folds=5, seed=0):
    import numpy as np
    from sklearn.metrics import average_precision_score, roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    y, u = ls.keep, ls.uniform
    tr = np.where(~test)[0]
    oof = np.zeros(len(y))
    for a, b in StratifiedKFold(folds, shuffle=True, random_state=seed).split(tr, y[tr] * 2 + u[tr]):
        oof[tr[b]] = fit(tr[a], y[tr[a]], tr[b])
    m = u & ~test
    held = fit(tr, y[tr], np.where(test)[0])
    return {"cv_auc": roc_auc_score(y[m], oof[m]), "cv_ap": average_precision_score(y[m], oof[m]),
            "held_auc": roc_auc_score(y[test], held), "held_ap": average_precision_score(y[test], held)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default=None, help="embedding cache (.npz, as `distill --cache`)")
    ap.add_argument("--only", nargs="*", default=[], help="run the candidates whose name holds one of these")
    args = ap.parse_args()
    import numpy as np

    from alpagasus.distill import cached_features, load_labels, split_holdout
    from alpagasus.predictors import prompt_text
    from alpagasus.predictors.text import hand_features

    path = SHARED / "labels" / "alpaca_llm_labels.jsonl"
    sets = {lab: load_labels(path, label=lab, uniform_column="from_random_sample") for lab in LABELS}
    ex = sets[LABELS[0]].examples
    e = cached_features(ex, args.cache, log=print).astype(np.float64)
    h = hand_features(ex).astype(np.float64)
    p, o = e[:, :384], e[:, 384:768]
    texts = ([x.output for x in ex], [prompt_text(x) for x in ex])
    eh = np.hstack([e, h])
    candidates = {
        "embeddings + length (shipped before), logistic C=0.003": lambda: linear(e, 0.003),
        "hand features alone, logistic C=0.1": lambda: linear(h, 0.1),
        "embeddings + hand, logistic C=0.003": lambda: linear(eh, 0.003),
        "embeddings + hand + cosine + product + |difference|, C=0.001":
            lambda: linear(np.hstack([eh, (p * o).sum(1, keepdims=True), p * o, np.abs(p - o)]), 0.001),
        "TF-IDF alone, C=1": lambda: linear(None, 1.0, tfidf=True, dense=False, texts=texts),
        "embeddings + hand + TF-IDF in one regression, C=1, dense scale 0.055":
            lambda: linear(eh, 1.0, 0.055, tfidf=True, texts=texts),
        "embeddings + hand + TF-IDF, C=1, dense scale 0.1": lambda: linear(eh, 1.0, 0.1, tfidf=True, texts=texts),
        "ensemble: embeddings C=0.001 + hand C=0.1 + TF-IDF C=0.3 (shipped: Claude)":
            lambda: ensemble(e, h, texts, 0.001, 0.1, 0.3),
        "ensemble: embeddings C=0.003 + hand C=0.1 + TF-IDF C=1 (shipped: ChatGPT)":
            lambda: ensemble(e, h, texts, 0.003, 0.1, 1.0),
    }
    for name, make in candidates.items():
        if args.only and not any(s in name for s in args.only):
            continue
        for lab, ls in sets.items():
            t0 = time.perf_counter()
            r = evaluate(make(), ls, split_holdout(ls, 0.25, 0))
            print(json.dumps({"candidate": name, "label": lab, **{k: round(v, 4) for k, v in r.items()},
                              "seconds": round(time.perf_counter() - t0)}), flush=True)


if __name__ == "__main__":
    main()
