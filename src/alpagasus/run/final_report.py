"""The final report of an experiment (`alpagasus run`): comparisons, training times, selection sizes, plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alpagasus.data import atomic_writer, write_json
from alpagasus.report.figures import CSP, escape, img_tag, table

# The columns of a comparison's results shown per test set (compare's summary.json names them).
RESULT_COLUMNS = (
    "win",
    "tie",
    "lose",
    "winning_score",
    "winning_score_ci",
    "lc_winning_score",
    "lc_winning_score_ci",
    "questions",
    "unparsed",
    "disagreement",
)


def read_numbers(exp: Any) -> dict[str, Any]:
    """The numbers, from what the stages wrote (never recomputed)."""
    d: Path = exp.dir
    sel = exp.done("select") or {}
    sizes = sel.get("sizes", {})
    times, losses, lengths = {}, {}, {}
    for name in exp.sets():
        metrics = (exp.done(f"train-{name}") or {}).get("metrics") or {}
        # training seconds across resumes when the run recorded them (train_time_total_s), else this process's
        times[name] = metrics.get("train_time_total_s", metrics.get("wall_time_s"))
        losses[name] = loss_change(metrics.get("loss_history") or [])
        lengths[name] = mean_output_chars(d / "sets" / f"{name}.json")
    reference = "all" if "all" in times else "filtered"  # the paper's ratio is to all; without it, to filtered
    full = times.get(reference)
    ratio = {k: (round(v / full, 3) if v and full else None) for k, v in times.items()}
    comparisons = {}
    for b in exp.sets()[1:]:
        f = d / "compare" / f"filtered_vs_{b}" / "summary.json"
        if f.exists():
            s = json.loads(f.read_text())
            comparisons[f"filtered vs {b}"] = {
                "dir": str(f.parent.relative_to(d)),
                "judge": s.get("judge"),
                "judge_agreement": known_agreement(s.get("judge")),
                "results": s.get("results", {}),
                "position_bias": s.get("position_bias"),
            }
    rate = exp.done("rate") or {}
    return {
        "name": exp.r["name"],
        "judge": rate.get("judge"),
        "selection_sizes": sizes,
        "train_time_s": times,
        "train_time_ratio": ratio,
        "train_time_reference": reference,
        "train_loss": losses,
        "mean_output_chars": lengths,
        "comparisons": comparisons,
    }


def loss_change(history: list[dict]) -> dict | None:
    """The mean logged training loss of the first and of the last quarter of the run (one step each with fewer
    than eight), and whether it fell: a model that did not learn makes its comparisons say nothing. Quarters,
    because one batch's loss is noisy (a batch of long answers alone can end higher than the first).
    None with fewer than two logged losses."""
    values = [float(e["loss"]) for e in history if e.get("loss") is not None]
    if len(values) < 2:
        return None
    k = max(1, len(values) // 4)
    first, last = sum(values[:k]) / k, sum(values[-k:]) / k
    return {"first": round(first, 4), "last": round(last, 4), "fell": last < first, "steps_averaged": k}


def known_agreement(judge: str | None) -> str:
    """What is known of a pairwise judge, to sit beside its verdicts: its judge card's key figures
    (judgecheck/cards), else the hand-written note of compare/known_agreement.json, by the judge's name."""
    from alpagasus.judgecheck.cards import caveat

    return caveat(judge, "pairwise")


def mean_output_chars(path: Path) -> float | None:
    """Mean response length (characters) of a training set: length is a known confounder (Long-Is-More)."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    from alpagasus.formats import example_of
    from alpagasus.records import Example

    samples = [example_of(r) for r in rows if isinstance(r, dict)]  # any row format: the judged response's length
    outputs = [len(x.response) for x in samples if isinstance(x, Example)]
    return round(sum(outputs) / len(outputs), 1) if outputs else None


LC_NOTE = (
    "lc_winning_score: the length-controlled winning score, the one a logistic model of the outcomes on the "
    "answers' length difference predicts at equal lengths (AlpacaEval 2's length control; docs/compare.md); "
    "where it sits far below the raw score, much of the raw win comes from longer answers."
)
SET_NOTE = "Training loss: the mean of the first and of the last quarter of the logged steps."


def set_columns(d: dict) -> list[str]:
    """The training-set table's header; the time ratio names the set it is relative to."""
    return [
        "set",
        "examples",
        "mean response chars",
        "training s",
        f"time ratio to {d.get('train_time_reference', 'all')}",
        "training loss first -> last",
    ]


def set_rows(d: dict) -> list[list[str]]:
    """One row per training set: its size, response length, training time and loss."""
    rows = []
    for k, n in d["selection_sizes"].items():
        loss = d.get("train_loss", {}).get(k)
        shown = f"{loss['first']:.3f} -> {loss['last']:.3f}" if loss else "-"
        rows.append(
            [
                k,
                str(n),
                _fmt(d.get("mean_output_chars", {}).get(k)),
                _fmt(d["train_time_s"].get(k)),
                _fmt(d.get("train_time_ratio", {}).get(k)),
                shown,
            ]
        )
    return rows


def training_notes(d: dict) -> list[str]:
    """A warning for each set whose training loss did not fall."""
    return [
        f"the model trained on '{k}' did not learn (training loss {v['first']:.3f} -> {v['last']:.3f}): "
        "comparisons with it say nothing about its data"
        for k, v in d.get("train_loss", {}).items()
        if v and not v["fell"]
    ]


def write_final_report(exp: Any) -> dict:
    """RUN_DIR/final.json, final.md and final.html (plots embedded); returns the numbers."""
    data = read_numbers(exp)
    write_json(exp.dir / "final.json", data)
    with atomic_writer(exp.dir / "final.md") as f:
        f.write(_markdown(data))
    with atomic_writer(exp.dir / "final.html") as f:
        f.write(_html(data, exp.dir))
    return {"final": str(exp.dir / "final.html"), "comparisons": list(data["comparisons"])}


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, list):  # a 95% interval
        return "-".join(f"{x:.3f}" for x in v)
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _notes(c: dict) -> list[str]:
    """Per test set, whether the winning score is distinguishable from noise; the judge's position-bias note and
    its known agreement with GPT-4."""
    out = [f"{ts}: {r['noise']}" for ts, r in c["results"].items() if r.get("noise")]
    out += [f"position bias: {c['position_bias']}"] if c.get("position_bias") else []
    return out + ([f"judge agreement with GPT-4: {c['judge_agreement']}"] if c.get("judge_agreement") else [])


def _cell(r: dict, column: str) -> Any:
    """A result's column; the `lc_` ones from its length-controlled record (compare/lc.py, docs/compare.md)."""
    return (r.get("length_controlled") or {}).get(column[3:]) if column.startswith("lc_") else r.get(column)


def _rows(results: dict) -> list[list[str]]:
    return [[ts] + [_fmt(_cell(r, c)) for c in RESULT_COLUMNS] for ts, r in results.items()]


def _markdown(d: dict) -> str:
    head = set_columns(d)
    out = [
        f"# {d['name']}: filtered vs baselines",
        "",
        f"Rating judge: `{d['judge']}`",
        "",
        "## Selection and training",
        "",
        "| " + " | ".join(head) + " |",
        "|---" * len(head) + "|",
    ]
    out += ["| " + " | ".join(r) + " |" for r in set_rows(d)]
    out += [f"- {n}" for n in training_notes(d)]
    out += ["", SET_NOTE]
    for title, c in d["comparisons"].items():
        out += [
            "",
            f"## {title} (judge `{c['judge']}`)",
            "",
            "| test set | " + " | ".join(RESULT_COLUMNS) + " |",
            "|---" * (len(RESULT_COLUMNS) + 1) + "|",
        ]
        out += ["| " + " | ".join(r) + " |" for r in _rows(c["results"])]
        out += [""] + [f"- {n}" for n in _notes(c)]
    out += [
        "",
        "Winning score = (#win - #lose) / #questions + 1; above 1 the filtered model wins. Its interval: "
        "95% percentile bootstrap over questions (seeded; docs/compare.md).",
        "",
        LC_NOTE,
        "",
    ]
    return "\n".join(out)


def _img(path: Path) -> str:
    return img_tag(path.read_bytes(), path.parent.name) if path.exists() else ""


def _table(head: list[str], rows: list[list[str]]) -> str:
    return table(None, head, [[escape(c) for c in r] for r in rows])


def _html(d: dict, run_dir: Path) -> str:
    parts = [
        f"<h1>{escape(d['name'])}: filtered vs baselines</h1>",
        f"<p>Rating judge: <code>{escape(str(d['judge']))}</code>. "
        '<a href="report/index.html">The ratings report</a>.</p>',
        "<h2>Selection and training</h2>",
        _table(set_columns(d), set_rows(d)),
        f"<p>{escape(SET_NOTE)}</p>",
        "<ul>" + "".join(f"<li>{escape(n)}</li>" for n in training_notes(d)) + "</ul>",
    ]
    for title, c in d["comparisons"].items():
        parts += [
            f"<h2>{escape(title)}</h2>",
            f"<p>judge <code>{escape(str(c['judge']))}</code></p>",
            _table(["test set", *RESULT_COLUMNS], _rows(c["results"])),
            "<ul>" + "".join(f"<li>{escape(n)}</li>" for n in _notes(c)) + "</ul>",
            _img(run_dir / c["dir"] / "win_tie_lose.png"),
        ]
    parts += [f"<p>{escape(LC_NOTE)}</p>"] if d["comparisons"] else []
    style = (
        "body{font-family:sans-serif;max-width:960px;margin:2em auto}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'>"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}"><title>{escape(d["name"])}</title>'
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n"
    )
