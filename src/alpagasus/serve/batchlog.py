"""Batches on disk, so that they survive a restart of `alpagasus serve` on the same files folder.

In `<files folder>/batches/`: `<batch id>.json` holds the Batch object and the faults it runs with (written
atomically at every change of status), and `<batch id>.output.partial` / `.error.partial` the lines answered so
far, appended one by one. When the batch ends, the partial files become its output and error files.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from alpagasus.serve.files import FileStore, write_atomic

log = logging.getLogger("alpagasus.serve")


@dataclass
class Answered:
    """The lines a batch has written so far (after a restart: before it)."""

    ids: set[str] = field(default_factory=set)
    completed: int = 0
    failed: int = 0


class BatchLog:
    """The `batches/` folder of one FileStore."""

    def __init__(self, files: FileStore):
        self.files = files

    @property
    def dir(self) -> Path:
        d = self.files.dir / "batches"
        d.mkdir(exist_ok=True)
        return d

    def _partial(self, batch_id: str, kind: str) -> Path:
        return self.dir / f"{batch_id}.{kind}.partial"

    def save(self, batch: dict, faults: dict) -> None:
        try:
            write_atomic(self.dir / f"{batch['id']}.json", json.dumps({"batch": batch, "faults": faults}).encode())
        except OSError as e:  # the folder went away with a stopping server: nothing left to keep
            log.warning("batch %s: state not saved (%s)", batch["id"], e)

    def load(self) -> list[tuple[dict, dict]]:
        """(batch, faults) of every batch saved in the folder, oldest first; a damaged entry is skipped (logged)."""
        if self.files.temporary:
            return []
        found = []
        for p in self.dir.glob("batch_*.json"):
            try:
                saved = json.loads(p.read_text())
                batch, faults = saved["batch"], saved["faults"]
                if not isinstance(batch, dict) or not isinstance(batch.get("created_at"), int):
                    raise ValueError("not a Batch object")
                found.append((batch, faults))
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.warning("batches: skipping %s, it is damaged (%s)", p.name, e)
        return sorted(found, key=lambda bf: bf[0]["created_at"])

    def append(self, batch_id: str, kind: str, line: dict) -> None:
        with open(self._partial(batch_id, kind), "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")

    def answered(self, batch_id: str) -> Answered:
        """Read line by line; a line cut short by a crash is dropped (and cut off the file: it is run again)."""
        done = Answered()
        for kind in ("output", "error"):
            path = self._partial(batch_id, kind)
            if not path.exists():
                continue
            good = 0
            with open(path, "rb") as f:
                for raw in f:
                    if not raw.endswith(b"\n"):
                        break
                    good += len(raw)
                    done.ids.add(json.loads(raw)["custom_id"])
                    done.completed += kind == "output"
                    done.failed += kind == "error"
            if good != path.stat().st_size:
                with open(path, "r+b") as f:
                    f.truncate(good)
        return done

    def usage(self, batch_id: str) -> dict:
        """The tokens of the requests answered (the Batch object's `usage`), read from the partial files."""
        usage = {"input_tokens": 0, "output_tokens": 0}
        for kind in ("output", "error"):
            path = self._partial(batch_id, kind)
            if not path.exists():
                continue
            with open(path, "rb") as f:
                for raw in f:
                    body = (json.loads(raw).get("response") or {}).get("body") or {}
                    u = body.get("usage") or {}
                    usage["input_tokens"] += int(u.get("prompt_tokens") or 0)
                    usage["output_tokens"] += int(u.get("completion_tokens") or 0)
        return {
            **usage,
            "total_tokens": usage["input_tokens"] + usage["output_tokens"],
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        }

    def take(self, batch_id: str, kind: str) -> Path | None:
        """The partial file of `kind`, moved aside for FileStore.add_file; None when no line was written."""
        path = self._partial(batch_id, kind)
        if not path.exists() or path.stat().st_size == 0:
            return None
        tmp = self.files.temp_path()
        path.rename(tmp)
        return tmp

    def reset(self, batch_id: str) -> None:
        for kind in ("output", "error"):
            self._partial(batch_id, kind).unlink(missing_ok=True)
