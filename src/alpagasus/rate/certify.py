"""The cascade's guarantee: a band [lo, hi) of predicted scores, chosen on one part of the strong judge's sample
and certified on another with one-sided lower confidence bounds (Clopper-Pearson) on recall and precision.

Rows outside the sample are decided by the band: below lo the predictor drops them, at or above hi it keeps
them, in between the strong judge decides. Against the strong judge alone, only two kinds of rows err:
kept rows below lo (misses) and dropped rows at or above hi (false keeps). Over the rows outside the sample,

    recall    = P(score >= lo | kept by the judge)
    precision = #(kept by the judge, score >= lo) / (#(kept by the judge, score >= lo) + #(dropped, score >= hi))

Both are binomial proportions among the certification rows (the judge's kept rows; the rows the final set
would keep), so Clopper-Pearson gives exact one-sided bounds. The sample rows are the judge's own decisions,
so the whole kept set's recall and precision are at least those of the rows outside the sample.

Validity: `band_path` is built from the development part only; `certify` walks it from the trivial band
(everything to the judge: recall = precision = 1 exactly) towards narrower ones, testing each with both
bounds at the full confidence, and stops at the first band that fails (fixed-sequence testing; claiming
recall AND precision needs both bounds, an intersection-union test). The chance that the band it returns
misses either target is then at most 1 - confidence. See docs/cost.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

STEPS = 20  # steps of the path from the trivial band to the development part's choice
EXTEND = 1.5  # the path goes this far past that choice (a narrower band may still certify)


def lower_bound(k: int, n: int, confidence: float) -> float:
    """One-sided Clopper-Pearson lower bound of a binomial proportion with k successes in n trials:
    the p with P(X >= k | n, p) = 1 - confidence (0 when k = 0; 0 when n = 0, nothing is known)."""
    if k <= 0 or n <= 0:
        return 0.0
    alpha = 1.0 - confidence
    try:
        from scipy.stats import beta
    except ImportError:  # the base install: our own search on the binomial tail
        return _lower_bound_bisect(k, n, alpha)
    return float(beta.ppf(alpha, k, n - k + 1))


def _lower_bound_bisect(k: int, n: int, alpha: float) -> float:
    lo, hi = 0.0, 1.0
    for _ in range(100):  # the upper tail P(X >= k | p) grows with p
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _upper_tail(k, n, mid) < alpha else (lo, mid)
    return lo


def _upper_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed in log space."""
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    lp, lq = math.log(p), math.log1p(-p)
    logs = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
        for i in range(k, n + 1)
    ]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


@dataclass(frozen=True)
class Certificate:
    """The band certified on the certification rows, and what they showed."""

    lo: float
    hi: float
    recall_bound: float  # one-sided lower confidence bounds (1.0 where exact: lo = -inf, hi = +inf)
    precision_bound: float
    confidence: float
    kept: int  # certification rows the judge kept
    missed: int  # ... of which below lo
    final_kept: int  # certification rows the final set keeps (judge-kept >= lo, or >= hi)
    false_keeps: int  # ... of which the judge dropped
    band_fraction: float  # share of the certification rows inside the band (sent to the judge)
    step: int  # how far along the path it got (0: the trivial band)
    steps: int

    @property
    def saving(self) -> float:
        """Estimated share of the rows outside the sample that the predictor decides alone."""
        return 1.0 - self.band_fraction


def counts(scores: Any, keep: Any, lo: float, hi: float) -> tuple[int, int, int, int]:
    """(kept by the judge, missed, kept by the final set, false keeps) among rows with these scores."""
    import numpy as np

    s, y = np.asarray(scores, dtype=float), np.asarray(keep, dtype=bool)
    caught = int((y & (s >= lo)).sum())
    false_keeps = int((~y & (s >= hi)).sum())
    return int(y.sum()), int(y.sum()) - caught, caught + false_keeps, false_keeps


def bounds(scores: Any, keep: Any, lo: float, hi: float, confidence: float) -> tuple[float, float]:
    """Lower confidence bounds of (recall, precision) of rows decided by the band [lo, hi)."""
    kept, missed, final, fk = counts(scores, keep, lo, hi)
    r = 1.0 if lo == -math.inf else lower_bound(kept - missed, kept, confidence)
    p = 1.0 if hi == math.inf else lower_bound(final - fk, final, confidence)
    return r, p


def certify(
    path: list[tuple[float, float]], scores: Any, keep: Any, recall: float, precision: float, confidence: float
) -> Certificate:
    """Walk `path` (the trivial band first) on the certification rows; the last band whose lower bounds both
    meet the targets before the first that does not."""
    import numpy as np

    s = np.asarray(scores, dtype=float)
    best, step = (-math.inf, math.inf), 0
    for i, (lo, hi) in enumerate(path):
        r, p = bounds(s, keep, lo, hi, confidence)
        if r < recall or p < precision:
            break
        best, step = (lo, hi), i
    lo, hi = best
    r, p = bounds(s, keep, lo, hi, confidence)
    kept, missed, final, fk = counts(s, keep, lo, hi)
    band = float(((s >= lo) & (s < hi)).mean()) if len(s) else 1.0
    return Certificate(lo, hi, r, p, confidence, kept, missed, final, fk, band, step, len(path) - 1)


def band_path(
    scores: Any, keep: Any, recall: float, precision: float, steps: int = STEPS, extend: float = EXTEND
) -> list[tuple[float, float]]:
    """Bands from the development rows alone, the most cautious first: the trivial band (-inf, +inf); steps
    (in shares of rows) towards the narrowest band that errs on none of these rows; then the narrowest bands
    meeting targets relaxed in `steps` steps from 1 to the targets, and on past them up to `extend` times as
    far (a band the development rows call too loose may still certify). Cuts fall halfway between scores."""
    import numpy as np

    s = np.sort(np.asarray(scores, dtype=float))[::-1]
    n = len(s)
    path = [(-math.inf, math.inf)]
    if n == 0:
        return path
    lo, hi = choose_band(scores, keep, 0, 1.0, 1.0)
    drop, top = int((s < lo).sum()), int((s >= hi).sum())  # rows it drops / keeps on the predictor's word
    bands = [
        (_cut_value(s, n - round(drop * j / steps)), _cut_value(s, round(top * j / steps))) for j in range(1, steps + 1)
    ]
    for j in range(1, int(steps * extend) + 1):
        bands.append(choose_band(scores, keep, 0, 1 - (1 - recall) * j / steps, 1 - (1 - precision) * j / steps))
    for lo, hi in bands:
        band = (lo, max(lo, hi))
        if band != path[-1]:
            path.append(band)
    return path


def estimates(scores: Any, keep: Any, lo: float, hi: float, n_rest: int) -> tuple[Any, Any]:
    """Point estimates of (recall, precision) of the final kept set over the sample + `n_rest` other rows,
    each other row like a sample row (`n_rest` = 0: the rows outside the sample alone). numpy arrays over the
    last axis: 0-d for one row of scores, one estimate per row for a stack of them."""
    import numpy as np

    s, y = np.asarray(scores, dtype=float), np.asarray(keep, dtype=bool)
    f = n_rest / max(1, len(s)) if n_rest else 1.0
    base = y.sum(-1) if n_rest else 0
    tp = base + f * (y & (s >= lo)).sum(-1)
    fn = f * (y & (s < lo)).sum(-1)
    fp = f * (~y & (s >= hi)).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tp + fn > 0, tp / (tp + fn), 1.0), np.where(tp + fp > 0, tp / (tp + fp), 1.0)


def choose_band(scores: Any, keep: Any, n_rest: int, recall: float, precision: float) -> tuple[float, float]:
    """(lo, hi): the narrowest band (fewest rows inside) whose estimated recall and precision meet the targets
    (`estimates`; `n_rest` = 0: of the rows decided by the band alone). Cuts fall halfway between distinct
    scores; lo = -inf sends every row the predictor does not keep to the judge, hi = +inf keeps nothing on the
    predictor's word alone."""
    import numpy as np

    s, y = np.asarray(scores, dtype=float), np.asarray(keep, dtype=bool)
    n = len(s)
    if n == 0:
        return math.inf, math.inf
    order = np.argsort(-s, kind="stable")
    ss, ys = s[order], y[order]
    tp = np.concatenate([[0], np.cumsum(ys)])  # kept by the judge among the top m rows
    fp = np.concatenate([[0], np.cumsum(~ys)])  # dropped by it among the top k rows
    m_all = np.arange(n + 1)
    cut = (m_all == 0) | (m_all == n)
    cut[1:n] = ss[:-1] > ss[1:]  # a cut between two equal scores is no cut
    f, pos = (n_rest / n, int(ys.sum())) if n_rest else (1.0, 0)
    tp_est = pos + f * tp
    fn_est = f * (int(ys.sum()) - tp)
    ok_m = cut & (tp_est >= recall * (tp_est + fn_est) - 1e-12)
    cuts = m_all[cut]
    budget = tp_est * (1 - precision) / (precision * f) + 1e-12  # false keeps allowed, in rows
    k = cuts[np.maximum(0, np.searchsorted(fp[cuts], budget, side="right") - 1)]
    k = np.minimum(k, m_all)
    width = np.where(ok_m, m_all - k, n + 1)
    best = int(np.lexsort((-m_all, width))[0])  # narrowest; then the one keeping the most candidates
    return _cut_value(ss, best), _cut_value(ss, int(k[best]))


def _cut_value(sorted_desc: Any, m: int) -> float:
    """The score that puts exactly the top m rows at or above it."""
    n = len(sorted_desc)
    if m == 0:
        return math.inf
    if m == n:
        return -math.inf
    return float((sorted_desc[m - 1] + sorted_desc[m]) / 2)
