"""`build_report`: a ratings file (and optionally a second rating of the same data) in; the report's
directory out: index.html (plots embedded), the PNGs and summary.json."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from alpagasus.data import write_json
from alpagasus.report.html import write_page
from alpagasus.report.ratings import ReportError, load_ratings
from alpagasus.report.stats import DEFAULT_KEYWORDS, agreement, label, pick_examples, summarize


def build_report(ratings_path: str | Path, out_dir: str | Path, keywords: Sequence[str] = DEFAULT_KEYWORDS,
                 compare: str | Path | None = None, threshold: float = 4.5, examples_per_bin: int = 3) -> dict:
    """Write OUT_DIR/index.html (plots embedded), the PNGs and summary.json; return the summary."""
    keywords = [k for k in keywords if k]
    if not keywords:
        raise ReportError("--keywords: give at least one non-empty keyword")
    rows = load_ratings(ratings_path)
    summary: dict[str, Any] = {"ratings": str(ratings_path), "label": label(ratings_path, rows),
                               **summarize(rows, keywords, threshold)}
    if compare is not None:
        other = load_ratings(compare)
        summary["agreement"] = {"a": summary["label"], "b": label(compare, other), "compare": str(compare),
                                **agreement(rows, other, threshold)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_page(out, summary, rows, pick_examples(rows, examples_per_bin))
    write_json(out / "summary.json", summary)
    return summary
