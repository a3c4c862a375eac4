"""`alpagasus report`'s numbers: what a ratings file says, so its scores are looked at before they are trusted.

Score bins (the paper's histogram), rows kept per threshold, the paper's keyword check (does filtering starve
coding examples?), score against response length, and agreement between two ratings of the same data.
This module only counts, from the flat columns of a `report.scan.Scan` (never from a list of row dicts, so
a large file is summarized in a few megabytes): `report.build` reads the files and `report.html` draws the page.
The functions taking rows (`summarize`, `agreement`, `pick_examples`) scan them first, for rows in memory.
"""

from __future__ import annotations

import heapq
import math
import random
from array import array
from bisect import bisect_left
from pathlib import Path
from typing import Any, Iterable, Sequence

from alpagasus.report.figures import clean
from alpagasus.report.ratings import row_sample
from alpagasus.report.scan import Scan, has_keyword, scan_rows
from alpagasus.select.rules import BINS, score_bin

__all__ = [
    "DEFAULT_KEYWORDS",
    "thresholds",
    "has_keyword",
    "spearman",
    "cohen_kappa",
    "summarize_scan",
    "agreement_of",
    "example_lines",
    "summarize",
    "agreement",
    "pick_examples",
    "label",
]

# The paper's coding keywords; matched case-sensitively as substrings, which is why both cases are listed.
DEFAULT_KEYWORDS = ("Java", "java", "C++", "c++", "C#", "c#", "Python", "python")
STEP = 0.25  # spacing of the kept-per-threshold curve
SNIPPET = 200  # characters of a prompt kept in summary.json


def thresholds(max_score: float = 5.0, extra: Iterable[float] = ()) -> list[float]:
    """0, 0.25, ... up to the top of the scale (5, or higher for a judge run with a wider --scale)."""
    top = max(5.0, math.ceil(max_score))
    grid = {round(i * STEP, 4) for i in range(int(top / STEP) + 1)}
    return sorted(grid | {float(t) for t in extra})


def kept_at(scores: Sequence[float], ths: Iterable[float]) -> dict[str, int]:
    """Threshold (as a string: "4.5") -> scores at or above it: the rows the paper's rule `score >= t` keeps
    (`select --threshold`), counted by bisection of one sorted copy instead of a pass per threshold."""
    ordered = sorted(scores)
    return {f"{t:g}": len(ordered) - bisect_left(ordered, t) for t in ths}


def bins_of(scores: Iterable[float]) -> dict[str, int]:
    counts = dict.fromkeys(BINS, 0)
    for x in scores:
        counts[score_bin(x)] += 1
    return counts


def _group(rows: int, scores: Sequence[float], ths: list[float]) -> dict[str, Any]:
    return {
        "rows": rows,
        "rated": len(scores),
        "mean_score": _mean(scores),
        "bins": bins_of(scores),
        "kept_at": kept_at(scores, ths),
    }


def keyword_split(scan: Scan, ths: list[float]) -> dict[str, Any]:
    """The rows mentioning any keyword against the rest (rows with text only: invalid input has none)."""
    return {
        "set": list(scan.keywords),
        **_group(scan.keyword_rows, scan.with_keyword(), ths),
        "rest": _group(scan.text_rows - scan.keyword_rows, scan.without_keyword(), ths),
        "per_keyword": dict(zip(scan.keywords, scan.per_keyword)),
    }


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None  # summed in file order, as always: the same float to the last bit


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, tied values sharing the average of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def _constant(xs: Sequence[float]) -> bool:
    """All values equal (no set of 200k floats built to find out)."""
    return all(x == xs[0] for x in xs)


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho (scipy's when installed); None when undefined (fewer than 2 pairs or a constant side).
    Takes lists or flat arrays (array('d'), array('q'))."""
    if len(x) != len(y):
        raise ValueError("spearman: sequences differ in length")
    if len(x) < 2 or _constant(x) or _constant(y):
        return None
    try:
        from scipy.stats import spearmanr
    except ImportError:
        rx, ry = ranks(x), ranks(y)
        mx, my = sum(rx) / len(rx), sum(ry) / len(ry)  # len >= 2 here
        cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
        var = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
        return cov / var
    return float(spearmanr(x, y).statistic)


def length_analysis(scan: Scan) -> dict[str, Any]:
    """Score against response length in characters (the measure `select --longest` ranks by)."""
    by_bin: dict[str, array] = {b: array("q") for b in BINS}
    for n, s in zip(scan.lengths, scan.scores):
        by_bin[score_bin(s)].append(n)
    return {
        "spearman": spearman(scan.lengths, scan.scores),
        "n": len(scan.scores),
        "unit": "characters of the response",
        "median_length_by_bin": {b: _median(v) for b, v in by_bin.items()},
    }


def _median(xs: Sequence[int]) -> float | None:
    if not xs:
        return None
    s, m = sorted(xs), len(xs) // 2
    return float(s[m]) if len(s) % 2 else (s[m - 1] + s[m]) / 2


def cohen_kappa(a: Sequence[bool] | bytearray, b: Sequence[bool] | bytearray) -> float | None:
    """Cohen's kappa of two yes/no raters; None when chance agreement is already 1 (both constant, equal)."""
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b)) / n
    pa, pb = sum(a) / n, sum(b) / n
    chance = pa * pb + (1 - pa) * (1 - pb)
    return None if chance == 1 else (observed - chance) / (1 - chance)


def _common(a: Scan, b: Scan) -> tuple[list[Any], array, array, array]:
    """The ids both files rated, in A's order of first appearance, with both scores and A's line of the id."""
    ids, sa, sb, lines = [], array("d"), array("d"), array("q")
    b_ids = b.ids or {}
    for ident, slot in (a.ids or {}).items():
        other = b_ids.get(ident)
        if other is not None:
            ids.append(ident)
            sa.append(a.id_score[slot])
            sb.append(b.id_score[other])
            lines.append(a.id_line[slot])
    return ids, sa, sb, lines


def agreement_of(a: Scan, b: Scan, threshold: float, top: int = 10) -> tuple[dict[str, Any], list[int]]:
    """Two ratings of the same data (scans made with ids=True), matched on the example id; only rows both
    judges scored count. Returns the agreement and the lines of A holding the `most_disagreeing` rows, whose
    "prompt" is left empty for `fill_prompts` (so one second pass reads them with the examples)."""
    ids, sa, sb, lines = _common(a, b)
    keep = {"both": 0, "a_only": 0, "b_only": 0, "neither": 0}
    confusion = {x: dict.fromkeys(BINS, 0) for x in BINS}
    names = {(True, True): "both", (True, False): "a_only", (False, True): "b_only", (False, False): "neither"}
    for x, y in zip(sa, sb):
        confusion[score_bin(x)][score_bin(y)] += 1
        keep[names[(x >= threshold, y >= threshold)]] += 1
    # the largest |difference| first, file order on ties (a stable sort's first `top`)
    order = heapq.nsmallest(top, range(len(ids)), key=lambda k: (-abs(sa[k] - sb[k]), k))
    shown = [k for k in order if sa[k] != sb[k]]
    worst = [{"id": ids[k], "score_a": sa[k], "score_b": sb[k], "diff": sb[k] - sa[k], "prompt": ""} for k in shown]
    n = len(ids)
    keep_a = bytearray(x >= threshold for x in sa)
    keep_b = bytearray(y >= threshold for y in sb)
    return {
        "common": n,
        "only_a": len(a.ids or {}) - n,
        "only_b": len(b.ids or {}) - n,
        "threshold": threshold,
        "spearman": spearman(sa, sb),
        "kappa": cohen_kappa(keep_a, keep_b),
        "keep": keep,
        "decision_agreement": (keep["both"] + keep["neither"]) / n if n else None,
        "mean_abs_diff": _mean(array("d", (abs(x - y) for x, y in zip(sa, sb)))),
        "confusion": confusion,
        "most_disagreeing": worst,
    }, [lines[k] for k in shown]


def fill_prompts(agr: dict[str, Any], lines: list[int], rows: dict[int, dict[str, Any]]) -> None:
    """Put the prompt snippets (`Example.prompt`, the sample read in its own format) into `most_disagreeing`,
    from the rows read back by line."""
    for w, line in zip(agr["most_disagreeing"], lines):
        ex = row_sample(rows[line])
        w["prompt"] = clean(ex.prompt if ex is not None else "")[:SNIPPET]


def example_lines(scan: Scan, per_bin: int, seed: int = 0) -> dict[str, list[int]]:
    """A few rated rows per bin, drawn at random (seeded) and shown in file order; their lines. The draw
    depends only on the bins' sizes, so it picks exactly the rows that drawing from lists of rows picked."""
    by_bin: dict[str, array] = {b: array("q") for b in BINS}
    for x, line in zip(scan.scores, scan.lines):
        by_bin[score_bin(x)].append(line)
    rng = random.Random(seed)
    return {b: [v[i] for i in sorted(rng.sample(range(len(v)), min(per_bin, len(v))))] for b, v in by_bin.items()}


def label(path: str | Path, judge: dict[str, Any]) -> str:
    """A rating file's name for the page: its judge and prompt version (`Scan.judge`), else the file name."""
    text = " ".join(str(judge[k]) for k in ("judge", "prompt_version") if judge.get(k))
    return clean(f"{Path(path).name} ({text})" if text else Path(path).name)


def summarize_scan(scan: Scan, threshold: float = 4.5) -> dict[str, Any]:
    """Every number of the report for one ratings file (the body of summary.json, without agreement)."""
    scores = scan.scores
    ths = thresholds(max(scores, default=5.0), extra=[threshold])
    length = length_analysis(scan)
    return {
        "total": scan.total,
        "rated": len(scores),
        "unparsed": scan.status["unparsed"],
        "invalid": scan.status["invalid_input"],
        "error": scan.status["error"],
        "empty": scan.status["empty"],
        "flagged": scan.flagged,
        "score_range": [min(scores), max(scores)] if scores else None,
        "mean_score": _mean(scores),
        "bins": bins_of(scores),
        "threshold": threshold,
        "kept_at": kept_at(scores, ths),
        "keywords": keyword_split(scan, ths),
        "length_spearman": length["spearman"],
        "length": length,
        "label_mass": label_mass_stats(scan.masses),
    }


def label_mass_stats(masses: Sequence[float], floor: float = 0.5) -> dict[str, Any] | None:
    """How much probability a logprob judge's score labels held (None when no row says): the median, and the
    share under the floor (the default --min-label-mass of API judges): rows whose "score" was no answer."""
    if not masses:
        return None
    ordered = sorted(masses)
    n = len(ordered)
    median = (ordered[(n - 1) // 2] + ordered[n // 2]) / 2
    under = bisect_left(ordered, floor)
    return {"rows": n, "median": median, "floor": floor, "under_floor": under, "share_under_floor": under / n}


# ---- the same for rows already in memory -------------------------------------------------------------------
def summarize(
    rows: Sequence[dict[str, Any]], keywords: Sequence[str] = DEFAULT_KEYWORDS, threshold: float = 4.5
) -> dict[str, Any]:
    return summarize_scan(scan_rows(rows, keywords), threshold)


def agreement(
    rows_a: Sequence[dict[str, Any]], rows_b: Sequence[dict[str, Any]], threshold: float, top: int = 10
) -> dict[str, Any]:
    a = scan_rows(rows_a, ids=True)
    agr, lines = agreement_of(a, scan_rows(rows_b, ids=True), threshold, top)
    fill_prompts(agr, lines, a.rows_at(lines))
    return agr


def pick_examples(rows: Sequence[dict[str, Any]], per_bin: int, seed: int = 0) -> dict[str, list[dict]]:
    return {b: [rows[i] for i in v] for b, v in example_lines(scan_rows(rows), per_bin, seed).items()}
