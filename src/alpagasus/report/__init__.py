"""The ratings report: score distribution, thresholds, keyword split, length, judge agreement, HTML page.

Modules, bottom up: `figures` (page and plot helpers, shared with compare and run), `ratings` (reading the
file, streamed), `scan` (one pass keeping flat columns, not rows), `stats` (the numbers, from a scan),
`charts` (the plots), `html` (the page), `build` (all of it, for one file).
"""

from alpagasus.report.build import build_report
from alpagasus.report.ratings import ReportError
from alpagasus.report.stats import DEFAULT_KEYWORDS

__all__ = ["build_report", "ReportError", "DEFAULT_KEYWORDS"]
