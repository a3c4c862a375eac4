"""Settling one reply: a final Rating for the item, or the delay before it is asked again.

`settle_in_run` is the one place where a reply's text enters a rating, whatever the path (direct, batch, Ray,
a plugin judge): it redacts the reply (the judge's key, the secret environment variables, anything that looks
like a key) before anything reads it, so no key reaches the store, the ratings file or the screen."""

from __future__ import annotations

import json
import time
from typing import Any

from alpagasus.engine.types import Item, RunCounts, RunOptions
from alpagasus.judges.base import Judge
from alpagasus.prompts.parse import pair_parsed
from alpagasus.prompts.rubric import Rubric
from alpagasus.records import Rating, Reply
from alpagasus.redact import redact


def label_floor(judge: Judge, opts: RunOptions) -> tuple[float, bool]:
    """(the label-mass floor of this run, whether the judge can answer a request in generate mode instead).
    The floor is the run's `min_label_mass`, else the judge's declared default (0.5 for API judges, which
    renormalise whatever labels show among the top log-probabilities; off for the others)."""
    floor = opts.min_label_mass if opts.min_label_mass is not None else judge.min_label_mass
    return float(floor or 0.0), bool(judge.generate_fallback)


def judge_secrets(judge: Judge) -> tuple[str, ...]:
    """What the judge declares secret (its API key, given in code, on the command line or in the environment),
    to redact wherever it appears."""
    return tuple(s for s in judge.secrets if isinstance(s, str) and s)


def scrub(rep: Reply, secrets: tuple[str, ...] = ()) -> Reply:
    """The reply with its text and error redacted, in place (whole texts: redacted before anyone truncates)."""
    if rep.error is not None:
        rep.error = redact(rep.error, secrets)
    if rep.text is not None:
        rep.text = redact(rep.text, secrets)
    return rep


def settle_in_run(
    it: Item,
    rep: Reply,
    judge_id: str,
    rubric: Rubric,
    opts: RunOptions,
    floor: tuple[float, bool],
    counts: RunCounts,
    secrets: tuple[str, ...] = (),
) -> tuple[Rating | None, float | None]:
    """settle() as a run (direct, batch, Ray) calls it: the reply is redacted first (`secrets`: the judge's key,
    see judge_secrets), a fallback to generate mode is counted, and a parser that fails keeps the raw reply as
    `unparsed` (it must never lose an item)."""
    mode = it.request.mode
    scrub(rep, secrets)
    try:
        rating, retry_after = settle(it, rep, judge_id, rubric, opts, *floor)
    except Exception as e:
        rating, retry_after = (
            Rating(
                it.key,
                judge_id,
                rubric.version,
                None,
                "unparsed",
                raw=rep.text,
                explanation=f"parser failed: {type(e).__name__}: {e}",
                attempts=it.attempts,
                created_at=time.time(),
            ),
            None,
        )
    if rating is not None:  # what settle() built from other fields (top tokens, a parser's reason) too
        rating.raw = None if rating.raw is None else redact(rating.raw, secrets)
        rating.explanation = None if rating.explanation is None else redact(rating.explanation, secrets)
    counts.fallbacks += it.request.mode != mode
    return rating, retry_after


def settle(
    it: Item, rep: Reply, judge_id: str, rubric: Rubric, opts: RunOptions, floor: float = 0.0, fallback: bool = False
) -> tuple[Rating | None, float | None]:
    """A final Rating for this item, or the delay before asking again. `floor`, `fallback`: see label_floor; a
    logprob reply under the floor is asked again in generate mode (`fallback`) or stored as `unparsed`."""
    base: dict[str, Any] = dict(
        example_id=it.key,
        judge=judge_id,
        prompt_version=rubric.version,
        model=rep.model,
        tokens_in=it.tokens_in,
        tokens_out=it.tokens_out,
        latency_s=it.latency_s,
        attempts=it.attempts,
        created_at=time.time(),
    )
    if rep.error is not None:
        if rep.retryable and it.attempts < opts.max_attempts:
            return None, max(opts.backoff(it.attempts), rep.retry_after or 0.0)
        return Rating(score=None, status="error", raw=rep.error, explanation=None, **base), None
    mass, top = (rep.extra or {}).get("label_mass"), (rep.extra or {}).get("top")
    if mass is not None and mass < floor:  # the labels were not what the judge was answering: no score
        it.extra["label_mass"] = mass
        if fallback and it.request.mode is None:
            it.request.mode = "generate"  # asked again for a written score; its tokens are charged to the item
            return None, 0.0
        return Rating(
            score=None,
            status="unparsed",
            probs=rep.probs,
            raw=json.dumps(top) if top else None,
            extra=rep.extra,
            explanation=f"the score labels held {mass:.3f} of the probability, under "
            f"the floor {floor:g} (--min-label-mass): not a score",
            **base,
        ), None
    if rep.pair is not None:  # a pairwise scorer's typed verdict: stored as a parsed review is
        return _pair_rating(it, rep, rubric, base), None
    if rep.score is not None:  # the backend computed the score itself (logprob, predictor)
        if rubric.in_scale(rep.score):
            return Rating(score=rep.score, status="ok", probs=rep.probs, raw=rep.text, extra=rep.extra, **base), None
        lo, hi = rubric.scale
        return Rating(
            score=None,
            status="unparsed",
            probs=rep.probs,
            raw=str(rep.score),
            extra=rep.extra,
            explanation=f"score {rep.score:g} outside the scale {lo:g}-{hi:g}",
            **base,
        ), None
    if rep.text is None:  # logprob mode with no probability on any label
        return Rating(
            score=None,
            status="unparsed",
            probs=rep.probs,
            raw=json.dumps(top) if top else None,
            extra=rep.extra,
            explanation="no probability on the score labels",
            **base,
        ), None
    parsed = rubric.parse(rep.text)
    if parsed.score is not None:
        extra = {**it.extra, **(rep.extra or {}), **(parsed.extra or {})} or None
        return Rating(
            score=parsed.score, status="ok", explanation=parsed.explanation, raw=rep.text, extra=extra, **base
        ), None
    if it.reasks < opts.max_reasks:
        it.reasks += 1
        it.request.temperature = 0.7  # the same greedy request would get the same reply
        return None, 0.0
    return Rating(
        score=None,
        status="unparsed",
        raw=rep.text,
        explanation=parsed.reason,
        extra={**it.extra, **(rep.extra or {}), "asks": it.reasks + 1},
        **base,
    ), None


def _pair_rating(it: Item, rep: Reply, rubric: Rubric, base: dict[str, Any]) -> Rating:
    """A pairwise scorer's PairScores as the store keeps a parsed review: score = Assistant 1's, extra["score_2"]
    = Assistant 2's; a score outside the scale is no verdict (`unparsed`), never clamped."""
    pair = rep.pair
    assert pair is not None
    if not (rubric.in_scale(pair.score_1) and rubric.in_scale(pair.score_2)):
        lo, hi = rubric.scale
        return Rating(
            score=None,
            status="unparsed",
            raw=f"{pair.score_1:g} {pair.score_2:g}",
            explanation=f"scores {pair.score_1:g} {pair.score_2:g} outside the scale {lo:g}-{hi:g}",
            extra=rep.extra,
            **base,
        )
    parsed = pair_parsed(pair)
    extra = {**it.extra, **(rep.extra or {}), **(parsed.extra or {})} or None
    return Rating(
        score=parsed.score, status="ok", explanation=parsed.explanation or None, raw=rep.text, extra=extra, **base
    )
