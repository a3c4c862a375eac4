"""The options of `rate`, declared once.

`RateOptions` is what `rate_file` takes besides the input, the output and a progress callback; its defaults,
and those of the run (engine.types.RunOptions) and of the cascade (rate.plan.CascadeOptions), are the only
ones. `FLAGS` names every flat option of `alpagasus rate` (and of a recipe's rate stage) once: where its value
goes (the rate options, the run's, the judge's, the cascade's), its one help text and its CLI panel; its default
is read from where the value goes. The CLI builds its flags from FLAGS (cli/rate.py), and `from_flags` turns flat
values (the CLI's, a recipe's) into a RateOptions."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from alpagasus.data.jsontext import MAX_ROW_BYTES
from alpagasus.engine.types import RunOptions
from alpagasus.errors import UserError
from alpagasus.rate.plan import CascadeOptions

__all__ = ["RateOptions", "Flag", "FLAGS", "from_flags", "flag_default", "flag_defaults", "flag_type"]


@dataclass
class RateOptions:
    """Everything `rate_file` takes besides the input, the output and a progress callback (help: FLAGS)."""

    judge: str | None = None  # None: judges.default_rating_judge
    mode: str | None = None
    dimension: str = "accuracy"
    prompt: str | None = None
    scale: str | None = None
    judge_options: Mapping[str, Any] = field(default_factory=dict)  # to the judge (base_url, concurrency, ...)
    options: RunOptions = field(default_factory=RunOptions)  # to the run (prices, attempts, --batch...)
    store_path: str | Path | None = None  # None: the user cache's store
    field_map: Iterable[str] | dict | None = None
    format: str | None = None  # None: detected from the rows (docs/formats.md)
    skip_invalid: bool = False
    limit: int | None = None
    sample: int | None = None
    seed: int = 0
    dry_run: bool = False
    wait: bool = False
    ray: str | None = None  # "local"/"" starts a cluster here, "auto" or "ray://HOST:PORT" joins one
    rate_empty: bool = False
    cascade: CascadeOptions | bool = False  # True: CascadeOptions(seed=seed)
    max_row_bytes: int | None = MAX_ROW_BYTES  # None: no limit

    def __post_init__(self) -> None:
        for name in ("limit", "sample"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise UserError(f"{name} must be 0 or more, not {value}")

    def cascade_options(self) -> CascadeOptions | None:
        """The cascade's options, or None when it is off."""
        if not self.cascade:
            return None
        return self.cascade if isinstance(self.cascade, CascadeOptions) else CascadeOptions(seed=self.seed)


@dataclass(frozen=True)
class Flag:
    """One flat option: `name` (the CLI's --name), where its value goes (`to`: "rate" for RateOptions, "run"
    for RunOptions, "judge" for the judge's options, "cascade" for CascadeOptions) under `field` (default: the
    name), its help, its panel, and what the CLI needs besides (bounds, option names, the parsed type where
    the library takes more)."""

    name: str
    to: str
    help: str
    panel: str
    field: str = ""
    min: float | None = None
    max: float | None = None
    names: tuple[str, ...] = ()  # CLI option names, when not just --name
    metavar: str | None = None
    cli_type: Any = None  # e.g. list[str] for --field (repeatable), where the library takes a mapping too

    @property
    def key(self) -> str:
        return self.field or self.name


TARGETS: dict[str, Any] = {"rate": RateOptions, "run": RunOptions, "cascade": CascadeOptions}
JUDGE = {"base_url": str, "concurrency": int, "batch_size": int, "device": str, "context": int, "timeout": float}

FLAGS: tuple[Flag, ...] = (
    Flag(
        "judge",
        "rate",
        "openai:MODEL | hf:PATH_OR_ID | predictor:NAME | vllm:MODEL | ifd:MODEL (Instruction-Following Difficulty). "
        "Default: the distilled predictor of the dimension (predictor:alpaca-claude-accuracy / "
        "-chatgpt-helpfulness); with --prompt, --scale or --mode, the embedded SmolLM2-135M-Instruct.",
        "Judge",
    ),
    Flag(
        "mode",
        "rate",
        "generate (reply + explanation) or logprob (expected score). "
        "Default: logprob for local judges, generate for API judges.",
        "Judge",
    ),
    Flag(
        "dimension",
        "rate",
        "accuracy or helpfulness (the paper's two prompts), or "
        "accuracy-guarded / helpfulness-guarded (data fenced against prompt injection).",
        "Judge",
    ),
    Flag("prompt", "rate", "Your own template file (see prompts/rate_accuracy.txt).", "Judge"),
    Flag("scale", "rate", "Score range LO-HI, overriding the template's (e.g. 1-10).", "Judge"),
    Flag("base_url", "judge", "OpenAI-compatible endpoint (or $OPENAI_BASE_URL).", "Judge"),
    Flag("concurrency", "judge", "Requests in flight (API judges; default 16).", "Run", min=1),
    Flag("batch_size", "judge", "Examples per forward pass (local judges).", "Run", min=1),
    Flag(
        "store",
        "rate",
        "SQLite store of paid ratings (default: in the user cache).",
        "Run",
        "store_path",
        cli_type=Path | None,
    ),
    Flag("field", "rate", "Map a column: instruction=question (repeatable).", "Input", "field_map", cli_type=list[str]),
    Flag("skip_invalid", "rate", "Rate the valid rows; list invalid ones in the summary.", "Input"),
    Flag(
        "max_row_bytes",
        "rate",
        "A JSON/JSONL row longer than this is invalid, never read whole: memory stays bounded whatever a line holds.",
        "Input",
        min=1,
        cli_type=int,
    ),
    Flag("limit", "rate", "Rate only the first N examples.", "Input", min=0),
    Flag("sample", "rate", "Rate a random sample of N examples.", "Input", min=0),
    Flag("seed", "rate", "Seed for --sample (and the cascade's sample).", "Input"),
    Flag("dry_run", "rate", "Print requests, tokens and cost; send nothing.", "Cost"),
    Flag("price_in", "run", "Price per million input tokens.", "Cost", min=0),
    Flag("price_out", "run", "Price per million output tokens.", "Cost", min=0),
    Flag("max_tokens", "run", "Generate mode: reply length cap.", "Judge", min=1),
    Flag("retry_unparsed", "run", "Ask again for examples stored as unparsed.", "Run"),
    Flag(
        "rate_empty",
        "rate",
        "Also send rows whose instruction or output is empty (by default "
        "they get status `empty` without a request, and are never selected).",
        "Input",
    ),
    Flag("wait", "rate", "If another run holds the store, wait instead of refusing.", "Run"),
    Flag("device", "judge", "Local judges: cpu, cuda, cuda:1...", "Judge"),
    Flag(
        "context",
        "judge",
        "API judges: the model's context in tokens; longer examples are stored as invalid_input without a "
        "request. ifd: judges: the truncation window (long rows are cut, not rejected).",
        "Judge",
        min=1,
    ),
    Flag("timeout", "judge", "API judges: seconds to wait for one reply (default 120).", "Judge", min=0.001),
    Flag(
        "max_attempts",
        "run",
        "Requests per example before it is stored as error (outages and 429s are not counted).",
        "Run",
        min=1,
    ),
    Flag(
        "max_outage",
        "run",
        "Seconds to pause while the judge is unreachable before stopping; rerun to resume.",
        "Run",
        "max_outage_s",
        min=0,
    ),
    Flag(
        "ray",
        "rate",
        "Rate on Ray workers: --ray alone starts a local cluster; auto or ray://HOST:10001 joins one (docs/ray.md).",
        "Run",
        names=("--ray",),
        metavar="[ADDRESS]",
    ),
    Flag(
        "batch",
        "run",
        "openai: judges: send through the provider's Batch API (half the price, results "
        "within 24 h; resumable, never paid twice; docs/cost.md).",
        "Cost",
        names=("--batch",),
    ),
    Flag(
        "batch_discount",
        "run",
        "--batch: the batch price as a fraction of --price-in/--price-out (OpenAI: 0.5).",
        "Cost",
        min=0,
    ),
    Flag("batch_poll", "run", "--batch: seconds between status checks.", "Cost", "batch_poll_s", min=0.01),
    Flag(
        "min_label_mass",
        "run",
        "Logprob mode: a reply whose score labels hold less probability than this is no score: asked again "
        "in generate mode (API judges) or stored unparsed. Default 0.5 for API judges, off for local ones.",
        "Judge",
        min=0,
        max=1,
    ),
    Flag(
        "cascade",
        "rate",
        "The judge rates a random sample, a predictor (shipped or distilled from it) rates the rest, and rows "
        "it is unsure of go to the judge, within certified recall/precision targets; gives up when it cannot "
        "save (docs/cost.md).",
        "Cascade",
        cli_type=bool,
    ),
    Flag(
        "cascade_sample",
        "cascade",
        "--cascade: rows the judge rates first (default max(400, 10%), at most 5000).",
        "Cascade",
        "sample",
        min=1,
    ),
    Flag(
        "cascade_recall", "cascade", "--cascade: target recall of the kept set vs the judge alone.", "Cascade", "recall"
    ),
    Flag("cascade_precision", "cascade", "--cascade: target precision of the kept set.", "Cascade", "precision"),
    Flag("cascade_threshold", "cascade", "--cascade: a row is kept when its score >= this.", "Cascade", "threshold"),
    Flag(
        "cascade_confidence",
        "cascade",
        "--cascade: confidence that both targets hold (one-sided Clopper-Pearson bounds on sample rows the "
        "band was not chosen on).",
        "Cascade",
        "confidence",
    ),
    Flag(
        "cascade_min_saving",
        "cascade",
        "--cascade: give up after the sample unless the certified band leaves at least this share of the "
        "other rows to the predictor.",
        "Cascade",
        "min_saving",
    ),
    Flag(
        "cascade_stop",
        "cascade",
        "--cascade: when it gives up, stop after the sample instead of rating the other rows with the judge.",
        "Cascade",
        "stop",
    ),
    Flag(
        "cascade_start",
        "cascade",
        "--cascade: the predictor: auto (whichever of the dimension's shipped one, one distilled from the "
        "sample, or both combined ranks the sample best), shipped or distilled.",
        "Cascade",
        "start",
    ),
)


def flag_default(f: Flag) -> Any:
    """A flag's one default: the field's where its value goes (the judge's options: None, the judge decides)."""
    if f.to == "judge":
        return None
    spec = {x.name: x for x in dataclasses.fields(TARGETS[f.to])}[f.key]
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return spec.default


def flag_defaults(names: Iterable[str]) -> dict[str, Any]:
    """{name: its one default} for these FLAGS names (a recipe's rate section starts from them)."""
    by_name = {f.name: f for f in FLAGS}
    return {n: flag_default(by_name[n]) for n in names}


def flag_type(f: Flag) -> Any:
    """What a flag's value is, as the CLI parses it (its field's type, resolved)."""
    if f.cli_type is not None:
        return f.cli_type
    if f.to == "judge":
        return JUDGE[f.key] | None
    return typing.get_type_hints(TARGETS[f.to])[f.key]


def from_flags(values: Mapping[str, Any]) -> RateOptions:
    """RateOptions from flat values named as FLAGS names them (the CLI's, a recipe's rate stage): each goes where
    FLAGS says (a RateOptions field FLAGS does not list, such as `format`, goes to it by its name); one not
    given keeps its declared default; judge options left None are not passed on."""
    by_name = {f.name: f for f in FLAGS}
    plain = {x.name for x in dataclasses.fields(RateOptions)} - {"judge_options", "options"}  # e.g. format
    unknown = sorted(set(values) - set(by_name) - plain)
    if unknown:
        raise UserError(f"rate does not take {', '.join(unknown)}; it takes: {', '.join(by_name)}")
    parts: dict[str, dict[str, Any]] = {"rate": {}, "run": {}, "judge": {}, "cascade": {}}
    for name, value in values.items():
        f = by_name.get(name)
        parts[f.to if f else "rate"][f.key if f else name] = value
    rate = parts["rate"]
    if rate.get("cascade"):
        rate["cascade"] = CascadeOptions(seed=rate.get("seed", 0), **parts["cascade"])
    judge = {k: v for k, v in parts["judge"].items() if v is not None}
    return RateOptions(judge_options=judge, options=RunOptions(**parts["run"]), **rate)
