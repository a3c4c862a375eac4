"""`rate --cascade`: the strong judge only where it matters, with a guarantee that holds.

1. The strong judge rates a seeded random sample of the rows (`sample_size`), through the engine and the store.
2. The sample is split (rate/start.py): a certification part, and a development part on which a predictor is
   chosen (the shipped one of the dimension, one distilled from the sample, or both combined: whichever ranks
   the sample better) and a path of bands is laid out. The band [lo, hi) is then certified on the
   certification part with one-sided Clopper-Pearson bounds (rate/certify.py): with the stated confidence,
   the final kept set's recall and precision against the strong judge alone meet the targets.
3. If the certified band would leave the predictor less than `min_saving` of the remaining rows, the cascade
   gives up before any predictor rates the rest: it says so and the strong judge rates the rest (or, with
   `stop`, the run stops after the sample).
4. Otherwise the predictor(s) rate every other row (through the engine: stored under their own ids); rows in
   the band go to the strong judge, below lo the predictor drops them, at or above hi it keeps them. The
   ratings file says who decided each row (`judge`).

Every strong-judge call goes through `ask_strong` (the sample, then the band; `--batch` there). See docs/cost.md.
"""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol

from alpagasus.data import DataError, ReadResult, write_jsonl
from alpagasus.engine.loop import ProgressFactory, chunked
from alpagasus.engine.session import Session
from alpagasus.engine.types import RunCounts, RunOptions
from alpagasus.errors import UserError
from alpagasus.prompts.template import Template
from alpagasus.rate.injection import flags
from alpagasus.rate.loop import rate
from alpagasus.rate.plan import CascadeOptions, Plan, make_plan, sample_size
from alpagasus.rate.start import Scorer
from alpagasus.rate.summary import CascadeSummary, RateSummary
from alpagasus.ratings_file import NOT_RATED, invalid_row, rating_field, row_of, stored_rating
from alpagasus.records import Example, InvalidRow, Rating
from alpagasus.store import FINAL, Store

__all__ = ["CascadeOptions", "CascadeSummary", "Plan", "rate_cascade", "sample_size"]


# ---- the run ------------------------------------------------------------------------------------------
class Source(Protocol):
    """rate/files.py's InputFile: fresh passes over the input, the last full pass's stats."""

    stats: ReadResult
    rate_empty: bool

    def examples(self, stats: ReadResult | None = None) -> Iterator[Example]: ...


def ask_strong(
    examples: Iterable[Example],
    session: Session,
    template: Template,
    opts: RunOptions,
    progress: ProgressFactory | None,
    total: int,
) -> RateSummary:
    """Every strong-judge call of the cascade (the sample, then the band) goes through here: what the store
    already holds is not asked again. With `opts.batch` (`--batch`) `rate` sends them through the provider's
    Batch API (engine/batch.py): one batch for the sample, one for the band."""
    return rate(examples, session.judge, template, session.store, opts, progress, total=total, rate_empty=True)


def _rows(source: Source) -> Iterator[Example]:
    """The rows the cascade decides: valid, deduplicated and (unless --rate-empty) not empty."""
    return (e for e in source.examples() if source.rate_empty or not e.empty_field)


def _values(
    store: Store, ids: list[str], pred_ids: list[str], version: str, scorer: Scorer
) -> tuple[list[dict[str, Rating]], dict[str, float | None]]:
    """Each predictor's stored ratings of these rows, and each row's combined value z (None if one is missing)."""
    got = [store.get_many(ids, p, version) for p in pred_ids]
    return got, {i: scorer.value([_score(g.get(i)) for g in got]) for i in ids}


def _in_band(
    source: Source, store: Store, pred_ids: list[str], version: str, plan: Plan, skip: set[str]
) -> Iterator[Example]:
    for batch in chunked((e for e in _rows(source) if e.id not in skip), 1000):
        _, z = _values(store, [e.id for e in batch], pred_ids, version, plan.scorer)
        yield from (e for e in batch if plan.decide(z[e.id]) == "band")


def _score(r: Rating | None) -> float | None:
    return r.score if r is not None and r.status == "ok" else None


def _predict(
    source: Source,
    plan: Plan,
    template: Template,
    store: Store,
    opts: RunOptions,
    progress: ProgressFactory | None,
    skip: set[str],
    total: int,
) -> tuple[list[str], RunCounts]:
    """Each predictor of the plan rates every row outside the sample (stored under its own id)."""
    from alpagasus import judges

    ids, counts = [], RunCounts()
    local = dataclasses.replace(opts, batch=False)  # --batch is for the strong judge; these are local
    for spec in plan.predictors:
        pj = judges.get(spec)
        ids.append(pj.id)
        try:
            counts.add(
                rate(
                    (e for e in _rows(source) if e.id not in skip),
                    pj,
                    template,
                    store,
                    local,
                    progress,
                    total=total,
                    rate_empty=True,
                ).run
            )
        finally:
            pj.close()
    return ids, counts


def rate_cascade(
    source: Source,
    template: Template,
    session: Session,
    opts: RunOptions,
    options: CascadeOptions,
    output: str | Path,
    progress: ProgressFactory | None = None,
    strong: Callable[..., RateSummary] = ask_strong,
) -> RateSummary:
    """Rate with the strong judge on a sample and the band, the predictor elsewhere; write the ratings file.
    The summary's `run` holds the strong judge's counts, `cascade` the rest (see docs/cost.md)."""
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
        raise UserError(
            f"{len(missing)} of the {len(sample)} sample rows have no rating from {judge.id} (first: "
            f"row {missing[0].row}); run the same command again to ask for them"
        )
    plan = make_plan(store, judge.id, template, sample, ratings, n - len(sample), options)
    if plan.gave_up and options.stop:
        raise UserError(
            f"the cascade cannot save: {plan.note}. Stopped after the sample: its {len(sample)} ratings "
            f"by {judge.id} are stored (run without --cascade to rate the rest; they are reused)"
        )
    skip = {e.id for e in sample}
    pred_ids, predicted = _predict(source, plan, template, store, opts, progress, skip, n - len(sample))
    band_n = sum(1 for _ in _in_band(source, store, pred_ids, version, plan, skip))
    second = strong(_in_band(source, store, pred_ids, version, plan, skip), session, template, opts, progress, band_n)
    for part in (first, second):
        s.run.add(part.run)
        s.already_rated += part.already_rated
        if part.run.cost is not None:
            s.run.cost = (s.run.cost or 0.0) + part.run.cost
    s.rows, s.duplicates, s.invalid = source.stats.rows, source.stats.duplicates, source.stats.invalid
    s.empty = 0 if source.rate_empty else sum(1 for e in source.examples() if e.empty_field)
    s.flagged, decided = _write(output, source, store, judge.id, pred_ids, version, plan, skip, options.threshold)
    strong_n = len(sample) + band_n
    s.cascade = CascadeSummary(
        rows=n,
        sample=len(sample),
        band=band_n,
        strong_rows=strong_n,
        calls_saved=n - strong_n,
        strong_fraction=strong_n / n if n else 0.0,
        start=plan.start if pred_ids else "",
        predictor="+".join(pred_ids) or None,
        predictor_folder=plan.folder,
        predictor_requests=predicted.to_judge,
        decided=decided,
        lo=plan.lo,
        hi=plan.hi,
        targets=(options.recall, options.precision),
        confidence=plan.confidence,
        recall_bound=plan.recall_bound,
        precision_bound=plan.precision_bound,
        certification_rows=plan.certification_rows,
        auc=plan.auc,
        gave_up=plan.gave_up,
        note=plan.note,
    )
    return s


def _write(
    output: str | Path,
    source: Source,
    store: Store,
    strong_id: str,
    pred_ids: list[str],
    version: str,
    plan: Plan,
    sample: set[str],
    threshold: float,
) -> tuple[int, dict[str, int]]:
    """Write the ratings file; returns (rows flagged, rows per decision)."""
    flagged, decided = 0, {"strong": 0, "keep": 0, "drop": 0, "empty": 0, "error": 0}

    def rows() -> Iterator[dict]:
        nonlocal flagged
        for row, how in cascade_rows(
            source.examples(), store, strong_id, pred_ids, version, plan, sample, threshold, source.stats.invalid
        ):
            flagged += bool(rating_field(row, "flags"))
            decided[how] = decided.get(how, 0) + 1
            yield row

    try:
        write_jsonl(output, rows())
    except (OSError, DataError) as e:
        raise UserError(
            f"cannot write {output}: {e}. The ratings are safe in the store {store.path}: "
            "run the same command again to write the file"
        ) from e
    return flagged, decided


def cascade_rows(
    examples: Iterable[Example],
    store: Store,
    strong_id: str,
    pred_ids: list[str],
    version: str,
    plan: Plan,
    sample: set[str],
    threshold: float,
    invalid: Iterable[InvalidRow] = (),
) -> Iterator[tuple[dict, str]]:
    """(ratings-file row, how it was decided): the strong judge's final rating wherever the store holds one,
    else the predictor's decision, its score moved to the decided side of the threshold where needed."""
    for batch in chunked(examples, 1000):
        ids = [e.id for e in batch]
        strong = store.get_many(ids, strong_id, version)
        pred, z = _values(store, ids, pred_ids, version, plan.scorer)
        for e in batch:
            r = strong.get(e.id)
            final = r is not None and r.status in FINAL
            rating = stored_rating(e, r if final else None, strong_id, version)
            if final:
                how = "strong"
            elif rating.status == "empty" and r is None:
                how = "empty"
            elif e.id not in sample and (how := plan.decide(z[e.id])) != "band":
                ps = [g[e.id] for g in pred]
                score = sum(float(p.score or 0.0) for p in ps) / len(ps)  # every one is ok: decide() had all
                side = max(score, threshold) if how == "keep" else min(score, math.nextafter(threshold, -math.inf))
                bound = f">= {plan.hi:.4g}" if how == "keep" else f"< {plan.lo:.4g}"
                rating.score, rating.status, rating.judge = side, "ok", "+".join(pred_ids)
                rating.model, rating.probs = ps[0].model, ps[0].probs
                rating.explanation = f"cascade: the {plan.start} predictor's value {z[e.id]:.4g} {bound}: {how}"
            else:
                how = "error"
                rating.status, rating.explanation = "error", NOT_RATED
            rating.flags = flags(e)
            yield row_of(e.fields(), rating), how
    for bad in invalid:
        yield invalid_row(bad, strong_id, version), "invalid"
