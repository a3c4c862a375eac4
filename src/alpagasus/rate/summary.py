"""What rating returns, typed: `RateSummary` (rate, rate_file, Ray) and `CascadeSummary` (`--cascade`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from alpagasus.engine.types import RunCounts
from alpagasus.records import InvalidRow

__all__ = ["RateSummary", "CascadeSummary"]


@dataclass
class CascadeSummary:
    """What the cascade did and what it guarantees (`RateSummary.cascade`)."""

    rows: int  # rows the cascade decided (valid, unique, not empty)
    sample: int  # rated by the strong judge first
    band: int  # other rows rated by the strong judge (all of them when it gave up)
    strong_rows: int
    calls_saved: int
    strong_fraction: float
    start: str  # the predictor used: shipped / distilled / combined ("" if none)
    predictor: str | None  # the predictors' judge ids ("+" between two)
    predictor_folder: str | None  # the distilled predictor's folder, where it is used
    predictor_requests: int
    decided: dict[str, int]
    lo: float
    hi: float
    targets: tuple[float, float]  # recall, precision
    confidence: float
    recall_bound: float  # one-sided lower confidence bounds (1.0: exact)
    precision_bound: float
    certification_rows: int
    auc: dict[str, float]  # each candidate's ROC-AUC on the sample's comparison rows
    gave_up: bool
    note: str

    @property
    def guarantee(self) -> str:
        """The summary's wording: what holds, and with what confidence."""
        r, p = self.targets
        if not self.predictor:
            return (
                "exact: every row was rated by the strong judge, so the kept set is the strong judge's own "
                "(recall = precision = 1)"
            )
        return (
            f"with {self.confidence:.0%} confidence, the kept set's recall >= {r} and precision >= {p} against "
            f"the strong judge alone (lower bounds {self.recall_bound:.3f} and {self.precision_bound:.3f}, "
            f"from {self.certification_rows} sample rows the band was not chosen on)"
        )


@dataclass
class RateSummary:
    """What rating did. This layer's own counts (the input's rows, what the store already held, flagged rows)
    beside the judging run's (`run`, written by the engine only)."""

    judge: str = ""
    prompt_version: str = ""
    rows: int = 0  # rows read from the input
    duplicates: int = 0
    invalid: list[InvalidRow] = field(default_factory=list)
    already_rated: int = 0  # found in the store: not requested again
    empty: int = 0  # empty instruction or output: not sent (unless rate_empty), never selected
    flagged: int = 0  # rows flagged as possible prompt injection (see rate/injection.py)
    run: RunCounts = field(default_factory=RunCounts)
    note: str = ""  # e.g. "nothing to do: ..." when a rerun finds the ratings file up to date
    up_to_date: bool = False  # the ratings file was already up to date: nothing read, nothing written
    cascade: CascadeSummary | None = None  # --cascade: sample, band, calls saved, guarantee (rate/cascade.py)

    @property
    def unique(self) -> int:
        """Distinct valid examples: those the store held, those judged now, and the empty ones."""
        return self.already_rated + self.run.to_judge + self.empty
