"""Charts of `alpagasus compare`: stacked win/tie/lose bars per test set (the paper's main figure) and
capacity per skill. Drawn with `report.figures` (matplotlib inside the functions, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alpagasus.report.figures import pyplot, save_png

COLORS = {"win": "#4c9a5b", "tie": "#c9c9c9", "lose": "#c0504d"}
DPI = 120


def _figure(height: float) -> tuple[Any, Any]:
    return pyplot().subplots(figsize=(8, height))


def win_tie_lose(summary: dict, model_a: str, model_b: str, path: str | Path) -> None:
    """One bar per test set (and "all" when there are several), split into A wins / tie / B wins as shares of
    the judged questions, labelled with the counts. Unparsed questions are named beside the set."""
    sets = [k for k in summary if k != "all"]
    if len(sets) > 1:
        sets.append("all")
    fig, ax = _figure(1.4 + 0.6 * len(sets))
    labels = {"win": f"{model_a} wins", "tie": "tie", "lose": f"{model_b} wins"}
    totals = [max(1, sum(summary[s][k] for k in COLORS)) for s in sets]
    names = [s if not summary[s].get("unparsed") else f"{s}\n({summary[s]['unparsed']} unparsed)" for s in sets]
    left = [0.0] * len(sets)
    for key in ("win", "tie", "lose"):
        counts = [summary[s][key] for s in sets]
        shares = [c / t for c, t in zip(counts, totals)]
        bars = ax.barh(names, shares, left=left, color=COLORS[key], label=labels[key], height=0.6)
        # a count is written inside its segment when the segment has room for it
        ax.bar_label(bars, labels=[str(c) if sh >= 0.06 else "" for c, sh in zip(counts, shares)], label_type="center")
        left = [a + b for a, b in zip(left, shares)]
    ax.set_xlim(0, 1)
    ax.invert_yaxis()  # first test set on top
    ax.set_xticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_title(f"{model_a} vs. {model_b}")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=3, frameon=False)
    save_png(fig, path, DPI)


def capacity_bars(result: dict, path: str | Path) -> None:
    """Per skill, each model's total score as a percentage of the reference's; a line marks 100%."""
    models = list(result["models"])
    skills: list[str] = []
    for m in models:
        skills += [s for s in result["models"][m]["skills"] if s not in skills]
    fig, ax = _figure(1.5 + 0.35 * len(skills) * max(1, len(models)))
    height = 0.8 / max(1, len(models))
    top = 100.0
    for i, m in enumerate(models):
        table = result["models"][m]["skills"]
        values = [(table.get(s) or {}).get("percent") or 0 for s in skills]
        ys = [k + i * height for k in range(len(skills))]
        bars = ax.barh(ys, values, height=height, label=m)
        ax.bar_label(bars, labels=[f"{v:.0f}%" for v in values], padding=2, fontsize=8)
        top = max([top, *values]) if i else max([100.0, *values])
    ax.set_yticks([k + height * (len(models) - 1) / 2 for k in range(len(skills))], skills)
    ax.set_xlim(0, top * 1.12)
    ax.invert_yaxis()
    ax.axvline(100, color="black", linestyle="--", linewidth=1)
    ax.set_xlabel(f"% of {result['reference']}'s score")
    ax.set_title(f"Capacity per skill, against {result['reference']}")
    ax.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.12 - 0.3 / max(1, len(skills))),
        ncol=max(1, len(models)),
        frameon=False,
    )
    save_png(fig, path, DPI)
