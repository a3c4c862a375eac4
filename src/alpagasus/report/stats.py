"""`alpagasus report`'s numbers: what a ratings file says, so its scores are looked at before they are trusted.

Score bins (the paper's histogram), rows kept per threshold, the paper's keyword check (does filtering starve
coding examples?), score against response length, and agreement between two ratings of the same data.
This module only counts: `report.build` reads the files and `report.html` draws the page.
"""
from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any, Iterable, Sequence

from alpagasus.report.figures import clean
from alpagasus.report.ratings import EXAMPLE_FIELDS, is_rated
from alpagasus.select.rules import BINS, bin_counts, score_bin, select

# The paper's coding keywords; matched case-sensitively as substrings, which is why both cases are listed.
DEFAULT_KEYWORDS = ("Java", "java", "C++", "c++", "C#", "c#", "Python", "python")
STEP = 0.25          # spacing of the kept-per-threshold curve
SNIPPET = 200        # characters of an instruction kept in summary.json


def thresholds(max_score: float = 5.0, extra: Iterable[float] = ()) -> list[float]:
    """0, 0.25, ... up to the top of the scale (5, or higher for a judge run with a wider --scale)."""
    top = max(5.0, math.ceil(max_score))
    grid = {round(i * STEP, 4) for i in range(int(top / STEP) + 1)}
    return sorted(grid | {float(t) for t in extra})


def kept_at(rows: Sequence[dict[str, Any]], ths: Iterable[float]) -> dict[str, int]:
    """Threshold (as a string: "4.5") -> rows the paper's rule `score >= threshold` keeps."""
    return {f"{t:g}": len(select(rows, "threshold", threshold=t)) for t in ths}


def has_keyword(row: dict[str, Any], keywords: Sequence[str]) -> bool:
    text = "\n".join(str(row.get(f) or "") for f in EXAMPLE_FIELDS)
    return any(k in text for k in keywords)


def _group(rows: list[dict[str, Any]], ths: list[float]) -> dict[str, Any]:
    rated = [float(r["score"]) for r in rows if is_rated(r)]
    return {"rows": len(rows), "rated": len(rated), "mean_score": _mean(rated), "bins": bin_counts(rows),
            "kept_at": kept_at(rows, ths)}


def keyword_split(rows: Sequence[dict[str, Any]], keywords: Sequence[str], ths: list[float]) -> dict[str, Any]:
    """The rows mentioning any keyword against the rest (rows with text only: invalid input has none)."""
    texts = [r for r in rows if r.get("status") != "invalid_input"]
    hit = [r for r in texts if has_keyword(r, keywords)]
    rest = [r for r in texts if not has_keyword(r, keywords)]
    return {"set": list(keywords), **_group(hit, ths), "rest": _group(rest, ths),
            "per_keyword": {k: sum(has_keyword(r, [k]) for r in texts) for k in keywords}}


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, tied values sharing the average of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho (scipy's when installed); None when undefined (fewer than 2 pairs or a constant side)."""
    if len(x) != len(y):
        raise ValueError("spearman: sequences differ in length")
    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    try:
        from scipy.stats import spearmanr
    except ImportError:
        rx, ry = _ranks(x), _ranks(y)
        mx, my = _mean(rx), _mean(ry)
        cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
        var = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
        return cov / var
    return float(spearmanr(x, y).statistic)


def length_analysis(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Score against response length in characters (the measure `select --longest` ranks by)."""
    rated = [r for r in rows if is_rated(r)]
    lengths = [len(str(r.get("output") or "")) for r in rated]
    scores = [float(r["score"]) for r in rated]
    by_bin: dict[str, list[int]] = {b: [] for b in BINS}
    for n, s in zip(lengths, scores):
        by_bin[score_bin(s)].append(n)
    return {"spearman": spearman(lengths, scores), "n": len(rated), "unit": "characters of output",
            "median_length_by_bin": {b: _median(v) for b, v in by_bin.items()}}


def _median(xs: list[int]) -> float | None:
    if not xs:
        return None
    s, m = sorted(xs), len(xs) // 2
    return float(s[m]) if len(s) % 2 else (s[m - 1] + s[m]) / 2


def cohen_kappa(a: Sequence[bool], b: Sequence[bool]) -> float | None:
    """Cohen's kappa of two yes/no raters; None when chance agreement is already 1 (both constant, equal)."""
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b)) / n
    pa, pb = sum(a) / n, sum(b) / n
    chance = pa * pb + (1 - pa) * (1 - pb)
    return None if chance == 1 else (observed - chance) / (1 - chance)


def agreement(rows_a: Sequence[dict[str, Any]], rows_b: Sequence[dict[str, Any]], threshold: float,
              top: int = 10) -> dict[str, Any]:
    """Two ratings of the same data, matched on the example id; only rows both judges scored count."""
    a = {r["id"]: r for r in rows_a if r.get("id") and is_rated(r)}
    b = {r["id"]: r for r in rows_b if r.get("id") and is_rated(r)}
    common = [i for i in a if i in b]  # file order of A
    sa = [float(a[i]["score"]) for i in common]
    sb = [float(b[i]["score"]) for i in common]
    keep_a, keep_b = [s >= threshold for s in sa], [s >= threshold for s in sb]
    confusion = {x: dict.fromkeys(BINS, 0) for x in BINS}
    for x, y in zip(sa, sb):
        confusion[score_bin(x)][score_bin(y)] += 1
    order = sorted(range(len(common)), key=lambda k: -abs(sa[k] - sb[k]))  # stable: file order on ties
    worst = [{"id": common[k], "score_a": sa[k], "score_b": sb[k], "diff": sb[k] - sa[k],
              "instruction": clean(a[common[k]].get("instruction") or "")[:SNIPPET]}
             for k in order[:top] if sa[k] != sb[k]]
    pairs = list(zip(keep_a, keep_b))
    return {
        "common": len(common),
        "only_a": len(a) - len(common),
        "only_b": sum(i not in a for i in b),
        "threshold": threshold,
        "spearman": spearman(sa, sb),
        "kappa": cohen_kappa(keep_a, keep_b),
        "keep": {"both": pairs.count((True, True)), "a_only": pairs.count((True, False)),
                 "b_only": pairs.count((False, True)), "neither": pairs.count((False, False))},
        "decision_agreement": _mean([float(x == y) for x, y in pairs]),
        "mean_abs_diff": _mean([abs(x - y) for x, y in zip(sa, sb)]),
        "confusion": confusion,
        "most_disagreeing": worst,
    }


def pick_examples(rows: Sequence[dict[str, Any]], per_bin: int, seed: int = 0) -> dict[str, list[dict]]:
    """A few rated rows per bin, drawn at random (seeded) and shown in file order."""
    by_bin: dict[str, list[dict]] = {b: [] for b in BINS}
    for r in rows:
        if is_rated(r):
            by_bin[score_bin(float(r["score"]))].append(r)
    rng = random.Random(seed)
    return {b: [v[i] for i in sorted(rng.sample(range(len(v)), min(per_bin, len(v))))] for b, v in by_bin.items()}


def label(path: str | Path, rows: Sequence[dict[str, Any]]) -> str:
    """A rating file's name for the page: its judge and prompt version, else the file name."""
    first = next((r for r in rows if r.get("judge")), {})
    judge = " ".join(str(first[k]) for k in ("judge", "prompt_version") if first.get(k))
    return clean(f"{Path(path).name} ({judge})" if judge else Path(path).name)


def summarize(rows: Sequence[dict[str, Any]], keywords: Sequence[str] = DEFAULT_KEYWORDS,
              threshold: float = 4.5) -> dict[str, Any]:
    """Every number of the report for one ratings file (the body of summary.json, without agreement)."""
    scores = [float(r["score"]) for r in rows if is_rated(r)]
    ths = thresholds(max(scores, default=5.0), extra=[threshold])
    statuses = [r.get("status") for r in rows]
    length = length_analysis(rows)
    return {
        "total": len(rows),
        "rated": len(scores),
        "unparsed": statuses.count("unparsed"),
        "invalid": statuses.count("invalid_input"),
        "error": statuses.count("error"),
        "flagged": sum(bool(r.get("flags")) for r in rows),
        "score_range": [min(scores), max(scores)] if scores else None,
        "mean_score": _mean(scores),
        "bins": bin_counts(rows),
        "threshold": threshold,
        "kept_at": kept_at(rows, ths),
        "keywords": keyword_split(rows, keywords, ths),
        "length_spearman": length["spearman"],
        "length": length,
    }
