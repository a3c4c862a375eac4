"""`rate_file`: a dataset file in, a ratings file out (a view of the store). The file is streamed, so memory
does not grow with it: one pass validates it and counts what is left to rate before any request, one rates,
one writes the ratings file."""

from __future__ import annotations

import dataclasses
import itertools
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from alpagasus import judges
from alpagasus.data import MAX_ROW_BYTES, DataError, ReadResult, parse_field_map, stream_examples, write_jsonl
from alpagasus.engine.loop import ProgressFactory
from alpagasus.engine.session import Session, judging_session
from alpagasus.engine.types import RunOptions
from alpagasus.errors import UserError
from alpagasus.prompts.template import Template, TemplateError, load_template
from alpagasus.rate.loop import Pending, estimate, rate
from alpagasus.rate.options import RateOptions
from alpagasus.rate.summary import RateSummary
from alpagasus.rate.view import RatingsView, output_rows
from alpagasus.ratings_file import rating_field
from alpagasus.records import Example


def rate_file(
    input: str | Path,
    output: str | Path,
    opts: RateOptions | None = None,
    *,
    progress: ProgressFactory | None = None,
    **fields: Any,
) -> RateSummary | dict:
    """Rate a dataset file and write the ratings file; returns the summary (a dict of what would be sent with
    `dry_run`). The options are a RateOptions (rate/options.py: every option, its one default and its help),
    or its fields as keywords (`judge=`, `store_path=`, `judge_options=`, `options=RunOptions(...)`...), which
    override `opts`'s. `judge_options` go to the judge (base_url, concurrency, batch_size, device, context,
    timeout...; one it does not take is an error), `options` to the run (prices, max_tokens, attempts...).
    `ray`: rate on a Ray cluster ("local" starts one here, "auto" or "ray://HOST:PORT" joins one; docs/ray.md).
    Rows with an empty instruction or output are kept as status `empty`, not sent unless `rate_empty`.
    `cascade` (True or a CascadeOptions): the judge rates a sample and the rows a predictor is unsure of, the
    predictor the rest, within certified recall and precision targets (docs/cost.md). A row above
    `max_row_bytes` (None: no limit) is invalid, never held whole. `format`: the input's format
    (formats.names()); None detects it from the rows (docs/formats.md).
    Raises UserError for what the user can fix, and `Interrupted` (a KeyboardInterrupt) after Ctrl-C once the
    replies in flight are stored; a stopped run resumes by running the same call again."""
    o = dataclasses.replace(opts, **fields) if opts is not None else RateOptions(**fields)
    try:
        template = load_template(o.prompt or o.dimension, scale=o.scale)
        source = InputFile(
            input, o.field_map, o.skip_invalid, o.limit, o.sample, o.seed, o.rate_empty, o.max_row_bytes, o.format
        )
    except (DataError, TemplateError, OSError) as e:
        raise UserError(str(e)) from e
    run = o.options
    spec = o.judge or judges.default_rating_judge(o.dimension, o.prompt, o.scale, o.mode)
    with judging_session(
        spec, mode=o.mode, judge_options=o.judge_options, store_path=o.store_path, lock=not o.dry_run, wait=o.wait
    ) as session:
        if run.batch:  # before anything is read or sent: the judge must speak the Batch API
            from alpagasus.engine.batch import check_batchable

            check_batchable(session.judge)
            if o.ray is not None:
                raise UserError("--batch and --ray cannot be combined: the provider runs the batch")
        if o.dry_run:  # reads the store only: no lock
            return _dry_run(source, template, session, run)
        cascade = o.cascade_options()
        if cascade is not None:  # not with --ray; the ratings file depends on the band: no up-to-date shortcut
            from alpagasus.rate.cascade import rate_cascade

            if o.ray is not None:
                raise UserError("--cascade and --ray cannot be combined yet")
            return rate_cascade(source, template, session, run, cascade, output, progress)
        return _rate_to_file(source, output, template, session, run, spec, o.judge_options, o.ray, progress)


def _rate_to_file(
    source: InputFile,
    output: str | Path,
    template: Template,
    session: Session,
    opts: RunOptions,
    spec: str,
    judge_options: Mapping[str, Any] | None,
    ray: str | None,
    progress: ProgressFactory | None,
) -> RateSummary:
    """Rate what the store lacks and write the ratings file, unless a finished run's view is still up to date."""
    s = source
    view = RatingsView(
        s.path,
        output,
        session.store,
        session.judge.id,
        template.version,
        [s.fmap, s.skip_invalid, s.limit, s.sample, s.seed, opts.retry_unparsed, s.rate_empty, s.max_row_bytes]
        + ([s.format] if s.format is not None else []),  # as before when no format is named: views stay valid
    )
    done_before = view.unchanged()
    if done_before is not None:  # the same command already finished: nothing to read, nothing to ask
        return done_before
    summary = _rate(source, template, session, opts, spec, judge_options, ray, progress)
    summary.flagged = _write(output, source, session, template, summary)
    if summary.invalid and not summary.unique:  # --skip-invalid with nothing valid: not a success
        raise UserError(
            f"nothing was rated: all {len(summary.invalid)} rows of {s.path} are invalid (first: "
            f"{summary.invalid[0]}); {output} lists them with status invalid_input"
        )
    if summary.run.error == 0:  # every example has its final rating: remember it, a rerun is then free
        view.remember(summary)
    return summary


@dataclass
class InputFile:
    """The dataset as passes over it: validated, deduplicated, sampled, limited. `stats` of the last full pass."""

    path: str | Path
    field_map: Iterable[str] | dict | None
    skip_invalid: bool
    limit: int | None
    sample: int | None
    seed: int
    rate_empty: bool = False
    max_row_bytes: int | None = MAX_ROW_BYTES
    format: str | None = None  # None: detected from the rows

    def __post_init__(self) -> None:
        self.fmap = self.field_map if isinstance(self.field_map, dict) else parse_field_map(self.field_map)
        self.chosen = self._sample() if self.sample is not None else None
        self.stats = ReadResult()

    def examples(self, stats: ReadResult | None = None) -> Iterator[Example]:
        """A fresh pass over the input."""
        it: Iterator[Example] = stream_examples(
            self.path,
            self.fmap,
            self.skip_invalid,
            stats,
            allow_empty=True,
            max_row_bytes=self.max_row_bytes,
            format=self.format,
        )
        if self.chosen is not None:
            it = (e for i, e in enumerate(it) if i in self.chosen)
        return itertools.islice(it, self.limit) if self.limit is not None else it

    def _sample(self) -> set[int]:
        """Positions (among unique valid examples) of a seeded random sample: one counting pass."""
        n = sum(
            1
            for _ in stream_examples(
                self.path,
                self.fmap,
                skip_invalid=True,
                allow_empty=True,
                max_row_bytes=self.max_row_bytes,
                format=self.format,
            )
        )
        return set(random.Random(self.seed).sample(range(n), min(self.sample or 0, n)))


def _rate(
    source: InputFile,
    template: Template,
    session: Session,
    opts: RunOptions,
    spec: str,
    judge_options: Mapping[str, Any] | None,
    ray: str | None,
    progress: ProgressFactory | None,
) -> RateSummary:
    """Pass 1 validates and counts every row before a single request is paid for; pass 2 rates what is left."""
    judge, store = session.judge, session.store
    counter = Pending(store, judge.id, template.version, opts.retry_unparsed, rate_empty=source.rate_empty)
    left = sum(1 for _ in counter(source.examples(source.stats)))
    stats = source.stats
    if left:
        if ray is not None:
            from alpagasus.rate.ray import rate_on_ray

            options = {k: v for k, v in (judge_options or {}).items() if v is not None}
            got = rate_on_ray(
                source.examples(),
                judge=judge,
                judge_spec=spec,
                judge_options=options,
                template=template,
                store=store,
                options=opts,
                address=None if ray in ("", "local") else ray,
                rate_empty=source.rate_empty,
                progress=progress("rating on Ray", left) if progress else None,
            )
        else:
            got = rate(
                source.examples(), judge, template, store, opts, progress, total=left, rate_empty=source.rate_empty
            )
    else:  # nothing left: the judge is never loaded
        got = RateSummary(judge=judge.id, prompt_version=template.version, already_rated=counter.already)
    got.rows, got.duplicates, got.invalid, got.empty = stats.rows, stats.duplicates, stats.invalid, counter.empty
    return got


def _write(output: str | Path, source: InputFile, session: Session, template: Template, summary: RateSummary) -> int:
    """Write the ratings file; returns how many rows carry injection flags."""
    flagged = 0

    def counted(rows: Iterable[dict]) -> Iterator[dict]:
        nonlocal flagged
        for row in rows:
            flagged += bool(rating_field(row, "flags"))
            yield row

    try:
        write_jsonl(
            output,
            counted(output_rows(source.examples(), session.store, session.judge.id, template.version, summary.invalid)),
        )
    except (OSError, DataError) as e:
        raise UserError(
            f"cannot write {output}: {e}. The ratings are safe in the store {session.store.path}: "
            "run the same command again to write the file"
        ) from e
    return flagged


def _dry_run(source: InputFile, template: Template, session: Session, opts: RunOptions) -> dict:
    stats = ReadResult()
    pending = Pending(
        session.store, session.judge.id, template.version, opts.retry_unparsed, rate_empty=source.rate_empty
    )
    est = estimate(pending(source.examples(stats)), template, session.judge.mode, lambda t: max(1, len(t) // 4), opts)
    return {
        "judge": session.judge.id,
        "prompt_version": template.version,
        "examples": pending.already + est["requests"],
        "already_rated": pending.already,
        **est,
        "invalid_rows": len(stats.invalid),
        "duplicates": stats.duplicates,
        "empty": pending.empty,
    }
