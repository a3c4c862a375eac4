"""The judging engine shared by rating and pairwise comparison.

`run_items` judges a stream of items through a sliding window and commits every reply to the store as it
settles; `judging_session` builds the judge, opens and locks the store, and closes both. The vocabulary is the
run's, not a stage's: `RunOptions` in, `RunCounts` out, a `Rubric` (prompt version, scale, parser) per run.
"""

from alpagasus.engine.loop import Progress, ProgressFactory, chunked, run_items, run_sync, too_long
from alpagasus.engine.session import Session, build_judge, judging_session, open_store
from alpagasus.engine.settle import settle
from alpagasus.engine.types import Interrupted, Item, RunCounts, RunOptions, StoreWriteError, final_statuses
from alpagasus.prompts.rubric import Rubric

__all__ = [
    "run_items",
    "run_sync",
    "judging_session",
    "Session",
    "build_judge",
    "open_store",
    "settle",
    "chunked",
    "too_long",
    "Item",
    "RunCounts",
    "RunOptions",
    "Rubric",
    "Interrupted",
    "StoreWriteError",
    "final_statuses",
    "Progress",
    "ProgressFactory",
]
