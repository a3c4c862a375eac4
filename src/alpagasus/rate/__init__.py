"""Rating a dataset: every example graded by a judge, each reply committed to the store as it returns.

Two ways in: `rate_file` (a dataset file in, a ratings file out: the call behind `alpagasus rate`) and `rate`
(examples already in memory, or a stream of them, into a store). Both run the engine (alpagasus.engine);
`rate_file(..., ray=...)` runs it on Ray workers instead (ray.py).
"""

from alpagasus.rate.files import InputFile, rate_file
from alpagasus.rate.injection import flags
from alpagasus.rate.loop import Pending, RateSummary, build_request, estimate, rate, rate_async
from alpagasus.rate.view import RatingsView, output_rows

__all__ = [
    "rate_file",
    "rate",
    "rate_async",
    "RateSummary",
    "build_request",
    "output_rows",
    "estimate",
    "Pending",
    "InputFile",
    "RatingsView",
    "flags",
]
