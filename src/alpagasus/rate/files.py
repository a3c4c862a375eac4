"""File-level library calls behind the CLI: read, rate or select, write. Usable from Python as they are."""
from __future__ import annotations

import contextlib
import itertools
import json
import random
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from alpagasus import judges
from alpagasus.data import DataError, ReadResult, bundled_sample, parse_field_map, read_jsonl, stream_examples, write_jsonl, write_rows
from alpagasus.judges.base import JudgeError, OutageError
from alpagasus.paths import default_store
from alpagasus.prompts import TemplateError, load_template
from alpagasus.rate.loop import RateOptions, RateSummary, StoreWriteError, estimate, output_rows, pending_stream, rate
from alpagasus.records import Example, InvalidRow
from alpagasus.select.rules import BINS, RATING_KEYS, Columns, SelectError, choose, score_bin, training_row
from alpagasus.errors import UserError
from alpagasus.store import Store, StoreBusy


def rate_file(input: str | Path, output: str | Path, *, judge: str | None = None, mode: str | None = None,
              dimension: str = "accuracy", prompt: str | None = None, scale: str | None = None,
              base_url: str | None = None, concurrency: int | None = None, batch_size: int | None = None,
              store_path: str | Path | None = None, field_map: Iterable[str] | dict | None = None,
              skip_invalid: bool = False, limit: int | None = None, sample: int | None = None, seed: int = 0,
              dry_run: bool = False, price_in: float | None = None, price_out: float | None = None,
              max_tokens: int = 256, retry_unparsed: bool = False, wait: bool = False, device: str | None = None,
              context: int | None = None, timeout: float | None = None, max_attempts: int | None = None,
              max_outage: float | None = None, ray: str | None = None, console: Any = None) -> RateSummary | dict:
    """Rate a dataset file and write the ratings file (a view of the store). Returns the summary.
    The file is streamed (memory does not grow with it): one pass validates it and counts what is left to
    rate before any request, one rates, one writes the ratings file. `ray`: rate on a Ray cluster ("local" starts
    one here, "auto" or "ray://HOST:PORT" joins one; see docs/ray.md).
    Raises UserError for what the user can fix, and `Interrupted` (a KeyboardInterrupt) after Ctrl-C once the
    replies in flight are stored; a stopped run resumes by running the same call again."""
    try:
        fmap = field_map if isinstance(field_map, dict) else parse_field_map(field_map)
        template = load_template(prompt or dimension, scale=scale)
        options = {k: v for k, v in dict(base_url=base_url, concurrency=concurrency, batch_size=batch_size,
                                         device=device, context=context, timeout=timeout).items() if v is not None}
        spec = judge or judges.default_rating_judge(dimension, prompt, scale, mode)
        j = judges.get(spec, mode=mode, **options)
        chosen = _sample_rows(input, fmap, sample, seed) if sample is not None else None
    except (DataError, TemplateError, JudgeError, OSError) as e:
        raise UserError(str(e)) from e

    def examples(stats: ReadResult | None = None) -> Iterator[Example]:
        """A fresh pass over the input: validated, deduplicated, sampled, limited."""
        it: Iterator[Example] = stream_examples(input, fmap, skip_invalid, stats)
        if chosen is not None:
            it = (e for i, e in enumerate(it) if i in chosen)
        return itertools.islice(it, limit) if limit is not None else it

    opts = RateOptions(retry_unparsed=retry_unparsed, price_in=price_in, price_out=price_out, max_tokens=max_tokens)
    if max_attempts is not None:
        opts.max_attempts = max_attempts
    if max_outage is not None:
        opts.max_outage_s = max_outage
    store = open_store(store_path or default_store())
    try:
        stats, first = ReadResult(), RateSummary()
        if dry_run:  # reads the store only: no lock
            todo = pending_stream(examples(stats), store, j.id, template.version, retry_unparsed, first)
            est = estimate(todo, template, j.mode, lambda t: max(1, len(t) // 4), opts)
            return {"judge": j.id, "prompt_version": template.version, "examples": first.already_rated +
                    est["requests"], "already_rated": first.already_rated, **est,
                    "invalid_rows": len(stats.invalid), "duplicates": stats.duplicates}
        with store.exclusive(wait=wait):
            view = _View(input, output, store, j.id, template.version,
                         [fmap, skip_invalid, limit, sample, seed, retry_unparsed])
            done_before = view.unchanged()
            if done_before is not None:  # the same command already finished: nothing to read, nothing to ask
                return done_before
            # pass 1: every row validated and counted before a single request is paid for
            todo = pending_stream(examples(stats), store, j.id, template.version, retry_unparsed, first)
            left = sum(1 for _ in todo)
            summary = RateSummary(rows=stats.rows, unique=first.already_rated + left, duplicates=stats.duplicates,
                                  invalid=stats.invalid)
            if left:
                with _progress(console, summary.unique) as update:
                    if ray is not None:
                        from alpagasus.rate.ray import rate_on_ray

                        summary = rate_on_ray(examples(), judge=j, judge_spec=spec, judge_options=options,
                                              template=template, store=store, options=opts, summary=summary,
                                              address=None if ray in ("", "local") else ray,
                                              progress=update)
                    else:
                        summary = rate(examples(), j, template, store, opts, summary, progress=update)
            else:  # nothing left: the judge is never loaded
                summary.judge, summary.prompt_version, summary.already_rated = j.id, template.version, summary.unique
            try:
                write_jsonl(output, output_rows(examples(), store, j.id, template.version, stats.invalid, summary))
            except OSError as e:
                raise UserError(f"cannot write {output}: {e}. The ratings are safe in the store {store.path}: "
                                "run the same command again to write the file") from e
            if summary.error == 0:  # every example has its final rating: remember it, a rerun is then free
                view.remember(summary)
    except DataError as e:
        raise UserError(str(e)) from e
    except (StoreBusy, StoreWriteError, OutageError, JudgeError) as e:
        raise UserError(str(e)) from e
    finally:
        store.close()
        j.close()
    return summary


class _View:
    """The ratings file as a view of the store. When a finished run's input file, options, output file and
    the store's replies for this judge and prompt are all as that run left them, a rerun has nothing to do
    and can say so without reading a million rows (each part is checked: file sizes and mtimes, reply
    count and newest write). Inputs that are not plain files are always read."""

    def __init__(self, input: str | Path, output: str | Path, store: Store, judge_id: str, version: str,
                 options: list):
        self.store, self.judge_id, self.version, self.options = store, judge_id, version, options
        self.key = f"view:{Path(output).resolve()}"
        src = str(input)
        path = bundled_sample(src.removeprefix("sample:")) if src.startswith("sample:") else Path(src)
        self.input = path if path.is_file() else None
        self.output = Path(output)

    def state(self) -> list | None:
        if self.input is None or not self.output.is_file():
            return None
        a, b = self.input.stat(), self.output.stat()
        return [str(self.input.resolve()), a.st_size, a.st_mtime_ns, b.st_size, b.st_mtime_ns, self.options,
                self.store.replies_sig(self.judge_id, self.version)]

    def unchanged(self) -> RateSummary | None:
        saved, now = self.store.get_meta(self.key), self.state()
        if not saved or now is None or json.loads(json.dumps(now)) != saved["state"]:
            return None
        s = saved["summary"]
        return RateSummary(judge=self.judge_id, prompt_version=self.version, rows=s["rows"], unique=s["unique"],
                           duplicates=s["duplicates"], invalid=[InvalidRow(**d) for d in s["invalid"]],
                           already_rated=s["unique"], flagged=s["flagged"],
                           note="nothing to do: the ratings file is up to date with the input and the store")

    def remember(self, s: RateSummary) -> None:
        state = self.state()
        if state is None:
            return
        with contextlib.suppress(sqlite3.Error, OSError):  # only a shortcut for the next run: never an error
            self.store.set_meta(self.key, {"state": state, "summary": {
                "rows": s.rows, "unique": s.unique, "duplicates": s.duplicates, "flagged": s.flagged,
                "invalid": [vars(x) for x in s.invalid]}})


def _sample_rows(input: str | Path, fmap: dict, k: int, seed: int) -> set[int]:
    """Positions (among unique valid examples) of a seeded random sample of k: one counting pass."""
    n = sum(1 for _ in stream_examples(input, fmap, skip_invalid=True))
    return set(random.Random(seed).sample(range(n), min(k, n)))


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
