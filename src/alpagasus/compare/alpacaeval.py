"""AlpacaEval's published pairwise verdicts: reading them, and its win rate recomputed exactly.

The format is `results/<model>/<annotator>/annotations.json` in github tatsu-lab/alpaca_eval (a JSON list, one
judged model per file) or JSONL, optionally .gz, holding any number of judged models (the shared development
files): records {instruction, output_1, generator_1, output_2, generator_2, annotator, preference, ...}.
`output_1` is the reference answer (text-davinci-003 for AlpacaEval 1, gpt4_1106_preview for AlpacaEval 2),
`generator_2` the judged model.

`preference`, as alpaca_eval's code reads it (`metrics/helpers.py: BaseScoringRule.describe_head2head`):
1 = output_1 better, 2 = output_2 better, anything in [1, 2] is the judge's probability that output_2 is
better plus one (AlpacaEval 2's weighted judge); 1.5 and 0 are a draw (0 is replaced by 1.5: one half);
null (NaN) is no verdict and is DROPPED (`validate_alpacaeval_preference(..., is_allow_nan=False)`): it is not
counted in `n_total` and does not enter the win rate. win_rate = 100 x mean(preference - 1) over the rest.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from alpagasus.data import DataError, iter_objects

REQUIRED = ("instruction", "output_1", "output_2", "generator_2", "preference")


@dataclass(frozen=True)
class Verdict:
    """One published verdict: the reference answer (output_1) against a judged model's (output_2)."""

    instruction: str
    output_1: str
    output_2: str
    generator_1: str
    generator_2: str  # the judged model
    annotator: str
    preference: float | None  # as written: 1, 2, 1.5, 0, a value in [1, 2]; None = no verdict
    dataset: str | None = None
    source: str = ""  # "FILE, row N"

    @property
    def outcome(self) -> float | None:
        """AlpacaEval's score of output_2 in [0, 1]: preference - 1, a draw (1.5 or 0) 0.5; None: dropped."""
        return outcome(self.preference)

    @property
    def side(self) -> str | None:
        """The three-way verdict: "2" (the judged model won), "1" (the reference won), "tie", None (no verdict).
        A soft preference is decided by its side of 1.5, as alpaca_eval counts n_wins / n_wins_base."""
        o = self.outcome
        return None if o is None else "tie" if o == 0.5 else "2" if o > 0.5 else "1"


@dataclass(frozen=True)
class WinRate:
    """alpaca_eval's `get_winrate` for one judged model (percent), plus its length-controlled win rate when
    computed (compare/lc.py)."""

    model: str
    win_rate: float | None  # 100 x mean(preference - 1), draws one half, nulls dropped
    standard_error: float | None  # 100 x standard error of the mean (ddof 1)
    discrete_win_rate: float | None  # the same with each preference rounded to 1 / 2 (1.5 stays a draw)
    n_wins: int  # preference - 1 > 0.5
    n_wins_base: int  # preference - 1 < 0.5
    n_draws: int  # preference 1.5 or 0
    n_total: int  # verdicts counted (nulls left out)
    n_null: int  # verdicts with no preference (dropped, as alpaca_eval does)
    avg_length: float | None  # mean characters of the judged model's answers
    length_controlled_winrate: float | None = None


def outcome(preference: float | None) -> float | None:
    """An AlpacaEval preference as the judged model's score in [0, 1]; None for null (dropped)."""
    if preference is None or (isinstance(preference, float) and math.isnan(preference)):
        return None
    return 0.5 if preference == 0 else float(preference) - 1.0


def _preference(value: Any, where: str) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(
            f"{where}, field 'preference': expected 1, 2, 1.5, 0, null or a number in [1, 2], got {value!r}"
        )
    p = float(value)
    if p != 0 and not 1.0 <= p <= 2.0:
        raise DataError(f"{where}, field 'preference': {value!r} is outside [1, 2] (and not 0, a draw)")
    return p


def _text(rec: dict, name: str, where: str) -> str:
    value = rec.get(name)
    if not isinstance(value, str):
        got = "missing" if name not in rec else f"not a string ({type(value).__name__})"
        raise DataError(f"{where}, field '{name}': {got} (AlpacaEval annotations have {', '.join(REQUIRED)})")
    return value


def read_annotations(paths: str | Path | Sequence[str | Path]) -> list[Verdict]:
    """Every verdict of AlpacaEval annotation files (JSON list or JSONL, optionally .gz), in file order. A bad
    record raises DataError naming the file, the row and the field."""
    out: list[Verdict] = []
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        for row, rec in iter_objects(path):
            where = f"{path}, row {row}"
            if "preference" not in rec:
                raise DataError(
                    f"{where}, field 'preference': missing (AlpacaEval annotations have {', '.join(REQUIRED)})"
                )
            ds = rec.get("dataset")
            out.append(
                Verdict(
                    _text(rec, "instruction", where),
                    _text(rec, "output_1", where),
                    _text(rec, "output_2", where),
                    str(rec.get("generator_1") or "reference"),
                    _text(rec, "generator_2", where),
                    str(rec.get("annotator") or "unknown"),
                    _preference(rec["preference"], where),
                    ds if isinstance(ds, str) else None,
                    where,
                )
            )
    return out


def by_model(verdicts: Iterable[Verdict]) -> dict[str, list[Verdict]]:
    """The verdicts grouped by judged model (generator_2), models in first-seen order."""
    groups: dict[str, list[Verdict]] = defaultdict(list)
    for v in verdicts:
        groups[v.generator_2].append(v)
    return dict(groups)


def win_rate(verdicts: Sequence[Verdict], model: str | None = None) -> WinRate:
    """alpaca_eval's head-to-head figures for one judged model's verdicts (raw, not length controlled)."""
    scores = [o for o in (v.outcome for v in verdicts) if o is not None]
    n = len(scores)
    mean = sum(scores) / n if n else None
    sem = None
    if n > 1 and mean is not None:
        sem = 100 * math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1) / n)
    # ZeroOneScoringRule: each preference rounded to 1 or 2 (a draw stays one half)
    discrete = [0.5 if s == 0.5 else float(round(s + 1.0) - 1) for s in scores]
    lengths = [len(v.output_2) for v in verdicts]
    return WinRate(
        model if model is not None else (verdicts[0].generator_2 if verdicts else ""),
        100 * mean if mean is not None else None,
        sem,
        100 * sum(discrete) / n if n else None,
        sum(s > 0.5 for s in scores),
        sum(s < 0.5 for s in scores),
        sum(s == 0.5 for s in scores),
        n,
        len(verdicts) - n,
        sum(lengths) / len(lengths) if lengths else None,
    )


def win_rates(verdicts: Iterable[Verdict]) -> dict[str, WinRate]:
    """`win_rate` per judged model."""
    return {m: win_rate(vs, m) for m, vs in by_model(verdicts).items()}
