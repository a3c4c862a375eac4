"""The ratings report: score distribution, thresholds, keyword split, length, judge agreement, HTML page."""
from alpagasus.report.stats import DEFAULT_KEYWORDS, ReportError, build_report

__all__ = ["build_report", "ReportError", "DEFAULT_KEYWORDS"]
