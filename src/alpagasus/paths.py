"""Where things live on the user's machine (never inside the package)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/alpagasus (or ~/.cache/alpagasus); created on use."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    d = Path(base) / "alpagasus"
    d.mkdir(parents=True, exist_ok=True)
    return d


def default_store() -> Path:
    return cache_dir() / "store.sqlite"
