"""`rate --cascade`: the strong judge only where it matters.

1. The strong judge rates a seeded random sample of the rows (`sample_size`), through the engine and the store.
2. A predictor is distilled from those ratings (`alpagasus.distill.fit_predictor`). Its band is set on scores
   of the sample rows from models that did not see them (K-fold cross-fitting: every sample row is held back
   once), then the final predictor is fitted on the whole sample and saved next to the store, in a folder named
   by the content of the sample's ratings (`<store>.cascade/<key>/`), so a rerun reuses it.
3. The predictor rates every other row (through the engine: its ratings are stored too, under its own id).
   Rows whose predicted score lies in the band [lo, hi) go to the strong judge; below lo the predictor drops
   the row, at or above hi it keeps it. `choose_band` picks the narrowest band whose estimated recall and
   precision of the final kept set (against the strong judge alone) meet the targets.
4. The ratings file says who decided each row (`judge`): the strong judge's id or the predictor's.

Every strong-judge call goes through `ask_strong` (the sample, then the band; `--batch` there). See docs/cost.md.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol

from alpagasus.data import DataError, ReadResult, atomic_writer, write_jsonl
from alpagasus.engine.loop import ProgressFactory, chunked
from alpagasus.engine.session import Session
from alpagasus.engine.types import RunCounts, RunOptions
from alpagasus.errors import UserError
from alpagasus.prompts.template import Template
from alpagasus.rate.injection import flags
from alpagasus.rate.loop import RateSummary, rate
from alpagasus.records import Example, InvalidRow, Rating, rating_field, with_rating
from alpagasus.store import FINAL, Store

MIN_SAMPLE, MAX_SAMPLE, SAMPLE_FRACTION, FORMAT = 400, 5000, 0.10, 1  # FORMAT: of cascade.json


@dataclass
class CascadeOptions:
    sample: int | None = None   # rows the strong judge rates first (default: sample_size)
    recall: float = 0.95        # targets for the final kept set, against the strong judge alone
    precision: float = 0.95
    threshold: float = 4.5      # keep = score >= threshold (the paper's rule)
    seed: int = 0               # of the sample and of the folds
    folds: int = 5              # cross-fitting folds for the band
    bootstrap: int = 1000       # resamples for the intervals
    feature_set: str = "embeddings"  # the predictor's features (distill's: "embeddings" or "rich")

    def check(self) -> None:
        for name in ("recall", "precision"):
            v = getattr(self, name)
            if not 0.0 < v <= 1.0:
                raise UserError(f"--cascade-{name} must be in (0, 1], not {v}")
        if self.sample is not None and self.sample < 1:
            raise UserError(f"--cascade-sample must be 1 or more, not {self.sample}")


def sample_size(n: int, given: int | None = None) -> int:
    """max(400, 10% of the rows), at most 5000, at most n; or the size given."""
    if given is not None:
        return min(n, given)
    return min(n, max(MIN_SAMPLE, min(MAX_SAMPLE, round(SAMPLE_FRACTION * n))))


# ---- the band -----------------------------------------------------------------------------------------
def estimates(scores: Any, keep: Any, lo: float, hi: float, n_rest: int) -> tuple[float, float]:
    """Estimated (recall, precision) of the final kept set over the sample + `n_rest` other rows: sample rows
    are the strong judge's (exact); each other row is like a sample row scored by a model that did not see it:
    dropped below lo (a miss if the judge keeps it), kept at or above hi (a false keep if not), else judged."""
    import numpy as np

    s, y = np.asarray(scores, dtype=float), np.asarray(keep, dtype=bool)
    f = n_rest / max(1, len(s))
    tp = y.sum(-1) + f * (y & (s >= lo)).sum(-1)
    fn = f * (y & (s < lo)).sum(-1)
    fp = f * (~y & (s >= hi)).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tp + fn > 0, tp / (tp + fn), 1.0), np.where(tp + fp > 0, tp / (tp + fp), 1.0)


def choose_band(scores: Any, keep: Any, n_rest: int, recall: float, precision: float) -> tuple[float, float]:
    """(lo, hi): the narrowest band (fewest sample rows inside) whose estimated recall and precision meet the
    targets. Cuts fall halfway between distinct scores. lo = -inf sends every row the predictor does not keep
    to the strong judge; hi = +inf keeps nothing on the predictor's word alone."""
    import numpy as np

    s, y = np.asarray(scores, dtype=float), np.asarray(keep, dtype=bool)
    n = len(s)
    if n_rest == 0 or n == 0:
        return math.inf, math.inf
    order = np.argsort(-s, kind="stable")
    ss, ys = s[order], y[order]
    tp = np.concatenate([[0], np.cumsum(ys)])         # kept by the strong judge among the top m rows
    fp = np.concatenate([[0], np.cumsum(~ys)])        # dropped by it among the top k rows
    m_all = np.arange(n + 1)
    cut = (m_all == 0) | (m_all == n)
    cut[1:n] = ss[:-1] > ss[1:]                       # a cut between two equal scores is no cut
    f, pos = n_rest / n, int(ys.sum())
    tp_est = pos + f * tp
    fn_est = f * (pos - tp)
    ok_m = cut & (tp_est >= recall * (tp_est + fn_est) - 1e-12)
    cuts = m_all[cut]
    budget = tp_est * (1 - precision) / (precision * f) + 1e-12  # false keeps allowed, in sample rows
    k = cuts[np.maximum(0, np.searchsorted(fp[cuts], budget, side="right") - 1)]
    k = np.minimum(k, m_all)
    width = np.where(ok_m, m_all - k, n + 1)
    best = int(np.lexsort((-m_all, width))[0])        # narrowest; then the one keeping the most candidates
    return _cut_value(ss, best), _cut_value(ss, int(k[best]))


def _cut_value(sorted_desc: Any, m: int) -> float:
    """The score that puts exactly the top m rows at or above it."""
    n = len(sorted_desc)
    if m == 0:
        return math.inf
    if m == n:
        return -math.inf
    return float((sorted_desc[m - 1] + sorted_desc[m]) / 2)


def interval(scores: Any, keep: Any, lo: float, hi: float, n_rest: int, resamples: int,
             seed: int) -> dict[str, list[float]]:
    """95% percentile-bootstrap intervals of the estimated recall and precision, resampling the sample rows
    (with lo and hi fixed: the choice of the band is not resampled, so they are a little optimistic)."""
    import numpy as np

    s, y = np.asarray(scores, dtype=float), np.asarray(keep, dtype=bool)
    if len(s) == 0 or resamples <= 0:  # nothing to resample
        return {"recall": [math.nan, math.nan], "precision": [math.nan, math.nan]}
    idx = np.random.default_rng(seed).integers(0, len(s), size=(resamples, len(s)))
    r, p = estimates(s[idx], y[idx], lo, hi, n_rest)
    return {"recall": [float(np.quantile(r, 0.025)), float(np.quantile(r, 0.975))],
            "precision": [float(np.quantile(p, 0.025)), float(np.quantile(p, 0.975))]}


# ---- the predictor ------------------------------------------------------------------------------------
def label_set(examples: list[Example], scores: list[float], threshold: float, source: str) -> Any:
    """The strong judge's ratings of the sample as distill's LabelSet (every row drawn uniformly)."""
    import numpy as np

    from alpagasus.distill import LabelSet

    value = np.asarray(scores, dtype=np.float64)
    n = len(examples)
    return LabelSet(source, "score", threshold, list(examples), (value >= threshold).astype(np.int64), value,
                    np.ones(n), np.ones(n, dtype=bool))


def cross_fit(ls: Any, x: Any, folds: int, seed: int, feature_set: str = "embeddings") -> Any:
    """Each sample row's predicted score from a predictor fitted on the other folds (for the band)."""
    import numpy as np
    from sklearn.model_selection import StratifiedKFold

    from alpagasus.distill import LabelSet, fit_predictor

    out = np.zeros(len(ls.keep))
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, ls.keep):
        part = LabelSet(ls.source, ls.label, ls.threshold, [ls.examples[i] for i in tr], ls.keep[tr],
                        ls.value[tr], ls.weight[tr], ls.uniform[tr])
        pred = fit_predictor(part, holdout=0.0, seed=seed, features=x[tr], feature_set=feature_set)
        out[te] = predicted_scores(pred, x[te], [ls.examples[i] for i in te])
    return out


def fit_band(rated: list[Example], scores: list[float], n_rest: int, options: CascadeOptions, x: Any = None,
             name: str = "cascade") -> tuple[Any, Any, Any, float, float]:
    """(predictor fitted on the whole sample, cross-fitted scores of the sample rows, their 0/1 labels, lo, hi).
    `x`: the sample's features (encoded here when None). Raises DistillError when a class is too small."""
    from alpagasus.distill import DistillError, fit_predictor
    from alpagasus.predictors import featurize

    ls = label_set(rated, scores, options.threshold, name)
    kept = int(ls.keep.sum())
    if min(kept, len(rated) - kept) < 2 * options.folds:
        raise DistillError(f"the sample has {kept} kept and {len(rated) - kept} dropped rows; the cascade "
                           f"needs at least {2 * options.folds} of each (a larger --cascade-sample)")
    x = featurize(rated) if x is None else x
    oof = cross_fit(ls, x, options.folds, options.seed, options.feature_set)
    lo, hi = choose_band(oof, ls.keep, n_rest, options.recall, options.precision)
    pred = fit_predictor(ls, holdout=0.0, seed=options.seed, features=x, name=name,
                         feature_set=options.feature_set)
    return pred, oof, ls.keep, lo, hi


def predicted_scores(pred: Any, x: Any, examples: list[Example]) -> Any:
    """A predictor's 0-5 scores from the 774 embedding columns `x` (and the texts, for the "rich" features)."""
    from alpagasus.predictors import with_hand

    return pred.score(pred.raw(with_hand(x, examples, pred.feature_set), examples))


@dataclass
class Plan:
    """What the sample decided: the predictor folder (None when none could be trained), the band, figures."""
    key: str
    folder: str | None
    lo: float
    hi: float
    sample: int
    sample_kept: int
    sample_band: float                 # fraction of the (cross-fitted) sample rows inside the band
    n_rest: int
    recall: float
    precision: float
    interval: dict[str, list[float]] = field(default_factory=dict)
    note: str = ""
    format: int = FORMAT

    def decide(self, score: float | None) -> str:
        """"keep", "drop" or "band" (ask the strong judge) for a predicted score."""
        if self.folder is None or score is None or not math.isfinite(score):
            return "band"
        return "drop" if score < self.lo else "keep" if score >= self.hi else "band"


def plan_key(judge_id: str, version: str, labelled: list[tuple[str, float]], n_rest: int,
             options: CascadeOptions) -> str:
    h = hashlib.sha256(json.dumps([FORMAT, judge_id, version, sorted(labelled), n_rest, options.recall,
                                   options.precision, options.threshold, options.seed, options.folds]
                                  + ([options.feature_set] if options.feature_set != "embeddings" else [])).encode())
    return h.hexdigest()[:12]


def make_plan(store: Store, judge_id: str, version: str, sample: list[Example], ratings: dict[str, Rating],
              n_rest: int, options: CascadeOptions, log: Callable[[str], None] = lambda s: None) -> Plan:
    """The plan for this sample's ratings: read back from `<store>.cascade/<key>/cascade.json`, else made
    (cross-fit, band, final predictor saved there)."""
    rated = [e for e in sample if ratings[e.id].status == "ok" and ratings[e.id].score is not None]
    scores = [float(ratings[e.id].score) for e in rated]  # type: ignore[arg-type]
    key = plan_key(judge_id, version, [(e.id, s) for e, s in zip(rated, scores)], n_rest, options)
    folder = Path(str(store.path) + ".cascade") / key
    if (folder / "cascade.json").is_file():
        try:
            return Plan(**json.loads((folder / "cascade.json").read_text(encoding="utf-8")))
        except (ValueError, TypeError, OSError):
            log(f"{folder}/cascade.json unreadable: fitting again")
    kept = sum(s >= options.threshold for s in scores)
    base = dict(key=key, sample=len(sample), sample_kept=kept, n_rest=n_rest)
    from alpagasus.distill import DistillError

    try:
        pred, oof, keep, lo, hi = fit_band(rated, scores, n_rest, options, name=f"cascade-{key}")
    except (DistillError, ValueError) as e:  # too few rows of a class: the strong judge rates everything
        plan = Plan(**base, folder=None, lo=-math.inf, hi=math.inf, sample_band=1.0, recall=1.0, precision=1.0,
                    note=f"no predictor ({e}): every row goes to the strong judge")
    else:
        pred.save(folder)
        r, p = estimates(oof, keep, lo, hi, n_rest)
        band = float(((oof >= lo) & (oof < hi)).mean())
        plan = Plan(**base, folder=str(folder), lo=lo, hi=hi, sample_band=band, recall=float(r),
                    precision=float(p), interval=interval(oof, keep, lo, hi, n_rest, options.bootstrap,
                                                          options.seed))
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_writer(folder / "cascade.json", "w") as f:  # json.dumps writes inf as Infinity and reads it back
        f.write(json.dumps(asdict(plan), indent=2))
    return plan


# ---- the run ------------------------------------------------------------------------------------------
class Source(Protocol):
    """rate/files.py's InputFile: fresh passes over the input, the last full pass's stats."""
    stats: ReadResult
    rate_empty: bool

    def examples(self, stats: ReadResult | None = None) -> Iterator[Example]: ...


def ask_strong(examples: Iterable[Example], session: Session, template: Template, opts: RunOptions,
               progress: ProgressFactory | None, total: int) -> RateSummary:
    """Every strong-judge call of the cascade (the sample, then the band) goes through here: what the store
    already holds is not asked again. With `opts.batch` (`--batch`) `rate` sends them through the provider's
    Batch API (engine/batch.py): one batch for the sample, one for the band."""
    return rate(examples, session.judge, template, session.store, opts, progress, total=total, rate_empty=True)


def _rows(source: Source) -> Iterator[Example]:
    """The rows the cascade decides: valid, deduplicated and (unless --rate-empty) not empty."""
    return (e for e in source.examples() if source.rate_empty or not e.empty_field)


def _in_band(source: Source, store: Store, pred_id: str, version: str, plan: Plan,
             skip: set[str]) -> Iterator[Example]:
    for batch in chunked((e for e in _rows(source) if e.id not in skip), 1000):
        got = store.get_many([e.id for e in batch], pred_id, version)
        yield from (e for e in batch if plan.decide(_score(got.get(e.id))) == "band")


def _score(r: Rating | None) -> float | None:
    return r.score if r is not None and r.status == "ok" else None


def rate_cascade(source: Source, template: Template, session: Session, opts: RunOptions, options: CascadeOptions,
                 output: str | Path, progress: ProgressFactory | None = None,
                 strong: Callable[..., RateSummary] = ask_strong) -> RateSummary:
    """Rate with the strong judge on a sample and the band, the distilled predictor elsewhere; write the
    ratings file. The summary's `run` holds the strong judge's counts, `cascade` the rest (see docs/cost.md)."""
    options.check()
    judge, store, version = session.judge, session.store, template.version
    n = sum(1 for e in source.examples(source.stats) if source.rate_empty or not e.empty_field)
    chosen = set(random.Random(options.seed).sample(range(n), sample_size(n, options.sample)))
    sample = [e for i, e in enumerate(_rows(source)) if i in chosen]
    s = RateSummary(judge=judge.id, prompt_version=version)
    first = strong(sample, session, template, opts, progress, len(sample))
    ratings = store.get_many([e.id for e in sample], judge.id, version)
    missing = [e for e in sample if e.id not in ratings or ratings[e.id].status not in FINAL]
    if missing:
        raise UserError(f"{len(missing)} of the {len(sample)} sample rows have no rating from {judge.id} (first: "
                        f"row {missing[0].row}); run the same command again to ask for them")
    plan = make_plan(store, judge.id, version, sample, ratings, n - len(sample), options)
    skip = {e.id for e in sample}
    pred_id, predicted = "", RunCounts()
    if plan.folder is not None:
        from alpagasus import judges

        pj = judges.get(f"predictor:{plan.folder}")
        pred_id = pj.id
        try:
            local = dataclasses.replace(opts, batch=False)  # --batch is for the strong judge; this one is local
            predicted = rate((e for e in _rows(source) if e.id not in skip), pj, template, store, local, progress,
                             total=n - len(sample), rate_empty=True).run
        finally:
            pj.close()
    band_n = sum(1 for _ in _in_band(source, store, pred_id, version, plan, skip))
    second = strong(_in_band(source, store, pred_id, version, plan, skip), session, template, opts, progress,
                    band_n)
    for part in (first, second):
        s.run.add(part.run)
        s.already_rated += part.already_rated
        if part.run.cost is not None:
            s.run.cost = (s.run.cost or 0.0) + part.run.cost
    s.rows, s.duplicates, s.invalid = source.stats.rows, source.stats.duplicates, source.stats.invalid
    s.empty = 0 if source.rate_empty else sum(1 for e in source.examples() if e.empty_field)
    s.flagged, decided = _write(output, source, store, judge.id, pred_id, version, plan, skip, options.threshold)
    strong_n = len(sample) + band_n
    s.cascade = {"sample": len(sample), "band": band_n, "strong_rows": strong_n, "rows": n,
                 "calls_saved": n - strong_n, "strong_fraction": strong_n / n if n else 0.0,
                 "predictor": pred_id or None, "predictor_folder": plan.folder,
                 "predictor_requests": predicted.to_judge, "decided": decided, "lo": plan.lo, "hi": plan.hi,
                 "recall": plan.recall, "precision": plan.precision, "interval": plan.interval,
                 "targets": [options.recall, options.precision], "note": plan.note}
    return s


def _write(output: str | Path, source: Source, store: Store, strong_id: str, pred_id: str, version: str,
           plan: Plan, sample: set[str], threshold: float) -> tuple[int, dict[str, int]]:
    """Write the ratings file; returns (rows flagged, rows per decision)."""
    flagged, decided = 0, {"strong": 0, "keep": 0, "drop": 0, "empty": 0, "error": 0}

    def rows() -> Iterator[dict]:
        nonlocal flagged
        for row, how in cascade_rows(source.examples(), store, strong_id, pred_id, version, plan, sample,
                                     threshold, source.stats.invalid):
            flagged += bool(rating_field(row, "flags"))
            decided[how] = decided.get(how, 0) + 1
            yield row
    try:
        write_jsonl(output, rows())
    except (OSError, DataError) as e:
        raise UserError(f"cannot write {output}: {e}. The ratings are safe in the store {store.path}: "
                        "run the same command again to write the file") from e
    return flagged, decided


def cascade_rows(examples: Iterable[Example], store: Store, strong_id: str, pred_id: str, version: str,
                 plan: Plan, sample: set[str], threshold: float,
                 invalid: Iterable[InvalidRow] = ()) -> Iterator[tuple[dict, str]]:
    """(ratings-file row, how it was decided): the strong judge's final rating wherever the store holds one,
    else the predictor's decision, its score moved to the decided side of the threshold where needed."""
    for batch in chunked(examples, 1000):
        ids = [e.id for e in batch]
        strong = store.get_many(ids, strong_id, version)
        pred = store.get_many(ids, pred_id, version) if pred_id else {}
        for e in batch:
            fields, r, p = e.fields(), strong.get(e.id), pred.get(e.id)
            how = "strong" if r is not None and r.status in FINAL else "error"
            rating = dict(id=e.id, row=e.row, score=None, status="error", judge=strong_id, prompt_version=version,
                          model="", explanation="not rated (run interrupted?)", raw=None, probs=None,
                          label_mass=None)
            if how == "strong":
                rating.update(score=r.score, status=r.status, model=r.model, explanation=r.explanation,
                              raw=r.raw, probs=r.probs, label_mass=(r.extra or {}).get("label_mass"))
            elif e.empty_field and r is None:
                how = "empty"
                rating.update(status="empty", explanation=f"the {e.empty_field} is empty: not sent to the judge")
            elif e.id not in sample and (how := plan.decide(_score(p))) != "band":
                score = float(p.score)  # type: ignore[union-attr,arg-type]
                side = max(score, threshold) if how == "keep" else min(score, math.nextafter(threshold, -math.inf))
                bound = f">= {plan.hi:.4g}" if how == "keep" else f"< {plan.lo:.4g}"
                rating.update(score=side, status="ok", judge=pred_id, model=p.model, probs=p.probs,  # type: ignore
                              explanation=f"cascade: the predictor's score {score:.4g} {bound}: {how}")
            else:
                how = "error"
            yield with_rating(fields, {**rating, "flags": flags(fields)}), how
    for bad in invalid:
        yield ({"id": None, "row": bad.row, "field": bad.field, "score": None, "status": "invalid_input",
                "judge": strong_id, "prompt_version": version, "explanation": bad.reason, "raw": None,
                "flags": []}, "invalid")
