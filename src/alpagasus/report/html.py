"""The ratings report's page. Rated text is untrusted: every piece of it is HTML-escaped, and the page's
Content-Security-Policy allows no script and no remote content, so a hostile example cannot act in a browser.
Plots (`report.charts`) are PNG files beside the page and also embedded as data URIs, so index.html alone is
the whole report."""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any, Sequence

from alpagasus.data import atomic_writer
from alpagasus.report.charts import plot_confusion, plot_histogram, plot_kept, plot_keyword_bins, plot_length
from alpagasus.report.figures import escape, fmt, img_tag, table, write_png
from alpagasus.report.ratings import row_sample, sample_parts
from alpagasus.report.scan import SHOWN as PROBLEMS_SHOWN
from alpagasus.report.scan import Scan
from alpagasus.select.rules import BINS

CLIP = 600  # characters of a text field shown on the page


def esc(value: Any, clip: int | None = CLIP) -> str:
    """Escaped, and clipped to what a page can show."""
    return escape(value, clip)


def fmt_score(x: Any) -> str:
    """Scores are cut, not rounded, to 2 decimals: 2.997 must not read "3" in the "<3" bin."""
    if x is None:
        return "–"
    return f"{Decimal(repr(float(x))).quantize(Decimal('0.01'), rounding=ROUND_FLOOR).normalize():f}"


def pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "–"


def img(name: str, data: bytes, alt: str) -> str:
    """A plot inline, captioned with the name of its PNG file beside the page."""
    return f"<figure>{img_tag(data, alt, f'img-{name}')}<figcaption>{name}.png</figcaption></figure>"


def _fields(r: dict[str, Any]) -> str:
    """The row's sample, read in its own format (`ratings.sample_parts`): its non-empty parts, labelled."""
    ex = row_sample(r)
    parts = sample_parts(ex) if ex is not None else []
    return "".join(f'<div class="field"><b>{esc(k)}</b><pre>{esc(v)}</pre></div>' for k, v in parts if v)


def _card(r: dict[str, Any], extra: str = "") -> str:
    flags = "".join(f'<span class="flag">{esc(f)}</span>' for f in r.get("flags") or [])
    score = f"score {fmt_score(r.get('score'))}" if r.get("score") is not None else esc(r.get("status"))
    expl = f'<div class="field"><b>judge</b><pre>{esc(r["explanation"])}</pre></div>' if r.get("explanation") else ""
    if isinstance(r.get("probs"), dict) and r["probs"]:  # logprob judges: the distribution behind the score
        probs = " ".join(f"{esc(k)}: {v:.2f}" for k, v in r["probs"].items() if isinstance(v, (int, float)))
        expl += f'<div class="probs">judge probabilities {probs}</div>'

    return (
        f'<div class="card"><div class="meta"><span class="score">{score}</span> id {esc(r.get("id"))}'
        f"{flags}</div>{_fields(r)}{expl}{extra}</div>"
    )


def examples_html(examples: dict[str, list[dict]], bins: dict[str, int]) -> str:
    parts = []
    for b in reversed(BINS):
        cards = "".join(_card(r) for r in examples[b]) or '<p class="none">no rows in this bin</p>'
        parts.append(
            f'<details class="bin" {"open" if examples[b] else ""}><summary>bin {b}: {bins[b]} rows, '
            f"{len(examples[b])} shown</summary>{cards}</details>"
        )
    return "".join(parts)


def problems_html(shown: dict[str, list[dict[str, Any]]], counts: dict[str, int]) -> str:
    """The first rows of each problem status (kept by the scan) and how many there are in all."""
    parts = []
    for status, what in (
        ("unparsed", "raw reply"),
        ("error", "error"),
        ("invalid_input", "reason"),
        ("empty", "reason"),
    ):
        bad, n = shown[status][:PROBLEMS_SHOWN], counts[status]
        if not n:
            parts.append(f'<p id="problems-{status}">{status}: none</p>')
            continue
        body = []
        for r in bad:
            where = (
                f"row {esc(r.get('row'))}, field {esc(r.get('field'))}"
                if status == "invalid_input"
                else esc(r.get("id"))
            )
            detail = r.get("raw") if status == "unparsed" and r.get("raw") else r.get("explanation")
            ex = row_sample(r)
            body.append([where, esc(ex.prompt if ex is not None else "", 200), f"<pre>{esc(detail, 1000)}</pre>"])
        more = f"<p>… and {n - PROBLEMS_SHOWN} more.</p>" if n > PROBLEMS_SHOWN else ""
        parts.append(f"<h3>{status}: {n}</h3>" + table(f"problems-{status}", ["row / id", "prompt", what], body) + more)
    return "".join(parts)


def flagged_html(flagged: Sequence[dict[str, Any]], n: int) -> str:
    """The first flagged rows (kept by the scan) as cards; `n` flagged in all."""
    if not n:
        return '<p id="flagged-none">No row was flagged.</p>'
    more = f"<p>… and {n - PROBLEMS_SHOWN} more.</p>" if n > PROBLEMS_SHOWN else ""
    return f'<div id="flagged">{"".join(_card(r) for r in flagged[:PROBLEMS_SHOWN])}</div>{more}'


def keyword_html(s: dict[str, Any]) -> str:
    kw, rest = s["keywords"], s["keywords"]["rest"]
    words = ", ".join(f"{esc(k)} ({n})" for k, n in kw["per_keyword"].items())
    bins = table(
        "keyword-bins",
        ["group", "rows", "rated", "mean score", *BINS],
        [
            [name, g["rows"], g["rated"], fmt(g["mean_score"]), *(g["bins"][b] for b in BINS)]
            for name, g in (("with a keyword", kw), ("the rest", rest))
        ],
    )
    kept = table(
        "keyword-kept",
        ["threshold", "keyword rows kept", "% of rated", "rest kept", "% of rated"],
        [
            [
                t,
                kw["kept_at"][t],
                pct(kw["kept_at"][t], kw["rated"]),
                rest["kept_at"][t],
                pct(rest["kept_at"][t], rest["rated"]),
            ]
            for t in _main_thresholds(s)
        ],
    )
    return (
        f"<p>Keywords (case-sensitive substrings of a row's text: its turns, prompt and response): {words}.</p>"
        f"{bins}<h3>Kept per threshold, by group</h3>{kept}"
    )


def _main_thresholds(s: dict[str, Any]) -> list[str]:
    """The half points from 3 up, plus the chosen threshold: the rows of the page's threshold tables."""
    return [k for k in s["kept_at"] if (float(k) >= 3 and (float(k) * 2).is_integer()) or float(k) == s["threshold"]]


def agreement_html(agr: dict[str, Any], confusion_png: bytes) -> str:
    k = agr["keep"]
    stats = table(
        "agreement-stats",
        ["measure", "value"],
        [
            ["A", esc(agr["a"])],
            ["B", esc(agr["b"])],
            ["rows both rated", agr["common"]],
            ["rated in A only / B only", f"{agr['only_a']} / {agr['only_b']}"],
            ["Spearman of scores", fmt(agr["spearman"], 3)],
            [f"Cohen's kappa, keep at ≥ {agr['threshold']:g}", fmt(agr["kappa"], 3)],
            ["same keep/drop decision", fmt(agr["decision_agreement"], 3)],
            ["mean |score difference|", fmt(agr["mean_abs_diff"], 3)],
        ],
    )
    keep = table(
        "agreement-keep",
        ["", "B keeps", "B drops"],
        [["A keeps", k["both"], k["a_only"]], ["A drops", k["b_only"], k["neither"]]],
    )
    conf = table("agreement-confusion", ["A \\ B", *BINS], [[a, *(agr["confusion"][a][b] for b in BINS)] for a in BINS])
    worst = table(
        "agreement-worst",
        ["id", "A", "B", "B − A", "prompt"],
        [
            [esc(w["id"]), fmt_score(w["score_a"]), fmt_score(w["score_b"]), fmt(w["diff"]), esc(w["prompt"])]
            for w in agr["most_disagreeing"]
        ],
    )
    return (
        f'{stats}<h3>Keep/drop decisions</h3>{keep}<div class="row"><div><h3>Score bins</h3>{conf}</div>'
        f"{img('agreement', confusion_png, 'confusion matrix of score bins')}</div>"
        f"<h3>Where they disagree most</h3>{worst}"
    )


def overview_html(s: dict[str, Any]) -> str:
    """The counts table, and the warnings about the scale and (logprob judges) the score labels' mass."""
    overview = table(
        "overview",
        ["rows", "rated", "unparsed", "invalid input", "error", "empty", "flagged", "mean score", "score range"],
        [
            [
                s["total"],
                s["rated"],
                s["unparsed"],
                s["invalid"],
                s["error"],
                s["empty"],
                s["flagged"],
                fmt(s["mean_score"]),
                " – ".join(fmt_score(x) for x in s["score_range"]) if s["score_range"] else "–",
            ]
        ],
    )
    warn = (
        '<p class="warn">Scores above 5: this judge used a wider scale, and the paper\'s bins put them all in "5".</p>'
        if s["score_range"] and s["score_range"][1] > 5
        else ""
    )
    lm = s.get("label_mass")
    if lm:  # logprob judges: how much of the answer the score labels were (low: the "scores" are noise)
        warn += (
            f'<p id="label-mass">Label mass (probability the score labels held): median {lm["median"]:.3f} over '
            f"{lm['rows']} rows; {lm['under_floor']} ({pct(lm['under_floor'], lm['rows'])}) under "
            f"{lm['floor']:g}, the default --min-label-mass of API judges.</p>"
        )
    return overview + warn


def write_page(out: Path, s: dict[str, Any], scan: Scan, examples: dict[str, list[dict]], selections: str = "") -> None:
    """Draw the plots, write them beside the page, and write index.html with them embedded. `scan` gives the
    length plot its points and the problem and flagged lists their first rows; `s` has every count."""
    pngs = {
        "histogram": plot_histogram(s["bins"]),
        "kept": plot_kept(s),
        "keywords": plot_keyword_bins(s["keywords"]),
        "length": plot_length(scan.lengths, scan.scores, s["length_spearman"]),
    }
    if "agreement" in s:
        pngs["agreement"] = plot_confusion(s["agreement"])
    for name, data in pngs.items():
        write_png(out / f"{name}.png", data)
    rated = s["rated"]
    bins = table("bins", ["bin", "rows", "% of rated"], [[b, n, pct(n, rated)] for b, n in s["bins"].items()])
    kept = table(
        "kept",
        ["threshold", "rows kept", "% of rated"],
        [[t, s["kept_at"][t], pct(s["kept_at"][t], rated)] for t in _main_thresholds(s)],
    )
    length = s["length"]
    medians = ", ".join(f"{b}: {fmt(v)}" for b, v in length["median_length_by_bin"].items())
    fill = {
        "title": esc(f"Ratings report: {s['label']}", None),
        "label": esc(s["label"], None),
        "overview": overview_html(s),
        "histogram": f'<div class="row">{bins}{img("histogram", pngs["histogram"], "score histogram")}</div>',
        "kept": f'<div class="row">{kept}</div>{img("kept", pngs["kept"], "rows kept per threshold")}',
        "keywords": keyword_html(s) + img("keywords", pngs["keywords"], "score bins of keyword rows"),
        "length": (
            f'<p>Spearman of score against response length: <b id="length-spearman">'
            f"{fmt(length['spearman'], 3)}</b> over {length['n']} rated rows. Median length per bin: "
            f"{medians}.</p>"
            + "".join(
                f'<p class="warn">{esc(t)}</p>'
                for t in (length.get("reading"), s.get("judge_note"))  # judgecheck.cards
                if t
            )
            + img("length", pngs["length"], "score against length")
        ),
        "examples": examples_html(examples, s["bins"]),
        "problems": problems_html(
            scan.problems,
            {"unparsed": s["unparsed"], "error": s["error"], "invalid_input": s["invalid"], "empty": s["empty"]},
        ),
        "flagged": flagged_html(scan.flagged_rows, s["flagged"]),
        "agreement": (
            f"<h2>Agreement with a second rating</h2>{agreement_html(s['agreement'], pngs['agreement'])}"
            if "agreement" in s
            else ""
        ),
        "selections": selections,  # report.selections: the section of `--selection` files, already HTML
    }
    page = Template(resources.files("alpagasus.report").joinpath("page.html").read_text("utf-8"))
    with atomic_writer(out / "index.html") as f:
        f.write(page.substitute(fill))
