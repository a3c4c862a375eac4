"""Length-controlled scores: what a judge's verdicts would say if the two answers were equally long.

The idea is AlpacaEval 2's (Dubois et al. 2024, "Length-Controlled AlpacaEval"; `metrics/glm_winrate.py` in
tatsu-lab/alpaca_eval), written here from its description with numpy (and scipy for the joint fit):

- the outcome y of a question (model A's point in [0, 1]: win 1, tie 0.5, lose 0; AlpacaEval: preference - 1)
  is modelled by a logistic regression on x = tanh(Δ / sd), Δ = len(A's answer) - len(B's) in characters and
  sd the standard deviation of Δ over the questions (ties and soft preferences enter as fractional labels);
- the length-controlled result is the model's prediction at Δ = 0.

Two models (`compare`): logit P(A wins) = b0 + b1 x, so the prediction is sigmoid(b0) and the length-controlled
winning score 2 sigmoid(b0) (the raw winning score (#win - #lose) / N + 1 is 2 mean(y)). Its interval is the
percentile bootstrap of compare/interval.py (same resamples, level and seed): questions are resampled and the
model refitted each time (sd kept from the full sample). One verdict per question leaves no room for a
per-question difficulty term, so the two-model fit has none.

Many judged models on shared instructions (AlpacaEval annotations, `alpaca_eval_lc`): first a joint fit over all
models, logit = theta_m + phi_m x + gamma_i, whose per-instruction terms gamma_i are the instructions'
difficulty (AlpacaEval's `instruction_difficulty`, which it estimated the same way over its leaderboard and
ships precomputed); then, per model, logit = theta_m + phi_m x + psi_m gamma_i, and the length-controlled win
rate is 100 x the mean over the model's instructions of sigmoid(theta_m + psi_m gamma_i). AlpacaEval also
regularizes each model towards "gamed" verbose / concise baselines we do not have; here each model's length
slope phi_m is shrunk instead towards the pooled slope of all models (the joint fit's median).

Slopes carry a small ridge penalty (SLOPE_PENALTY; an intercept a tiny one), so a judge whose verdicts are
perfectly separated by length (the longer answer always wins) still gives a finite fit whose intercept sits at
the boundary: there the length-controlled result is near even.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from alpagasus.compare.interval import LEVEL, RESAMPLES, SEED

if TYPE_CHECKING:
    import numpy as np

    from alpagasus.compare.alpacaeval import Verdict

SLOPE_PENALTY = 0.3  # ridge on slopes (tanh units): a weak prior (sd ~1.8), negligible beside many questions
INTERCEPT_PENALTY = 1e-4  # keeps a unanimous sample (all wins) finite without moving anything else
DIFFICULTY_PENALTY = 1.0  # ridge on the per-instruction terms of the joint fit (a random effect's shrinkage)
# Per-model length slopes are shrunk towards the pooled slope of all models: AlpacaEval regularizes them towards
# the slope of its "gamed" baselines (its reference made verbose or concise: a pure length effect), which we do not
# have. 10 was chosen on the development models against the leaderboard (bench/lc_check.py; docs/compare.md).
POOLED_SLOPE_PENALTY = 10.0
MIN_MODELS_FOR_DIFFICULTY = 3  # fewer judged models: instruction difficulty is confounded with the verdicts
NEWTON_STEPS = 50
CHUNK = 250  # bootstrap resamples fitted at once
METHOD = (
    "logistic regression of the outcome (win 1, tie 0.5, lose 0) on tanh(length difference / its sd), "
    "predicted at zero length difference; AlpacaEval 2's length control (docs/compare.md)"
)


@dataclass
class LengthControlled:
    """A comparison's winning score at zero length difference (per test set and "all" in summary.json)."""

    winning_score: float | None  # 2 x sigmoid(b0); 1.0 even, 2.0 A always wins
    winning_score_ci: list[float] | None  # percentile bootstrap over questions (compare/interval.py's settings)
    length_coef: float | None  # b1: > 0, the judge favours the longer answer (tanh units)
    length_sd: float | None  # sd of len(A) - len(B) in characters, the standardization
    questions: int  # judged questions the fit used
    method: str = METHOD


def _sigmoid(z: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.exp(-np.logaddexp(0.0, -z))


def fit_logistic(
    X: np.ndarray,
    y: np.ndarray,
    counts: np.ndarray | None = None,
    penalty: np.ndarray | None = None,
    center: np.ndarray | None = None,
) -> np.ndarray:
    """Penalized logistic regression with fractional labels, by Newton's method, for R weightings at once.
    X: (n, k) features (an intercept column included), y: (n,) labels in [0, 1], counts: (R, n) row weights
    (bootstrap counts; default one weighting of ones), penalty: (k,) ridge per coefficient, towards `center`
    (k,) (default 0). Returns (R, k)."""
    import numpy as np

    n, k = X.shape
    W = np.ones((1, n)) if counts is None else np.asarray(counts, dtype=float)
    lam = np.full(k, SLOPE_PENALTY) if penalty is None else np.asarray(penalty, dtype=float)
    mu = np.zeros(k) if center is None else np.asarray(center, dtype=float)
    beta = np.zeros((W.shape[0], k))
    for _ in range(NEWTON_STEPS):
        p = _sigmoid(beta @ X.T)  # (R, n)
        grad = (W * (y - p)) @ X - lam * (beta - mu)  # (R, k)
        w = W * p * (1 - p)
        hess = np.einsum("rn,ni,nj->rij", w, X, X) + np.diag(lam)  # (R, k, k), positive definite
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        # damped: a near-separated sample would otherwise overshoot on the first steps
        scale = np.minimum(1.0, 5.0 / np.maximum(np.abs(step).max(axis=1, keepdims=True), 1e-12))
        beta += scale * step
        if np.abs(step).max() < 1e-8:
            break
    return beta


def length_feature(len_a: Sequence[float], len_b: Sequence[float]) -> tuple[np.ndarray, float | None]:
    """x = tanh((len_a - len_b) / sd) and sd (None, with x all 0, when the differences do not vary)."""
    import numpy as np

    delta = np.asarray(len_a, dtype=float) - np.asarray(len_b, dtype=float)
    sd = float(np.std(delta, ddof=1)) if len(delta) > 1 else 0.0
    if not sd > 0:
        return np.zeros_like(delta), None
    return np.tanh(delta / sd), sd


def lc_winning_score(
    outcomes: Sequence[float],
    len_a: Sequence[float],
    len_b: Sequence[float],
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = SEED,
) -> LengthControlled:
    """The length-controlled winning score of judged questions: `outcomes` are A's points in [0, 1] (win 1,
    tie 0.5, lose 0), `len_a` / `len_b` the answers' lengths. With no question: all None."""
    import numpy as np

    n = len(outcomes)
    if n == 0:
        return LengthControlled(None, None, None, None, 0)
    y = np.asarray(outcomes, dtype=float)
    x, sd = length_feature(len_a, len_b)
    X = np.column_stack([np.ones(n), x])
    pen = np.array([INTERCEPT_PENALTY, SLOPE_PENALTY])
    b0, b1 = fit_logistic(X, y, penalty=pen)[0]
    rng = np.random.default_rng(seed)
    chunks = []
    for start in range(0, resamples, CHUNK):  # resamples in chunks: memory ~ CHUNK x questions, not resamples x
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=min(CHUNK, resamples - start))
        chunks.append(2 * _sigmoid(fit_logistic(X, y, counts, pen)[:, 0]))
    boot = np.sort(np.concatenate(chunks))
    tail = (1 - level) / 2
    ci = [
        round(float(boot[int(tail * resamples)]), 4),
        round(float(boot[min(resamples - 1, int((1 - tail) * resamples))]), 4),
    ]
    return LengthControlled(
        round(float(2 * _sigmoid(np.array(b0))), 4), ci, round(float(b1), 4), round(sd, 1) if sd else None, n
    )


def points_to_outcomes(points: Sequence[int]) -> list[float]:
    """compare's points (win 1, tie 0, lose -1) as outcomes in [0, 1]."""
    return [(p + 1) / 2 for p in points]


def alpaca_eval_lc(
    verdicts: Sequence[Verdict], calibration: Sequence[Verdict] | None = None
) -> dict[str, float | None]:
    """AlpacaEval's length-controlled win rate (percent) per judged model (generator_2). With at least
    MIN_MODELS_FOR_DIFFICULTY models sharing instructions: a joint fit gives the instructions' difficulty and a
    pooled length slope (the median model's), then one fit per model with its slope shrunk towards the pooled one
    (POOLED_SLOPE_PENALTY). With fewer models: length and intercept only (AlpacaEval's
    `length_controlled_minimal`). The reference judged against itself is 50 by construction.
    `calibration`: other verdicts on the same instructions whose joint fit gives the difficulty and the pooled
    slope instead (AlpacaEval computes every judge's LC with those of its GPT-4-turbo leaderboard); an
    instruction they lack has difficulty 0."""
    import numpy as np

    from alpagasus.compare.alpacaeval import by_model

    groups = by_model(verdicts)
    models = _judged(groups)
    out: dict[str, float | None] = {m: 50.0 for m in groups if m not in models}
    source = groups if calibration is None else by_model(calibration)
    cal_models = _judged(source)
    inst_ids = {
        s: k
        for k, s in enumerate(
            dict.fromkeys(
                [v.instruction for m in models for v in groups[m]]
                + [v.instruction for m in cal_models for v in source[m]]
            )
        )
    }
    gamma, pen, center = np.zeros(len(inst_ids)), [INTERCEPT_PENALTY, SLOPE_PENALTY, SLOPE_PENALTY], [0.0, 0.0, 0.0]
    if len(cal_models) >= MIN_MODELS_FOR_DIFFICULTY:
        _, phi, gamma = _joint_fit([_model_rows(source[m], inst_ids) for m in cal_models], len(inst_ids))
        pen[1], center[1] = POOLED_SLOPE_PENALTY, float(np.median(phi))
    for m in models:
        x, y, inst = _model_rows(groups[m], inst_ids)
        keep = ~np.isnan(y)
        if not keep.any():
            out[m] = None
            continue
        g = gamma[inst]
        X = np.column_stack([np.ones(len(x)), x, g])
        beta = fit_logistic(X[keep], y[keep], penalty=np.array(pen), center=np.array(center))[0]
        out[m] = float(100 * _sigmoid(beta[0] + beta[2] * g).mean())  # at zero length difference
    return {m: out[m] for m in groups}


def _judged(groups: dict[str, list[Verdict]]) -> list[str]:
    """The models judged against another's answers (not the reference against itself)."""
    return [m for m, vs in groups.items() if any(v.generator_1 != m for v in vs)]


def _model_rows(vs: Sequence[Verdict], inst_ids: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, instruction index) of one judged model's verdicts; y NaN where there is no verdict. Length
    difference: the judged model's answer minus the reference's, standardized over the model's verdicts."""
    import numpy as np

    x, _ = length_feature([len(v.output_2) for v in vs], [len(v.output_1) for v in vs])
    y = np.array([np.nan if v.outcome is None else v.outcome for v in vs])
    return x, y, np.array([inst_ids[v.instruction] for v in vs])


def _joint_fit(
    data: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n_inst: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(theta, phi, gamma) of the joint fit logit = theta_m + phi_m x + gamma_i over every model's verdicts."""
    import numpy as np
    from scipy.optimize import minimize

    M = len(data)
    keep = [~np.isnan(y) for _, y, _ in data]
    x = np.concatenate([d[0][k] for d, k in zip(data, keep)])
    y = np.concatenate([d[1][k] for d, k in zip(data, keep)])
    inst = np.concatenate([d[2][k] for d, k in zip(data, keep)])
    mod = np.concatenate([np.full(int(k.sum()), j) for j, k in enumerate(keep)])
    lam = np.concatenate(
        [np.full(M, INTERCEPT_PENALTY), np.full(M, SLOPE_PENALTY), np.full(n_inst, DIFFICULTY_PENALTY)]
    )

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        theta, phi, gamma = params[:M], params[M : 2 * M], params[2 * M :]
        eta = theta[mod] + phi[mod] * x + gamma[inst]
        nll = float(np.sum(np.logaddexp(0.0, eta) - y * eta))
        r = _sigmoid(eta) - y
        grad = np.concatenate([np.bincount(mod, r, M), np.bincount(mod, r * x, M), np.bincount(inst, r, n_inst)])
        return nll + 0.5 * float(np.sum(lam * params**2)), grad + lam * params

    res = minimize(loss, np.zeros(2 * M + n_inst), jac=True, method="L-BFGS-B", options={"maxiter": 2000})
    return res.x[:M], res.x[M : 2 * M], res.x[2 * M :]
