"""File-level library calls behind the CLI: read, rate or select, write. Usable from Python as they are."""
from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable

from alpagasus import judges
from alpagasus.data import DataError, parse_field_map, read_examples, read_jsonl, write_jsonl, write_rows
from alpagasus.judges.base import JudgeError, OutageError
from alpagasus.paths import default_store
from alpagasus.prompts import TemplateError, load_template
from alpagasus.rate import RateOptions, RateSummary, StoreWriteError, estimate, output_rows, rate
from alpagasus.select import SelectError, bin_counts, select, training_rows
from alpagasus.store import Store, StoreBusy


class UserError(Exception):
    """A problem the user can fix (bad file, bad flag, busy store); the CLI prints it without a traceback."""


def rate_file(input: str | Path, output: str | Path, *, judge: str | None = None, mode: str | None = None,
              dimension: str = "accuracy", prompt: str | None = None, scale: str | None = None,
              base_url: str | None = None, concurrency: int | None = None, batch_size: int | None = None,
              store_path: str | Path | None = None, field_map: Iterable[str] | dict | None = None,
              skip_invalid: bool = False, limit: int | None = None, sample: int | None = None, seed: int = 0,
              dry_run: bool = False, price_in: float | None = None, price_out: float | None = None,
              max_tokens: int = 256, retry_unparsed: bool = False, wait: bool = False, device: str | None = None,
              context: int | None = None, timeout: float | None = None, max_attempts: int | None = None,
              max_outage: float | None = None, console: Any = None) -> RateSummary | dict:
    """Rate a dataset file and write the ratings file (a view of the store). Returns the summary.
    Raises UserError for what the user can fix, and `Interrupted` (a KeyboardInterrupt) after Ctrl-C once the
    replies in flight are stored; a stopped run resumes by running the same call again."""
    try:
        fmap = field_map if isinstance(field_map, dict) else parse_field_map(field_map)
        data = read_examples(input, fmap, skip_invalid=skip_invalid)
        template = load_template(prompt or dimension, scale=scale)
        options = {k: v for k, v in dict(base_url=base_url, concurrency=concurrency, batch_size=batch_size,
                                         device=device, context=context, timeout=timeout).items() if v is not None}
        j = judges.get(judge or judges.default_rating_judge(dimension, prompt, scale, mode), mode=mode, **options)
    except (DataError, TemplateError, JudgeError, OSError) as e:
        raise UserError(str(e)) from e
    examples = data.examples
    if sample is not None:
        idx = sorted(random.Random(seed).sample(range(len(examples)), min(sample, len(examples))))
        examples = [examples[i] for i in idx]
    if limit is not None:
        examples = examples[:limit]
    opts = RateOptions(retry_unparsed=retry_unparsed, price_in=price_in, price_out=price_out, max_tokens=max_tokens)
    if max_attempts is not None:
        opts.max_attempts = max_attempts
    if max_outage is not None:
        opts.max_outage_s = max_outage
    store = open_store(store_path or default_store())
    summary = RateSummary(rows=data.rows, unique=len(examples), duplicates=data.duplicates, invalid=data.invalid)
    try:
        if dry_run:
            from alpagasus.rate import pending

            todo, done = pending(examples, store, j.id, template.version, retry_unparsed)
            est = estimate(todo, template, j.mode, lambda t: max(1, len(t) // 4), opts)
            return {"judge": j.id, "prompt_version": template.version, "examples": len(examples),
                    "already_rated": done, **est, "invalid_rows": len(data.invalid), "duplicates": data.duplicates}
        with store.exclusive(wait=wait):
            with _progress(console, len(examples)) as update:
                summary = rate(examples, j, template, store, opts, summary, progress=update)
            try:
                write_jsonl(output, output_rows(examples, store, j.id, template.version, data.invalid, summary))
            except OSError as e:
                raise UserError(f"cannot write {output}: {e}. The ratings are safe in the store {store.path}: "
                                "run the same command again to write the file") from e
    except (StoreBusy, StoreWriteError, OutageError) as e:
        raise UserError(str(e)) from e
    finally:
        store.close()
        j.close()
    return summary


def open_store(path: str | Path) -> Store:
    try:
        return Store(path)
    except (sqlite3.Error, OSError) as e:
        raise UserError(f"cannot open the store {path}: {e}") from e


class _progress:
    """A rich progress bar fed by the rating loop's summary (done/total, rate, ETA, unparsed, tokens, cost)."""

    def __init__(self, console: Any, total: int):
        self.console, self.total = console, total

    def __enter__(self):
        if self.console is None:
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("rating"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]}/s"), TimeRemainingColumn(),
                            TextColumn("unparsed {task.fields[unparsed]} tokens {task.fields[tokens]} {task.fields[cost]}"),
                            console=self.console, transient=False)
        self.bar.start()
        self.task = self.bar.add_task("rate", total=self.total, rate="-", unparsed=0, tokens=0, cost="")

        self.note = ""

        def update(s: RateSummary) -> None:
            if s.note != self.note:  # an outage or an interrupt: say so on its own line
                if s.note:
                    self.console.print(f"[yellow]{s.note}[/yellow]")
                elif self.note:
                    self.console.print("[green]the judge answers again: resuming[/green]")
                self.note = s.note
            rate_s = f"{s.done / s.elapsed_s:.2f}" if s.elapsed_s else "-"
            self.bar.update(self.task, completed=s.already_rated + s.done, rate=rate_s, unparsed=s.unparsed,
                            tokens=s.tokens_in + s.tokens_out, cost="" if s.cost is None else f"cost {s.cost:.4f}")
        return update

    def __exit__(self, *exc) -> None:
        if self.console is not None:
            self.bar.stop()


def select_file(ratings: str | Path, output: str | Path, rule: str, value: Any = None, seed: int = 0,
                exclude_flagged: bool = False) -> dict:
    """Select from a ratings file by one rule and write the training file. Returns counts.
    `exclude_flagged` drops rows flagged as suspicious (e.g. prompt injection) whatever their score."""
    try:
        rows = list(read_jsonl(ratings))
    except (OSError, ValueError) as e:
        raise UserError(f"{ratings}: cannot read ratings ({e})") from e
    flagged = sum(1 for r in rows if r.get("flags"))
    all_rows, rows = rows, [r for r in rows if not (exclude_flagged and r.get("flags"))]
    kwargs: dict[str, Any] = {"seed": seed}
    if value is None and rule != "all":
        raise UserError(f"rule {rule} needs a value (a threshold, a fraction or a size K)" if rule in
                        ("threshold", "keep_fraction") else f"rule {rule} needs a size K")
    if rule == "threshold":
        kwargs["threshold"] = float(value)
    elif rule == "keep_fraction":
        kwargs["fraction"] = float(value)
    elif rule in ("top_k", "random", "longest"):
        kwargs["k"] = int(value)
    try:
        picked = select(rows, rule, **kwargs)
        n = write_rows(output, training_rows(picked))
    except (SelectError, DataError) as e:
        raise UserError(str(e)) from e
    statuses = [r.get("status") for r in all_rows]
    return {"rows": len(all_rows), "flagged": flagged, "excluded_flagged": len(all_rows) - len(rows), "rated": statuses.count("ok"), "unparsed": statuses.count("unparsed"),
            "other": len(all_rows) - statuses.count("ok") - statuses.count("unparsed"), "bins": bin_counts(all_rows),
            "kept": n, "rule": rule}
