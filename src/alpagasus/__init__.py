"""alpagasus: choose instruction-tuning data with an LLM judge (Chen et al., 2023, arXiv 2307.08701).

Library first; the CLI is a thin layer over these calls:

    read_examples(path)                  a dataset file -> validated Examples      (alpagasus.data)
    rate_file(input, output, judge=...)  rate a file, write the ratings file       (alpagasus.rate)
    rate_file(input, output, RateOptions(...))  the same with the options as one record (rate/options.py)
    rate.rate(examples, judge, template, store)  the same for examples in memory
    select_file(ratings, output, rule, value)  keep the best-rated, or a baseline (alpagasus.select)
    compare_files([a, b], out_dir, judge=...)  two models judged in both orders    (alpagasus.compare)
    build_report(ratings, out_dir)       plots and statistics of a ratings file    (alpagasus.report)
    run_recipe(recipe)                   the whole experiment from one YAML file   (alpagasus.run)
    judges.get(spec), load_template(name), Store(path), RunOptions(...)

Names are imported on first use, so `import alpagasus` stays light and never imports torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it (imported lazily, PEP 562)
_EXPORTS = {
    "Example": "alpagasus.records",
    "Request": "alpagasus.records",
    "Reply": "alpagasus.records",
    "Rating": "alpagasus.records",
    "Answer": "alpagasus.records",
    "Judgment": "alpagasus.records",
    "read_examples": "alpagasus.data",
    "DataError": "alpagasus.data",
    "UserError": "alpagasus.errors",
    "Store": "alpagasus.store",
    "load_template": "alpagasus.prompts",
    "Rubric": "alpagasus.prompts",
    "RunOptions": "alpagasus.engine",
    "RunCounts": "alpagasus.engine",
    "rate_file": "alpagasus.rate",
    "RateSummary": "alpagasus.rate",
    "RateOptions": "alpagasus.rate",
    "PairScores": "alpagasus.records",
    "select_file": "alpagasus.select",
    "compare_files": "alpagasus.compare",
    "build_report": "alpagasus.report",
    "run_recipe": "alpagasus.run",
    "judges": "alpagasus.judges",
}
# Not exported by name: functions named like their subpackage (rate, select, compare, generate, train), since
# importing the subpackage rebinds that attribute to the module; call them as alpagasus.rate.rate(...) etc.

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'alpagasus' has no attribute {name!r}")
    mod = importlib.import_module(module)
    value = mod if module == f"alpagasus.{name}" else getattr(mod, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
