"""The ratings report's charts, each returned as PNG bytes (the page embeds them and writes them beside it):
score bins, rows kept per threshold, keyword rows against the rest, score against length, A against B."""

from __future__ import annotations

from typing import Any, Sequence

from alpagasus.report.figures import fmt, png_bytes, pyplot
from alpagasus.select.rules import BINS

BLUE, ORANGE, GREY = "#4c72b0", "#dd8452", "#8c8c8c"


def plot_histogram(bins: dict[str, int]) -> bytes:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    bars = ax.bar(list(bins), list(bins.values()), color=BLUE)
    ax.bar_label(bars, labels=[str(v) for v in bins.values()], padding=2)
    ax.set_xlabel("score bin")
    ax.set_ylabel("rows")
    ax.set_title("Scores in the paper's bins")
    ax.margins(y=0.15)
    return png_bytes(fig)


def plot_kept(summary: dict[str, Any]) -> bytes:
    """Rows kept per threshold; the keyword rows and the rest as fractions on a second panel."""
    plt = pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ths = [float(t) for t in summary["kept_at"]]
    ax.step(ths, list(summary["kept_at"].values()), where="post", color=BLUE)
    ax.axvline(
        summary["threshold"], color=GREY, linestyle="--", linewidth=1, label=f"--threshold {summary['threshold']:g}"
    )
    ax.set_xlabel("threshold (keep score ≥ t)")
    ax.set_ylabel("rows kept")
    ax.set_title("Rows each threshold keeps")
    ax.legend(loc="lower left", frameon=False)
    kw = summary["keywords"]
    for group, name, color in ((kw, "with a keyword", ORANGE), (kw["rest"], "the rest", BLUE)):
        if group["rated"]:
            ax2.step(
                ths,
                [100 * v / group["rated"] for v in group["kept_at"].values()],
                where="post",
                color=color,
                label=f"{name} ({group['rated']} rated)",
            )
    ax2.axvline(summary["threshold"], color=GREY, linestyle="--", linewidth=1)
    ax2.set_xlabel("threshold")
    ax2.set_ylabel("% of the group's rated rows kept")
    ax2.set_title("Keyword rows against the rest")
    ax2.set_ylim(-2, 102)
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(loc="lower left", frameon=False)
    return png_bytes(fig)


def plot_keyword_bins(kw: dict[str, Any]) -> bytes:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    x = range(len(BINS))
    for k, (group, name, color) in enumerate(((kw, "with a keyword", ORANGE), (kw["rest"], "the rest", BLUE))):
        total = group["rated"] or 1
        bars = ax.bar(
            [i + (k - 0.5) * 0.4 for i in x],
            [100 * group["bins"][b] / total for b in BINS],
            width=0.4,
            color=color,
            label=f"{name} ({group['rated']} rated)",
        )
        ax.bar_label(bars, labels=[str(group["bins"][b]) for b in BINS], padding=1, fontsize=8)
    ax.set_xticks(list(x), BINS)
    ax.set_xlabel("score bin (bar labels: rows)")
    ax.set_ylabel("% of the group's rated rows")
    ax.set_title("Score bins: keyword rows against the rest")
    ax.legend(frameon=False)
    ax.margins(y=0.15)
    return png_bytes(fig)


def plot_length(lengths: Sequence[int], scores: Sequence[float], rho: float | None) -> bytes:
    """Score against response length, one point per rated row. Flat arrays (array('q'), array('d')) are
    viewed by numpy without copying them into lists of Python numbers."""
    import numpy as np

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    x = np.maximum(np.asarray(lengths, dtype=np.int64), 1)  # log scale: an empty response drawn at 1
    ax.scatter(x, np.asarray(scores, dtype=np.float64), s=10, alpha=0.5, color=BLUE)
    if len(x) and x.max() / x.min() > 20:
        ax.set_xscale("log")
    ax.set_xlabel("response length (characters)")
    ax.set_ylabel("score")
    ax.set_title(f"Score against response length (Spearman {fmt(rho, 3)})")
    return png_bytes(fig)


def plot_confusion(agr: dict[str, Any]) -> bytes:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    matrix = [[agr["confusion"][a][b] for b in BINS] for a in BINS]
    ax.imshow(matrix, cmap="Blues")
    top = max(max(r) for r in matrix) or 1
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black")
    ax.set_xticks(range(len(BINS)), BINS)
    ax.set_yticks(range(len(BINS)), BINS)
    ax.set_xlabel("B's bin")
    ax.set_ylabel("A's bin")
    ax.set_title("Score bins: A against B")
    return png_bytes(fig)
