"""The cascade's plan, made once from the strong judge's sample: its options, the split of the sample, the
precheck (could any band save?), the predictor chosen (rate/start.py), the certified band (rate/certify.py).
Saved as `<store>.cascade/<key>/cascade.json`, so a rerun of the same command reuses it. See docs/cost.md.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from alpagasus.data import atomic_writer
from alpagasus.errors import UserError
from alpagasus.prompts.template import Template
from alpagasus.rate.certify import Certificate, band_path, certify, lower_bound
from alpagasus.rate.start import Scorer, Split, Start, choose_start, distil, predicted_scores, shipped_for, split_sample
from alpagasus.records import Example, Rating
from alpagasus.store import Store

MIN_SAMPLE, MAX_SAMPLE, SAMPLE_FRACTION, FORMAT = 400, 5000, 0.10, 2  # FORMAT: of cascade.json
STARTS = ("auto", "shipped", "distilled")


@dataclass
class CascadeOptions:
    sample: int | None = None  # rows the strong judge rates first (default: sample_size)
    recall: float = 0.95  # targets for the final kept set, against the strong judge alone
    precision: float = 0.95
    confidence: float = 0.95  # of the guarantee: both targets hold with at least this probability
    threshold: float = 4.5  # keep = score >= threshold (the paper's rule)
    seed: int = 0  # of the sample and of its split
    certify: float = 0.5  # share of the sample kept apart to certify the band
    min_saving: float = 0.2  # give up unless the predictor decides at least this share of the other rows
    stop: bool = False  # when giving up: stop after the sample (else the strong judge rates the rest)
    start: str = "auto"  # auto: the better of shipped / distilled / combined; or "shipped", "distilled"
    feature_set: str = "embeddings"  # the distilled predictor's features (distill's: "embeddings" or "rich")

    def check(self) -> None:
        for name in ("recall", "precision", "confidence"):
            v = getattr(self, name)
            if not 0.0 < v <= 1.0 or (name == "confidence" and v == 1.0):
                raise UserError(f"--cascade-{name} must be in (0, 1{']' if name != 'confidence' else ')'}, not {v}")
        if not 0.0 < self.certify < 1.0:
            raise UserError(f"the certification share must be in (0, 1), not {self.certify}")
        if not 0.0 <= self.min_saving <= 1.0:
            raise UserError(f"--cascade-min-saving must be in [0, 1], not {self.min_saving}")
        if self.start not in STARTS:
            raise UserError(f"the cascade's start must be one of {', '.join(STARTS)}, not {self.start!r}")
        if self.sample is not None and self.sample < 1:
            raise UserError(f"--cascade-sample must be 1 or more, not {self.sample}")


def sample_size(n: int, given: int | None = None) -> int:
    """max(400, 10% of the rows), at most 5000, at most n; or the size given."""
    if given is not None:
        return min(n, given)
    return min(n, max(MIN_SAMPLE, min(MAX_SAMPLE, round(SAMPLE_FRACTION * n))))


def needed(target: float, confidence: float) -> float:
    """Rows (none of them failing) a Clopper-Pearson bound needs to reach `target` at `confidence`: a whole
    number, or math.inf for a target of 1 (no number of rows reaches it)."""
    return 1 if target <= 0 else math.inf if target >= 1 else math.ceil(math.log(1 - confidence) / math.log(target))


def precheck(keep: Any, split: Split, options: CascadeOptions) -> str:
    """Why no band could save `min_saving`, whatever the predictor, before anything is distilled ("" if one
    might): too few kept rows among the certification rows to drop any row on the predictor's word, and too
    few to keep enough on it alone."""
    import numpy as np

    y = np.asarray(keep, dtype=bool)[split.cal]
    k, n = int(y.sum()), len(y)
    if n == 0 or lower_bound(k, k, options.confidence) >= options.recall:
        return ""
    if k / (n * options.precision) >= options.min_saving:  # keeping rows on its word alone might still save
        return ""
    need = needed(options.recall, options.confidence)
    if math.isinf(need):  # a recall of 1 is never certified from a sample: no row can be dropped on its word
        return (
            f"certifying recall >= {options.recall} would need every kept row found by the strong judge, so no row "
            f"could be dropped on the predictor's word (a --cascade-recall below 1 could)"
        )
    rate_ = max(k, 1) / n
    return (
        f"the {n} certification rows of the sample hold {k} kept by the strong judge; certifying recall >= "
        f"{options.recall} with {options.confidence:.0%} confidence needs at least {need} (none missed), so no "
        f"row could be dropped on the predictor's word. A sample of at least "
        f"{math.ceil(need / (rate_ * options.certify))} rows could (--cascade-sample)"
    )


@dataclass
class Plan:
    """What the sample decided: the predictors and how their scores combine, the certified band, the bounds."""

    key: str
    folder: str | None  # the distilled predictor's folder, where it is used
    start: str  # shipped / distilled / combined; "" when no predictor is used
    predictors: list[str]  # judge specs (predictor:...)
    weights: list[float]
    offsets: list[float]
    lo: float  # on the combined scale z (start.Scorer)
    hi: float
    sample: int
    sample_kept: int
    n_rest: int
    recall_bound: float  # one-sided lower confidence bounds on the certification rows
    precision_bound: float
    confidence: float
    certification_rows: int
    saving: float  # estimated share of the other rows the predictor decides
    auc: dict[str, float] = field(default_factory=dict)
    gave_up: bool = False
    note: str = ""
    format: int = FORMAT

    @property
    def scorer(self) -> Scorer:
        return Scorer(self.start, tuple(self.predictors), tuple(self.weights), tuple(self.offsets))

    def decide(self, z: float | None) -> str:
        """ "keep", "drop" or "band" (ask the strong judge) for a row's combined predicted value."""
        if not self.predictors or z is None or not math.isfinite(z):
            return "band"
        return "drop" if z < self.lo else "keep" if z >= self.hi else "band"


def plan_key(
    judge_id: str, version: str, labelled: list[tuple[str, float]], n_rest: int, options: CascadeOptions
) -> str:
    h = hashlib.sha256(
        json.dumps(
            [
                FORMAT,
                judge_id,
                version,
                sorted(labelled),
                n_rest,
                options.recall,
                options.precision,
                options.confidence,
                options.threshold,
                options.seed,
                options.certify,
                options.min_saving,
                options.start,
                options.feature_set,
            ]
        ).encode()
    )
    return h.hexdigest()[:12]


def make_plan(
    store: Store,
    judge_id: str,
    template: Template,
    sample: list[Example],
    ratings: dict[str, Rating],
    n_rest: int,
    options: CascadeOptions,
    log: Callable[[str], None] = lambda s: None,
) -> Plan:
    """The plan for this sample's ratings: read back from `<store>.cascade/<key>/cascade.json`, else made
    (split, precheck, candidates, band path, certificate; the distilled predictor saved there if used)."""
    import numpy as np

    rated = [e for e in sample if ratings[e.id].status == "ok" and ratings[e.id].score is not None]
    scores = [float(ratings[e.id].score) for e in rated]  # type: ignore[arg-type]
    key = plan_key(judge_id, template.version, [(e.id, s) for e, s in zip(rated, scores)], n_rest, options)
    folder = Path(str(store.path) + ".cascade") / key
    if (folder / "cascade.json").is_file():
        try:
            return Plan(**json.loads((folder / "cascade.json").read_text(encoding="utf-8")))
        except (ValueError, TypeError, OSError):
            log(f"{folder}/cascade.json unreadable: planning again")
    y = np.asarray(scores, dtype=float) >= options.threshold
    split = split_sample(y, options.certify, options.seed)
    plan = Plan(
        key,
        None,
        "",
        [],
        [],
        [],
        -math.inf,
        math.inf,
        len(sample),
        int(y.sum()),
        n_rest,
        1.0,
        1.0,
        options.confidence,
        len(split.cal),
        0.0,
    )
    reason = "the sample holds every row" if n_rest == 0 else precheck(y, split, options)
    if not reason:
        reason = _certified(plan, rated, scores, y, split, template, folder, options)
    plan.gave_up, plan.note = bool(reason) and n_rest > 0, reason
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_writer(folder / "cascade.json", "w") as f:  # json.dumps writes inf as Infinity and reads it back
        f.write(json.dumps(asdict(plan), indent=2))
    return plan


def _certified(
    plan: Plan,
    rated: list[Example],
    scores: list[float],
    y: Any,
    split: Split,
    template: Template,
    folder: Path,
    options: CascadeOptions,
) -> str:
    """Choose the predictor, lay out the band path, certify it; fill `plan`. Returns why it gives up, or ""."""
    import numpy as np

    from alpagasus.distill import DistillError
    from alpagasus.predictors import Predictor, PredictorError, featurize

    x = featurize(rated)
    shipped, distilled, pred = None, None, None
    spec = shipped_for(template.name) if options.start in ("auto", "shipped") else None
    if spec is not None:
        try:
            shipped = (spec, predicted_scores(Predictor.load(spec.split(":", 1)[1]), x, rated))
        except PredictorError:
            shipped = None
    if options.start in ("auto", "distilled") and len(split.train):
        tr = split.train
        try:
            pred = distil(
                [rated[i] for i in tr],
                np.asarray(scores)[tr],
                options.threshold,
                options.seed,
                options.feature_set,
                x[tr],
                f"cascade-{plan.key}",
            )
            distilled = (f"predictor:{folder}", predicted_scores(pred, x, rated))
        except (DistillError, ValueError):  # too few rows of a class to distil
            distilled = None
    st, cert, reason = certify_start(y, split, shipped, distilled, options, template.name)
    if st is None or cert is None:
        return reason
    sc = st.scorer
    plan.start, plan.auc, plan.saving = sc.start, st.auc, cert.saving
    if reason:
        return reason
    plan.lo, plan.hi, plan.recall_bound, plan.precision_bound = (
        cert.lo,
        cert.hi,
        cert.recall_bound,
        cert.precision_bound,
    )
    plan.predictors, plan.weights, plan.offsets = list(sc.predictors), list(sc.weights), list(sc.offsets)
    if pred is not None and f"predictor:{folder}" in sc.predictors:
        pred.save(folder)
        plan.folder = str(folder)
    return ""


def certify_start(
    keep: Any,
    split: Split,
    shipped: tuple[str, Any] | None,
    distilled: tuple[str, Any] | None,
    options: CascadeOptions,
    prompt: str = "",
) -> tuple[Start | None, Certificate | None, str]:
    """Choose the predictor (rate/start.py), lay out the band path on the development rows, certify it on the
    certification rows (rate/certify.py). Returns why the cascade gives up ("" if it does not). No I/O: the
    benchmark (bench/cost.py) calls it with recorded scores."""
    y = keep
    st = choose_start(y, split, shipped, distilled)
    if st is None:
        return (
            None,
            None,
            (
                f"no predictor: none ships for the prompt {prompt} and the sample's training rows are "
                "too few to distil one (grow --cascade-sample)"
            ),
        )
    path = band_path(st.z[st.path_rows], y[st.path_rows], options.recall, options.precision)
    cert = certify(path, st.z[split.cal], y[split.cal], options.recall, options.precision, options.confidence)
    if cert.saving < options.min_saving or cert.step == 0:
        return (
            st,
            cert,
            (
                f"no band saves enough: the narrowest band certified (with {options.confidence:.0%} "
                f"confidence) on the {len(split.cal)} certification rows with the {st.scorer.start} "
                f"predictor would send {1 - cert.saving:.0%} of the other rows to the strong judge (the "
                f"cascade saves only from {1 - options.min_saving:.0%}, --cascade-min-saving "
                f"{options.min_saving})"
            ),
        )
    return st, cert, ""
