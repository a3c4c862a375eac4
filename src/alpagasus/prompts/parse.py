"""Parsers for judge replies. A reply with no score, or one outside the scale, yields None with a reason:
never 0, -1 or a clamped value."""

from __future__ import annotations

import re
from dataclasses import dataclass

from alpagasus.records import PairScores

WORDS = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}
NUM = r"(-?\d+(?:\.\d+)?|" + "|".join(WORDS) + r")"
THINK = re.compile(r"<think>.*?(</think>|$)", re.S | re.I)
# "4.5/5", "4 out of 5"
FRACTION = re.compile(NUM + r"\s*(?:/|out of)\s*(\d+(?:\.\d+)?)", re.I)
LABELLED = re.compile(r"\b(?:score|rating|grade|rated)\w*\s*(?:is|of|:|=|-)?\s*[*_\s]*" + NUM, re.I)
FIRST_NUMBER = re.compile(r"(?<![\w.])" + NUM + r"(?![\w])", re.I)


@dataclass
class Parsed:
    score: float | None
    explanation: str
    reason: str = ""  # why score is None
    extra: dict | None = None  # further values (a pairwise review's second score)


def _value(token: str) -> float:
    t = token.lower()
    return float(WORDS[t]) if t in WORDS else float(t)


def _clean(text: str) -> str:
    return THINK.sub("", text).replace("**", "").replace("__", "").strip()


def parse_score(text: str | None, lo: float = 0, hi: float = 5) -> Parsed:
    """Score from a rating reply: first-line number ("4.5"), "Score: 4", "4.5/5", "**4**",
    "Rating: 4 out of 5", "four". The explanation is what follows the line holding the score."""
    if text is None or not text.strip():
        return Parsed(None, "", "empty reply")
    body = _clean(text)
    if not body:
        return Parsed(None, "", "no text outside <think>")
    lines = body.splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        value = _from_line(line, hi, first=i == 0 or not any(l.strip() for l in lines[:i]))
        if value is None:
            continue
        if isinstance(value, str):
            return Parsed(None, body, value)
        if not lo <= value <= hi:
            return Parsed(None, body, f"score {value:g} outside the scale {lo:g}-{hi:g}")
        rest = "\n".join(lines[i + 1 :]).strip()
        return Parsed(value, rest or line.strip())
    return Parsed(None, body, "no score found")


def _from_line(line: str, hi: float, first: bool) -> float | str | None:
    m = FRACTION.search(line)
    if m:
        denom = float(m.group(2))
        if denom != hi:
            return f"score given on another scale ({m.group(0)})"
        return _value(m.group(1))
    m = LABELLED.search(line)
    if m:
        return _value(m.group(1))
    if first:  # the paper asks for the score alone on the first line
        m = FIRST_NUMBER.search(line)
        if m and (len(line.split()) <= 3 or m.start() == 0):
            return _value(m.group(1))
    return None


def parse_pair_scores(text: str | None, lo: float = 1, hi: float = 10) -> tuple[PairScores | None, str]:
    """A written review parsed into the typed pairwise verdict (what a pairwise scorer returns directly), with
    the explanation that follows the score line; (None, why) when it holds no pair of scores in the scale."""
    scores, reason = parse_pair(text, lo, hi)
    if scores is None:
        return None, reason
    body = _clean(text or "")
    lines = body.splitlines()
    first = next((i for i, l in enumerate(lines) if l.strip()), 0)
    # the explanation follows the score line; a reply that names the scores inside prose is kept whole
    rest = "\n".join(lines[first + 1 :]).strip() if _pair_first_line(lines[first] if lines else "") else body
    return PairScores(scores[0], scores[1], rest), ""


def pair_parsed(pair: PairScores) -> Parsed:
    """A pairwise verdict in the shape the judging loop stores: score = Assistant 1's, extra["score_2"] =
    Assistant 2's (a parsed review and a scorer's PairScores are stored alike)."""
    return Parsed(pair.score_1, pair.explanation, extra={"score_2": pair.score_2})


def parse_pair_reply(text: str | None, lo: float = 1, hi: float = 10) -> Parsed:
    """A written review in the shape the judging loop stores (see pair_parsed)."""
    pair, reason = parse_pair_scores(text, lo, hi)
    return pair_parsed(pair) if pair is not None else Parsed(None, _clean(text or ""), reason)


_PN = r"(-?\d+(?:\.\d+)?)"
_OUT_OF = r"(?:\s*(?:/|out\s+of)\s*(\d+(?:\.\d+)?))?"
# "8 7", "8, 7", "8.5 7", "Scores: 8 7", "8/10 7/10", "8 and 7" alone on the line
PAIR_FIRST_LINE = re.compile(
    r"^\s*(?:(?:overall\s+)?scores?\s*[:=\-]?\s*)?"
    + _PN
    + _OUT_OF
    + r"(?:\s*[,;]\s*|\s+and\s+|\s+)"
    + _PN
    + _OUT_OF
    + r"\s*\.?\s*$",
    re.I,
)
# "Assistant 1: 8", "Assistant 1 receives a score of 8 out of 10", "Assistant 2 (score 7/10)"
PAIR_LABEL = re.compile(r"assistant\s*([12])\b([^\d\n]{0,40}?)" + _PN + _OUT_OF, re.I)
# words between "Assistant N" and a number that make the number a score (not "provided 3 examples")
SCORE_WORDS = re.compile(r"scor|rat(e|ed|ing)\b|grade|receiv|get|earn|deserv|give|award|point", re.I)


def _pair_first_line(line: str) -> re.Match | None:
    return PAIR_FIRST_LINE.match(line)


def _labelled_pair(body: str) -> tuple[tuple[str, str | None], tuple[str, str | None]] | None:
    """The first number tied to "Assistant 1" and the first tied to "Assistant 2", in either order."""
    found: dict[str, tuple[str, str | None]] = {}
    for m in PAIR_LABEL.finditer(body):
        who, gap, value, denom = m.group(1), m.group(2), m.group(3), m.group(4)
        if who in found:
            continue
        if not re.search(r"[a-z]", gap, re.I) or SCORE_WORDS.search(gap) or denom:
            found[who] = (value, denom)
    return (found["1"], found["2"]) if len(found) == 2 else None


def parse_pair(text: str | None, lo: float = 1, hi: float = 10) -> tuple[tuple[float, float] | None, str]:
    """Two scores (Assistant 1, Assistant 2) from a pairwise review; the paper asks for them alone on the
    first line, separated by a space. Returns (scores or None, reason)."""
    if text is None or not text.strip():
        return None, "empty reply"
    body = _clean(text)
    first = next((l for l in body.splitlines() if l.strip()), "")
    m = _pair_first_line(first)
    pair = ((m.group(1), m.group(2)), (m.group(3), m.group(4))) if m else _labelled_pair(body)
    if pair is None:
        return None, "no pair of scores found"
    (a, da), (b, db) = pair
    for d in (da, db):
        if d is not None and float(d) != hi:
            return None, f"scores given on another scale (out of {d})"
    x, y = float(a), float(b)
    if not (lo <= x <= hi and lo <= y <= hi):
        return None, f"scores {x:g} {y:g} outside the scale {lo:g}-{hi:g}"
    return (x, y), ""
