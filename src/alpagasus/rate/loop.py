"""Rating examples: each one a request to the judge, through the engine, each reply committed to the store as
it returns. Examples already in the store are never requested again, and when nothing is left the judge is not
even loaded. Replies without a score are asked again (bounded), then stored as `unparsed`.
"""

from __future__ import annotations

import itertools
import re
from typing import Callable, Iterable, Iterator

from alpagasus.engine.loop import ProgressFactory, chunked, run_items, run_sync
from alpagasus.engine.types import Item, RunOptions, final_statuses
from alpagasus.judges.base import Judge
from alpagasus.prompts.rubric import Rubric
from alpagasus.prompts.template import Template
from alpagasus.rate.summary import RateSummary
from alpagasus.records import Example, Request
from alpagasus.store import Store


def build_request(example: Example, template: Template, mode: str) -> Request:
    """The judge's request for one example: the rubric filled with `prompt_fields()` (a conversation's context in
    the instruction's place, docs/formats.md); the row's other columns are there for custom templates."""
    values = template_values(example)
    fence = template.meta.get("fence")  # guarded templates: the data cannot close the tags that delimit it
    if fence:
        values = {k: neutralize_tags(v, fence.split(",")) if isinstance(v, str) else v for k, v in values.items()}
    return Request(
        key=example.id,
        system=template.system,
        user=template.render(values),
        assistant_prefix=template.logprob_prefix if mode == "logprob" else "",
        labels=template.labels,
        example=example,
    )


def template_values(example: Example) -> dict:
    """What a rubric template may name: the row's other columns, then the rubric's three fields."""
    return {**example.extra, **example.prompt_fields()}


def neutralize_tags(text: str, tags: list[str]) -> str:
    """`</data>` inside the data becomes `‹/data›`: visible to the judge, but no longer our delimiter."""
    names = "|".join(re.escape(t.strip()) for t in tags if t.strip())
    return re.sub(rf"<(/?\s*(?:{names})\b[^<>]{{0,40}})>", "‹\\1›", text, flags=re.I) if names else text


class Pending:
    """Filters a stream of examples down to those still to rate: not yet rated for good by this judge and prompt
    (the store is asked a chunk at a time; `already` counts the others) and, unless `rate_empty`, not empty
    (`empty` counts those: an empty output is bad data to filter out, not worth a request)."""

    def __init__(
        self,
        store: Store,
        judge_id: str,
        prompt_version: str,
        retry_unparsed: bool = False,
        chunk: int = 2000,
        rate_empty: bool = False,
    ):
        self.store, self.judge_id, self.version = store, judge_id, prompt_version
        self.final, self.chunk, self.already = final_statuses(retry_unparsed), chunk, 0
        self.rate_empty, self.empty = rate_empty, 0

    def split(self, examples: list[Example]) -> list[Example]:
        """The examples of one list still to rate (the rest are counted in `already` or `empty`)."""
        if not self.rate_empty:
            kept = [e for e in examples if not e.empty_field]
            self.empty += len(examples) - len(kept)
            examples = kept
        done = self.store.done_ids(self.judge_id, self.version, (e.id for e in examples), final=self.final)
        self.already += len(done)
        return [e for e in examples if e.id not in done]

    def __call__(self, examples: Iterable[Example]) -> Iterator[Example]:
        for batch in chunked(examples, self.chunk):
            yield from self.split(batch)


def rate(
    examples: Iterable[Example],
    judge: Judge,
    template: Template,
    store: Store,
    options: RunOptions | None = None,
    progress: ProgressFactory | None = None,
    total: int | None = None,
    rate_empty: bool = False,
) -> RateSummary:
    """Rate `examples` (already deduplicated; a list or a stream) with `judge` into `store`. Library entry
    point; `rate_file` does the same for a file. `progress("rating", total)` is called once there is work,
    with `total` when the caller knows how many examples are left. Examples with an empty instruction or
    output are not sent unless `rate_empty`."""
    return run_sync(rate_async(examples, judge, template, store, options, progress, total, rate_empty), judge)


async def rate_async(
    examples: Iterable[Example],
    judge: Judge,
    template: Template,
    store: Store,
    options: RunOptions | None = None,
    progress: ProgressFactory | None = None,
    total: int | None = None,
    rate_empty: bool = False,
) -> RateSummary:
    opts = options or RunOptions()
    pending = Pending(store, judge.id, template.version, opts.retry_unparsed, rate_empty=rate_empty)
    todo = pending(examples)
    first = next(todo, None)
    s = RateSummary(judge=judge.id, prompt_version=template.version)
    if first is not None:  # nothing to do: the judge is never loaded
        judge.load()
        items = (Item(e.id, build_request(e, template, judge.mode)) for e in itertools.chain([first], todo))
        update = progress("rating", total) if progress else None
        if opts.batch:  # the provider's Batch API: same requests and parsing, half the price, hours not seconds
            from alpagasus.engine.batch import run_batch

            s.run = await run_batch(items, judge, store, Rubric.rating(template), opts, update)
        else:
            s.run = await run_items(items, judge, store, Rubric.rating(template), opts, update)
    s.already_rated, s.empty = pending.already, pending.empty
    return s


def estimate(
    examples: Iterable[Example],
    template: Template,
    mode: str,
    count_tokens: Callable[[str], int],
    opts: RunOptions,
    out_tokens: int = 120,
) -> dict:
    """What a run would send: requests, tokens and cost (for --dry-run; nothing is sent)."""
    n = tin = 0
    for e in examples:
        n += 1
        tin += count_tokens(template.system + template.render(template_values(e))) + 8
    # generate writes a reply; logprob reads one token; a predictor or IFD scorer writes nothing
    tout = n * {"logprob": 1, "predict": 0, "ifd": 0}.get(mode, out_tokens)
    return {"requests": n, "tokens_in": tin, "tokens_out_estimate": tout, "cost": opts.cost(tin, tout)}
