"""Rating a dataset: every example graded by a judge, each reply committed to the store as it returns.

Two ways in: `rate_file` (a dataset file in, a ratings file out: the call behind `alpagasus rate`; its options
are one record, `RateOptions`, declared in options.py) and `rate` (examples already in memory, or a stream of
them, into a store). Both run the engine (alpagasus.engine); `rate_file(..., ray=...)` runs it on Ray workers
instead (ray.py). Names are imported on first use, so the CLI can read the declared options (options.py)
without loading the rating machinery.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that defines it (imported lazily, PEP 562)
_EXPORTS = {
    "rate_file": "alpagasus.rate.files",
    "InputFile": "alpagasus.rate.files",
    "flags": "alpagasus.rate.injection",
    "rate": "alpagasus.rate.loop",
    "rate_async": "alpagasus.rate.loop",
    "build_request": "alpagasus.rate.loop",
    "estimate": "alpagasus.rate.loop",
    "Pending": "alpagasus.rate.loop",
    "RateOptions": "alpagasus.rate.options",
    "RateSummary": "alpagasus.rate.summary",
    "CascadeSummary": "alpagasus.rate.summary",
    "output_rows": "alpagasus.rate.view",
    "RatingsView": "alpagasus.rate.view",
}

__all__ = [
    "rate_file",
    "rate",
    "rate_async",
    "RateSummary",
    "RateOptions",
    "CascadeSummary",
    "build_request",
    "output_rows",
    "estimate",
    "Pending",
    "InputFile",
    "RatingsView",
    "flags",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'alpagasus.rate' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
