"""The judge card: what `alpagasus judge-check` measured of a judge, as a typed record written to JSON.

`find_card(judge)` looks for a judge's card among the shipped ones (judgecheck/cards/*.json) and in the
folders of $ALPAGASUS_CARDS (separated like PATH), matching the judge's name before its version (`@digest`,
`#mode`); `caveat(judge, kind)` is the one line `compare`, the run's final report and `report` print beside a
judge's verdicts: what the judge is, its card's key figures beside the longer-answer rule's, and its length
preference when strong. A judge with no card falls back to compare/known_agreement.json (hand-written notes).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from alpagasus.data import DataError, write_json
from alpagasus.judgecheck.metrics import PairwiseFigures, RatingFigures, pairwise_length_reading, rating_length_reading

CARDS_ENV = "ALPAGASUS_CARDS"
FORMAT = 1


@dataclass
class ReferenceInfo:
    format: str  # alpacaeval | alpagasus-reviews | labels
    files: list[str]
    annotator: str  # whose verdicts (AlpacaEval's annotator, or the decision column)
    rows: int  # rows read
    items: int  # items the figures are over (after filters and the sample)
    filters: dict[str, Any] = field(default_factory=dict)  # uniform column, holdout...
    skipped: dict[str, int] = field(default_factory=dict)


@dataclass
class SampleInfo:
    n: int | None  # asked for (None: every item)
    seed: int
    method: str  # "all" | "uniform" | "stratified by judged model" | "stratified by decision"


@dataclass
class JudgeCard:
    judge: str  # the spec as given
    judge_id: str  # the id the store keeps its replies under (with the version)
    kind: str  # "pairwise" | "rating"
    description: str  # what the judge is, in a phrase
    reference: ReferenceInfo
    sample: SampleInfo
    figures: PairwiseFigures | RatingFigures
    baselines: dict[str, PairwiseFigures | RatingFigures]
    reference_figures: PairwiseFigures | None = None  # the reference's own (its ties, length preference)
    length_preference: str = ""
    requests: dict[str, Any] = field(default_factory=dict)  # sent, found in the store, tokens, cost
    command: str = ""
    date: str = ""
    version: str = ""  # alpagasus's
    format: int = FORMAT

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict, source: str = "card") -> JudgeCard:
        try:
            figs = PairwiseFigures if d["kind"] == "pairwise" else RatingFigures
            ref_figs = d.get("reference_figures")
            return cls(
                **{
                    **_known(cls, d),
                    "reference": ReferenceInfo(**_known(ReferenceInfo, d["reference"])),
                    "sample": SampleInfo(**_known(SampleInfo, d["sample"])),
                    "figures": figs(**_known(figs, d["figures"])),
                    "baselines": {k: figs(**_known(figs, v)) for k, v in d["baselines"].items()},
                    "reference_figures": PairwiseFigures(**_known(PairwiseFigures, ref_figs)) if ref_figs else None,
                }
            )
        except (KeyError, TypeError) as e:
            raise DataError(f"{source}: not a judge card ({e})") from e


def _known(cls: type, d: dict) -> dict:
    """The fields of `d` that `cls` has (a card written by a newer version may carry more)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


def write_card(card: JudgeCard, path: str | Path) -> Path:
    write_json(path, card.to_json())
    return Path(path)


def read_card(path: str | Path) -> JudgeCard:
    try:
        return JudgeCard.from_json(json.loads(Path(path).read_text(encoding="utf-8")), str(path))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the judge card: {e}") from e


def judge_name(judge: str) -> str:
    """A judge's name without its version: `pointwise:X@digest/tie-odds-1.5` -> `pointwise:X`."""
    return re.split(r"[@#]", str(judge or ""), maxsplit=1)[0]


def card_files() -> list[Path]:
    """Shipped cards, then those in the folders of $ALPAGASUS_CARDS (later ones win)."""
    shipped = resources.files("alpagasus.judgecheck").joinpath("cards")
    files = sorted(Path(str(shipped)).glob("*.json")) if shipped.is_dir() else []
    for folder in filter(None, os.environ.get(CARDS_ENV, "").split(os.pathsep)):
        files += sorted(Path(folder).glob("*.json"))
    return files


def find_card(judge: str | None, kind: str | None = None) -> JudgeCard | None:
    """The card of this judge (of this kind: pairwise or rating): one made for exactly this id first, else
    one for the same name (another version); None when there is none."""
    if not judge:
        return None
    found: JudgeCard | None = None
    for f in card_files():
        try:
            card = read_card(f)
        except DataError:
            continue  # a broken card must not break compare's summary
        if kind is not None and card.kind != kind:
            continue
        if judge in (card.judge_id, card.judge):
            found = card if found is None or found.judge_id != judge else found
        elif judge_name(judge) == judge_name(card.judge_id) and (found is None or found.judge_id != judge):
            found = card
    return found


def describe(judge: str) -> str:
    """What a judge is, in a phrase, from its spec."""
    backend, _, arg = judge_name(judge).partition(":")
    name = arg.split("/")[-1]
    if backend == "pointwise":
        return f"offline: scores each answer alone with the predictor {name}, so it cannot see position"
    if backend == "predictor":
        what = {
            "alpaca-claude-accuracy": "Claude's accuracy decisions",
            "alpaca-chatgpt-helpfulness": "ChatGPT's helpfulness decisions",
        }.get(name, "a strong judge")
        trained = " trained on Alpaca rows only" if name.startswith("alpaca-") else ""
        return f"offline predictor of {what}{trained}"
    return {
        "openai": "an LLM behind an OpenAI-compatible API",
        "hf": "a local model (transformers)",
        "vllm": "a local model (vLLM)",
        "embedded": "the embedded small LLM",
        "pairwise": "offline pairwise judge reading the question and both answers",
    }.get(backend, f"a {backend} judge")


def key_figures(card: JudgeCard) -> str:
    """The card's key figures beside the longer-answer rule's, in one phrase."""
    f, n = card.figures, card.reference.items
    if isinstance(f, PairwiseFigures):
        lw = card.baselines.get("longer wins")
        lw = lw if isinstance(lw, PairwiseFigures) else PairwiseFigures()
        out = (
            f"on {n} {card.reference.annotator} pairs it agrees {_f(f.agreement)} three-way and "
            f"{_f(f.agreement_decided)} on decided ones (longer-answer rule {_f(lw.agreement)} / "
            f"{_f(lw.agreement_decided)})"
        )
        if f.spearman is not None:
            out += f", ranks {f.models} models with Spearman {_f(f.spearman)} (longer-answer rule {_f(lw.spearman)})"
        return out
    longer, shorter = (_rating_figures(card.baselines.get(k)) for k in ("longer", "shorter"))
    return (
        f"on {n} rows with {card.reference.annotator} it has ROC-AUC {_f(f.roc_auc)} (length alone: longer "
        f"is better {_f(longer.roc_auc)}, shorter is better {_f(shorter.roc_auc)}) and precision "
        f"{_f(f.precision_at_kept)} at the kept fraction {_f(f.kept_fraction)}"
    )


def length_preference(figures: PairwiseFigures | RatingFigures) -> str:
    """The card's length preference, read in words (strong or not)."""
    if isinstance(figures, PairwiseFigures):
        p = figures.prefers_longer
        return pairwise_length_reading(p) or (
            "no strong length preference"
            + (f" (the longer answer wins {p:.0%} of its decided verdicts)" if p is not None else "")
        )
    rho = figures.length_spearman
    return rating_length_reading(rho) or (
        "no strong length preference" + (f" (Spearman {rho:+.2f} of score with length)" if rho is not None else "")
    )


def caveat(judge: str | None, kind: str = "pairwise") -> str:
    """One line on a judge: what it is, its card's key figures, its length preference when strong; without a
    card, the hand-written note (compare/known_agreement.json) or "unknown"."""
    card = find_card(judge, kind)
    if card is None:
        return (
            known_agreement(judge)
            if kind == "pairwise"
            else f"{describe(judge or '')}; no judge card: not measured against recorded decisions (alpagasus judge-check)"
        )
    strong = (
        pairwise_length_reading(card.figures.prefers_longer)
        if isinstance(card.figures, PairwiseFigures)
        else rating_length_reading(card.figures.length_spearman)
    )
    version = "" if judge in (card.judge_id, card.judge) else f"; card made for {card.judge_id}"
    return (
        f"{judge_name(judge or card.judge)} ({card.description}): {key_figures(card)}"
        f"{'; ' + strong if strong else ''} (judge card, {card.date}{version})"
    )


def known_agreement(judge: str | None) -> str:
    """The hand-written note on a pairwise judge's agreement with GPT-4 (compare/known_agreement.json, by
    name), for judges with no card."""
    notes = json.loads(resources.files("alpagasus.compare").joinpath("known_agreement.json").read_text())
    return notes.get(judge_name(judge or "")) or notes["*"]


def _rating_figures(f: PairwiseFigures | RatingFigures | None) -> RatingFigures:
    return f if isinstance(f, RatingFigures) else RatingFigures()


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


PAIRWISE_COLUMNS = ("n", "agree", "agree dec.", "ties", "pos. bias", "P(longer)", "rho", "tau")
RATING_COLUMNS = ("n", "ROC-AUC", "prec@kept", "kept", "rho length")


def figure_rows(card: JudgeCard) -> tuple[tuple[str, ...], list[list[str]]]:
    """The card's figures as a table: the judge, the reference's own (pairwise), then each trivial judge."""
    rows = [("judge", card.figures)]
    rows += [("reference", card.reference_figures)] if card.reference_figures is not None else []
    rows += list(card.baselines.items())
    if card.kind == "pairwise":
        return PAIRWISE_COLUMNS, [
            [
                name,
                str(f.judged),
                _f(f.agreement),
                _f(f.agreement_decided),
                _f(f.ties),
                _f(f.position_bias),
                _f(f.prefers_longer),
                _f(f.spearman),
                _f(f.kendall),
            ]
            for name, f in rows
            if isinstance(f, PairwiseFigures)  # a pairwise card holds only these
        ]
    return RATING_COLUMNS, [
        [name, str(f.rated), _f(f.roc_auc), _f(f.precision_at_kept), _f(f.kept_fraction), _f(f.length_spearman)]
        for name, f in rows
        if isinstance(f, RatingFigures)
    ]


def judge_note(judge: str | None, longer_answer_wins: float | None = None) -> str:
    """compare's line on its judge: `caveat`, and this comparison's own length preference when strong (the
    share of decisive verdicts the longer answer won, compare's `longer_answer_wins`)."""
    here = pairwise_length_reading(longer_answer_wins)
    return caveat(judge, "pairwise") + (f"; in this comparison it {here.removeprefix('the judge ')}" if here else "")


def rating_notes(judge: str | None, length: dict) -> tuple[str | None, str | None]:
    """`report`'s lines on a rating judge: its card line (None without a judge), and the reading of the score's
    Spearman with response length when strong (None otherwise)."""
    return (caveat(judge, "rating") if judge else None), rating_length_reading(length.get("spearman"))
