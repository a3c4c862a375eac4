"""`build_report`: a ratings file (and optionally a second rating of the same data) in; the report's
directory out: index.html (plots embedded), the PNGs and summary.json.

Memory stays flat in the file's size: one streaming pass per file keeps flat columns (`report.scan`), and one
more pass over the first file reads back only the rows the page shows (examples per bin, the most disagreeing
rows), by line number."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from alpagasus.data import write_json
from alpagasus.report.html import write_page
from alpagasus.report.ratings import ReportError
from alpagasus.report.scan import scan_file
from alpagasus.report.stats import DEFAULT_KEYWORDS, agreement_of, example_lines, fill_prompts, label, summarize_scan


def build_report(
    ratings_path: str | Path,
    out_dir: str | Path,
    keywords: Sequence[str] = DEFAULT_KEYWORDS,
    compare: str | Path | None = None,
    threshold: float = 4.5,
    examples_per_bin: int = 3,
    selections: Sequence[str | Path] = (),
    store: str | Path | None = None,
) -> dict:
    """Write OUT_DIR/index.html (plots embedded), the PNGs and summary.json; return the summary.
    `selections`: sidecars of `alpagasus select` runs on this file (report.selections), compared side by side."""
    keywords = [k for k in keywords if k]
    if not keywords:
        raise ReportError("--keywords: give at least one non-empty keyword")
    scan = scan_file(ratings_path, keywords, ids=compare is not None)
    summary: dict[str, Any] = {
        "ratings": str(ratings_path),
        "label": label(ratings_path, scan.judge),
        **summarize_scan(scan, threshold),
    }
    from alpagasus.judgecheck.cards import rating_notes  # the judge's card and a reading of its length preference

    summary["judge_note"], summary["length"]["reading"] = rating_notes(scan.judge.get("judge"), summary["length"])
    worst: list[int] = []
    if compare is not None:
        other = scan_file(compare, ids=True)  # only its ids, scores and judge are used
        agr, worst = agreement_of(scan, other, threshold)
        summary["agreement"] = {"a": summary["label"], "b": label(compare, other.judge), "compare": str(compare), **agr}
        del other  # its id table is the largest thing held, and the page does not need it
    chosen = example_lines(scan, examples_per_bin)
    rows = scan.rows_at([line for lines in chosen.values() for line in lines] + worst)  # the second pass
    if compare is not None:
        fill_prompts(summary["agreement"], worst, rows)
    scan.ids = None  # A's id table is not needed for the page either
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    section = ""
    if selections:
        from alpagasus.report.selections import plot_map, selections_html, summarize_selections

        summary["selections"], map_data = summarize_selections(ratings_path, selections, store)
        section = selections_html(out, summary, plot_map(map_data, [x["name"] for x in summary["selections"]]))
    write_page(out, summary, scan, {b: [rows[i] for i in lines] for b, lines in chosen.items()}, section)
    write_json(out / "summary.json", summary)
    return summary
