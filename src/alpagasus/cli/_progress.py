"""Progress bars for the commands that judge (rate, compare): the library takes a progress factory
(phase label, items to judge) -> callback fed with the engine's RunCounts; this is the rich one."""

from __future__ import annotations

from typing import Any, Callable

from rich.markup import escape

from alpagasus.engine.types import RunCounts
from alpagasus.redact import redact


def _more(s: RunCounts) -> str:
    """What moves between the bar's stored rows: the rows a logprob judge's label mass sent back to generate
    mode, and the requests the provider reports done in the batches still running (--batch)."""
    parts = [
        f"re-asked in generate mode {s.fallbacks}" if s.fallbacks else "",
        f"batch {s.batch_completed}/{s.batch_total} done, {s.batch_failed} failed" if s.batch_total else "",
    ]
    return "".join(f" | {p}" for p in parts if p)


class ProgressBars:
    """One bar per judging phase: done/total, rate, ETA, unparsed, tokens, cost, fallbacks to generate mode, a
    running batch's request counts; an outage or an interrupt note is printed on its own line. Use as a context
    manager so the bars stop however the run ends."""

    def __init__(self, console: Any):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = console
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}/s"),
            TimeRemainingColumn(),
            TextColumn(
                "unparsed {task.fields[unparsed]} tokens {task.fields[tokens]} {task.fields[cost]}{task.fields[more]}"
            ),
            console=console,
            transient=False,
        )
        self.started = False

    def __call__(self, label: str, total: int | None) -> Callable[[RunCounts], None]:
        if not self.started:
            self.bar.start()
            self.started = True
        task = self.bar.add_task(label, total=total, rate="-", unparsed=0, tokens=0, cost="", more="")
        note = ""

        def update(s: RunCounts) -> None:
            nonlocal note
            if s.note != note:
                if s.note:  # it may quote the judge's error: no markup, no secret
                    self.console.print(f"[yellow]{escape(redact(s.note))}[/yellow]")
                elif note:
                    self.console.print("[green]the judge answers again: resuming[/green]")
                note = s.note
            self.bar.update(
                task,
                completed=s.done,
                rate=f"{s.done / s.elapsed_s:.2f}" if s.elapsed_s else "-",
                unparsed=s.unparsed,
                tokens=s.tokens_in + s.tokens_out,
                cost="" if s.cost is None else f"cost {s.cost:.4f}",
                more=_more(s),
            )

        return update

    def __enter__(self) -> ProgressBars:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.started:
            self.bar.stop()
