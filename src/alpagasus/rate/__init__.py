"""Rating a dataset: every example graded by a judge, each reply committed to the store as it returns.

`rate_file` is the file-level call behind `alpagasus rate`; `rate` rates examples already in memory (or a
stream of them) into a store.
"""
from alpagasus.rate.files import rate_file
from alpagasus.rate.loop import RateOptions, RateSummary, build_request, output_rows, rate, rate_async

__all__ = ["rate_file", "rate", "rate_async", "output_rows", "build_request", "RateOptions", "RateSummary"]
