"""The paper's whole experiment from one recipe: rate -> select (filtered, random, longest, all) -> train one
model per set -> answer the test sets -> compare the filtered model with each baseline -> report.

Each stage writes its outputs and a done-marker (RUN_DIR/.done/STAGE.json) into the run directory; re-running
skips finished stages and resumes unfinished ones with their own mechanisms (the rating store, training
checkpoints, the answers already written, the judgment store).
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

from alpagasus.data import write_json
from alpagasus.rate.options import flag_defaults
from alpagasus.redact import redact_config

STAGES = ("rate", "select", "train", "generate", "compare", "report")
RATE_KEYS = ("judge", "mode", "dimension", "store", "concurrency", "batch_size", "base_url", "max_tokens")
DEFAULTS: dict[str, Any] = {
    "name": "experiment",
    "data": {"path": None, "limit": None, "sample": None, "seed": 0, "skip_invalid": True, "fields": {}},
    # rate's options as `alpagasus rate` names them, with their one default (rate/options.py), + the API key
    "rate": {**flag_defaults(RATE_KEYS), "api_key": None},
    "select": {
        "threshold": 4.5,
        "top_k": None,
        "keep_fraction": None,
        "baselines": ["random", "longest", "all"],
        "seed": 0,
        "exclude_flagged": False,
    },
    "train": {},
    "generate": {
        "testsets": ["vicuna", "koala", "sinstruct", "wizardlm"],
        "limit": None,
        "fraction": None,
        "seed": 0,
        "max_new_tokens": 512,
        "batch_size": None,
    },
    "compare": {
        "judge": None,
        "store": None,
        "max_tokens": 256,
        "max_reasks": 2,
        "base_url": None,
        "api_key": None,
        "concurrency": None,
    },
    "report": {"keywords": None, "threshold": None},
}
# numbers a recipe sets: (section, key) -> (type, least value or None); a None default may stay None
NUMBERS: dict[tuple[str, str], tuple[type, float | None]] = {
    ("data", "limit"): (int, 0),
    ("data", "sample"): (int, 0),
    ("data", "seed"): (int, None),
    ("rate", "concurrency"): (int, 1),
    ("rate", "batch_size"): (int, 1),
    ("rate", "max_tokens"): (int, 1),
    ("select", "threshold"): (float, None),
    ("select", "top_k"): (int, 0),
    ("select", "keep_fraction"): (float, 0),
    ("select", "seed"): (int, None),
    ("generate", "limit"): (int, 0),
    ("generate", "max_new_tokens"): (int, 1),
    ("generate", "batch_size"): (int, 1),
    ("generate", "fraction"): (float, 0),
    ("generate", "seed"): (int, None),
    ("compare", "max_tokens"): (int, 1),
    ("compare", "max_reasks"): (int, 0),
    ("compare", "concurrency"): (int, 1),
    ("report", "threshold"): (float, None),
}
BASELINES = ("random", "longest", "all", "diverse", "ifd", "dedup", "matched")  # the last four: select.arms


class RecipeError(ValueError):
    pass


def load_recipe(path: str | Path) -> dict[str, Any]:
    """The recipe merged over the defaults; unknown sections or keys are errors (typos cost GPU hours)."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise RecipeError(f"{path}: cannot read the recipe ({e})") from e
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of sections (name, data, rate, select, ...)")
    recipe = copy.deepcopy(DEFAULTS)
    for key, value in raw.items():
        if key not in recipe:
            raise RecipeError(f"{path}: unknown section {key!r} (known: {', '.join(DEFAULTS)})")
        if isinstance(recipe[key], dict):
            if not isinstance(value, dict):
                raise RecipeError(f"{path}: section {key!r} must be a mapping")
            unknown = set(value) - set(recipe[key]) if key != "train" else set()
            if unknown:
                raise RecipeError(f"{path}: unknown key(s) {', '.join(sorted(unknown))} in {key!r}")
            recipe[key].update(value)
        else:
            recipe[key] = value
    if not recipe["data"]["path"]:
        raise RecipeError(f"{path}: data.path is required")
    _check_values(path, recipe)
    return recipe


def _check_values(path: str | Path, recipe: dict[str, Any]) -> None:
    """Numbers, names and the training settings checked (and numbers converted) before anything runs: a typo
    found after the rating stage costs its time, after training a GPU's."""
    if not isinstance(recipe["name"], str) or not recipe["name"].strip():
        raise RecipeError(f"{path}: name must be a non-empty string")
    for (section, key), (kind, least) in NUMBERS.items():
        value = recipe[section][key]
        if value is None and DEFAULTS[section][key] is None:
            continue
        what = "an integer" if kind is int else "a number"
        try:
            number = kind(value) if not isinstance(value, bool) else None
            ok = number is not None and math.isfinite(number) and (kind is float or number == float(value))
        except (TypeError, ValueError):
            ok = False
        if not ok or number is None:
            raise RecipeError(f"{path}: {section}.{key} must be {what}, not {value!r}")
        fraction = key in ("keep_fraction", "fraction")
        if least is not None and number < least or (fraction and not 0 < number <= 1):
            bound = "in (0, 1]" if fraction else f"at least {least}"
            raise RecipeError(f"{path}: {section}.{key} must be {bound}, not {value!r}")
        recipe[section][key] = number
    bad = [b for b in recipe["select"]["baselines"] or () if b not in BASELINES]
    if bad or not isinstance(recipe["select"]["baselines"], list):
        raise RecipeError(f"{path}: select.baselines must be a list of {', '.join(BASELINES)}")
    from alpagasus.data import DataError
    from alpagasus.train import make_config

    try:
        make_config(**recipe["train"])
    except (DataError, ValueError) as e:
        raise RecipeError(f"{path}: train: {e}") from None


class Experiment:
    def __init__(self, recipe: dict[str, Any], run_dir: str | Path, log: Callable[[str], None] = print):
        self.r, self.dir, self.log = recipe, Path(run_dir), log
        if self.dir.exists() and not self.dir.is_dir():
            raise RecipeError(f"{self.dir}: a file, not a run directory; give another --run-dir")
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / ".done").mkdir(exist_ok=True)
        write_json(self.dir / "recipe.resolved.json", redact_config(recipe))  # no API key in the run dir

    def done(self, stage: str) -> dict | None:
        f = self.dir / ".done" / f"{stage}.json"
        return json.loads(f.read_text()) if f.exists() else None

    def mark(self, stage: str, info: dict) -> None:
        write_json(self.dir / ".done" / f"{stage}.json", {"stage": stage, "finished_at": time.time(), **info})

    def sets(self) -> list[str]:
        return ["filtered", *self.r["select"]["baselines"]]

    # ---- stages ---------------------------------------------------------------------------------
    def rate(self) -> dict:
        from alpagasus.rate.files import rate_file
        from alpagasus.rate.options import from_flags

        d, c = self.r["data"], self.r["rate"]
        data = {"field": d["fields"] or None, **{k: d[k] for k in ("skip_invalid", "limit", "sample", "seed")}}
        opts = from_flags({**{k: c[k] for k in RATE_KEYS}, "max_tokens": int(c["max_tokens"]), **data})
        opts.judge_options = {**opts.judge_options, **_given(c, "api_key")}  # a key is no CLI flag: recipe only
        s = rate_file(d["path"], self.dir / "ratings.jsonl", opts)
        assert not isinstance(s, dict)  # a dict only with dry_run
        r = s.run
        return {
            "judge": s.judge,
            "ok": r.ok,
            "unparsed": r.unparsed,
            "requests_sent": r.requests_sent,
            "seconds": round(r.elapsed_s, 1),
        }

    def select(self) -> dict:
        """The filtered set by the recipe's rule, then each baseline of the same size, through the CLI's
        streaming `select_file`; `exclude_flagged` keeps flagged rows out of every set alike."""
        from alpagasus.select.arms import ARMS, select_arm
        from alpagasus.select.files import select_file

        c = self.r["select"]
        value: float
        if c["top_k"] is not None:
            rule, value = "top_k", int(c["top_k"])
        elif c["keep_fraction"] is not None:
            rule, value = "keep_fraction", float(c["keep_fraction"])
        else:
            rule, value = "threshold", float(c["threshold"])
        opts: dict[str, Any] = {"seed": int(c["seed"]), "exclude_flagged": bool(c["exclude_flagged"])}
        ratings, out = self.dir / "ratings.jsonl", self.dir / "sets"
        n = select_file(ratings, out / "filtered.json", rule, value, **opts)["kept"]
        if not n:
            (out / "filtered.json").unlink()  # as if never written: the stage failed
            raise RecipeError(
                "the selection rule kept no example: lower select.threshold, or use select.top_k / "
                "select.keep_fraction (a weak judge rarely gives 4.5)"
            )
        sizes = {"filtered": n}
        for b in c["baselines"]:
            if b in ARMS:  # diversity, IFD and near-duplicate arms of the same size (select.arms)
                sizes[b] = select_arm(
                    b,
                    ratings,
                    out / f"{b}.json",
                    n,
                    opts,
                    store=self.r["rate"]["store"],
                    ifd_ratings=self._ifd_ratings,
                    reference=out / "filtered.json",
                )["kept"]
                continue
            sizes[b] = select_file(ratings, out / f"{b}.json", b, n if b != "all" else None, **opts)["kept"]
        return {"sizes": sizes}

    def _ifd_ratings(self) -> Path:
        """The data rated by Instruction-Following Difficulty (the `ifd` arm), in the same store."""
        from alpagasus.rate.files import rate_file
        from alpagasus.select.arms import IFD_JUDGE

        d, path = self.r["data"], self.dir / "ratings_ifd.jsonl"
        rate_file(
            d["path"],
            path,
            judge=IFD_JUDGE,
            store_path=self.r["rate"]["store"],
            field_map=d["fields"] or None,
            skip_invalid=d["skip_invalid"],
            limit=d["limit"],
            sample=d["sample"],
            seed=d["seed"],
        )
        return path

    def train(self) -> dict:
        from alpagasus.train import make_config, train

        out = {}
        for name in self.sets():
            run = self.dir / "models" / name
            marker = f"train-{name}"
            if not self.done(marker):
                self.log(f"training on {name}")
                metrics = train(self.dir / "sets" / f"{name}.json", run, make_config(**self.r["train"]))
                self.mark(marker, {"metrics": metrics})
            record = self.done(marker)
            assert record is not None  # marked above or by an earlier run
            out[name] = record["metrics"]
        return {
            "wall_time_s": {k: v.get("wall_time_s") for k, v in out.items()},
            "steps": {k: v.get("steps") for k, v in out.items()},
        }

    def generate(self) -> dict:
        from alpagasus.generate.answer import generate
        from alpagasus.generate.config import GenerateConfig

        g = self.r["generate"]
        out = {}
        for name in self.sets():
            cfg = GenerateConfig(
                limit=g["limit"],
                fraction=g["fraction"],
                sample_seed=int(g["seed"]),
                max_new_tokens=int(g["max_new_tokens"]),
                batch_size=g["batch_size"],
                name=name,
            )
            res = generate(str(self.dir / "models" / name), g["testsets"], self.dir / "answers" / f"{name}.jsonl", cfg)
            out[name] = {"answers": len(res.answers), "generated": res.generated, "failed": len(res.failed)}
        return out

    def compare(self) -> dict:
        from alpagasus.compare.files import compare_files
        from alpagasus.engine.types import RunOptions

        c = self.r["compare"]
        run = RunOptions(max_tokens=int(c["max_tokens"]), max_reasks=int(c["max_reasks"]))
        out = {}
        for b in self.sets()[1:]:
            rep = compare_files(
                [self.dir / "answers" / "filtered.jsonl", self.dir / "answers" / f"{b}.jsonl"],
                self.dir / "compare" / f"filtered_vs_{b}",
                judge=c["judge"],
                store_path=c["store"],
                judge_options=_given(c, "base_url", "api_key", "concurrency"),
                options=run,
            )
            assert not isinstance(rep, dict)  # a dict only with dry_run
            out[b] = rep.summary
        return {"comparisons": list(out)}

    def report(self) -> dict:
        from alpagasus.report import DEFAULT_KEYWORDS, build_report
        from alpagasus.run.final_report import write_final_report

        c = self.r["report"]
        threshold = c["threshold"] if c["threshold"] is not None else float(self.r["select"]["threshold"])
        build_report(
            self.dir / "ratings.jsonl",
            self.dir / "report",
            keywords=c["keywords"] or DEFAULT_KEYWORDS,
            threshold=threshold,
        )
        return write_final_report(self)

    # ---- driver ---------------------------------------------------------------------------------
    def run(self, until: str | None = None, only: str | None = None) -> dict:
        _check_stages(until, only)
        stages = [only] if only else list(STAGES[: STAGES.index(until) + 1] if until else STAGES)
        results = {}
        for stage in stages:
            if self.done(stage) and not only:
                self.log(f"[{stage}] done already, skipped")
                results[stage] = self.done(stage)
                continue
            self.log(f"[{stage}] running")
            t0 = time.perf_counter()
            info = getattr(self, stage)()
            info["seconds"] = round(time.perf_counter() - t0, 1)
            self.mark(stage, info)
            results[stage] = info
        return results


def _check_stages(*names: str | None) -> None:
    for name in names:
        if name is not None and name not in STAGES:
            raise RecipeError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")


def _given(section: dict[str, Any], *keys: str) -> dict[str, Any]:
    """The judge options a recipe section sets (unset ones leave the judge's defaults)."""
    return {k: section[k] for k in keys if section.get(k) is not None}


def run_recipe(
    recipe_path: str | Path,
    run_dir: str | Path | None = None,
    until: str | None = None,
    only: str | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    _check_stages(until, only)
    recipe = load_recipe(recipe_path)
    run_dir = run_dir or Path("runs") / recipe["name"]
    return Experiment(recipe, run_dir, log).run(until=until, only=only)
