"""The report's view of selections made from its ratings file: for each (a sidecar `NAME.selection.json` that
`alpagasus select` writes beside its output), its size, mean score, mean response length, redundancy (mean
cosine similarity of each kept row to its nearest other kept row, MiniLM embeddings of the whole example) and a
2-D map (PCA of the embeddings) of kept against dropped rows.

Embeddings come from the store the selection used (or the default store) and are computed there when missing.
Memory: one streaming pass over the ratings file keeps each row's id, score and response length (flat columns),
and the prompts of the near-duplicate pairs a sidecar lists (read from the rows, in their own format); the map
shows a sample of at most MAP_ROWS rows, and redundancy of a selection larger than REDUNDANCY_ROWS is measured
on a fixed sample of that many of its rows."""

from __future__ import annotations

import json
import math
import random
from array import array
from pathlib import Path
from typing import Any, Callable, Sequence

from alpagasus.report.figures import escape, fmt, img_tag, png_bytes, pyplot, table, write_png
from alpagasus.report.ratings import ReportError, iter_ratings, row_sample

MAP_ROWS = 3000
REDUNDANCY_ROWS = 5000
DUPLICATES_SHOWN = 200  # near-duplicate pairs listed per selection
SNIPPET = 100  # characters of a prompt shown beside a near-duplicate


def read_selection(path: str | Path) -> dict[str, Any]:
    """A sidecar, or a training file whose sidecar lies beside it."""
    p = Path(path)
    if not p.name.endswith(".selection.json"):
        p = p.with_suffix(".selection.json")
    try:
        sel = json.loads(p.read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise ReportError(
            f"{path}: cannot read the selection ({e}); `alpagasus select` writes NAME.selection.json beside its output"
        ) from e
    if not isinstance(sel, dict) or not isinstance(sel.get("kept_ids"), list):
        raise ReportError(f"{p}, field 'kept_ids': missing (is this a sidecar written by `alpagasus select`?)")
    sel["path"] = str(p)
    return sel


def selection_name(sel: dict[str, Any]) -> str:
    name = f"{sel.get('rule')} {sel.get('value') if sel.get('value') is not None else ''}".strip()
    if sel.get("dedup"):
        name += " + dedup"
    if sel.get("diverse"):
        name += f" + {sel['diverse'] if isinstance(sel['diverse'], str) else sel['diverse'].get('method')}"
    return name


def summarize_selections(
    ratings: str | Path,
    paths: Sequence[str | Path],
    store: str | Path | None = None,
    encode: Callable[[list[str]], Any] | None = None,
) -> tuple[list[dict], dict]:
    """(one summary per selection, the map's data). Selections of another ratings file are refused."""
    import numpy as np

    sels = [read_selection(p) for p in paths]
    for s in sels:
        if s.get("ratings") and Path(s["ratings"]).resolve() != Path(ratings).resolve():
            raise ReportError(f"{s['path']}: made from {s['ratings']}, not from {ratings}")
    kept_sets = [set(s["kept_ids"]) for s in sels]
    dups = [[d for d in (s.get("duplicates") or [])[:DUPLICATES_SHOWN] if isinstance(d, dict)] for s in sels]
    # the rows of the listed pairs (1-based, as `select` numbers them): their prompts are read in this pass
    dup_rows = {r - 1 for ds in dups for d in ds for r in (d.get("row"), d.get("twin_row")) if type(r) is int}
    ids: list[str] = []
    scores, lengths = array("d"), array("q")
    prompts: dict[int, str] = {}
    for i, (_, row) in enumerate(iter_ratings(ratings)):
        ids.append(str(row.get("id") or ""))
        ok = row.get("status") == "ok" and row.get("score") is not None
        scores.append(float(row["score"]) if ok else math.nan)
        ex = row_sample(row)  # read in its own format: a chat row's response is its last assistant turn
        lengths.append(len(ex.response) if ex is not None else 0)
        if i in dup_rows and ex is not None:
            prompts[i] = ex.prompt[:SNIPPET]
    rng = random.Random(0)
    with_text = [i for i, x in enumerate(ids) if x]  # an invalid row has no id and no text to embed
    sample = sorted(rng.sample(with_text, min(MAP_ROWS, len(with_text))))
    per_sel = []
    for s, kept in zip(sels, kept_sets):
        pos = [i for i, x in enumerate(ids) if x in kept]
        red_pos = pos if len(pos) <= REDUNDANCY_ROWS else sorted(rng.sample(pos, REDUNDANCY_ROWS))
        per_sel.append((s, pos, red_pos))
    wanted = set(sample).union(*(set(r) for _, _, r in per_sel))
    vectors = _vectors(ratings, ids, wanted, sels, store, encode)
    out = []
    from alpagasus.select.diverse import redundancy

    for (s, pos, red_pos), ds in zip(per_sel, dups):
        sc = [scores[i] for i in pos if not math.isnan(scores[i])]
        out.append(
            {
                "name": selection_name(s),
                "path": s["path"],
                "size": len(pos),
                "mean_score": float(np.mean(sc)) if sc else None,
                "mean_length": float(np.mean([lengths[i] for i in pos])) if pos else None,
                "redundancy": redundancy(np.stack([vectors[ids[i]] for i in red_pos])) if len(red_pos) > 1 else None,
                "redundancy_rows": len(red_pos),
                "duplicates": len(s.get("duplicates") or []),
                "diverse": s.get("diverse"),
                "duplicate_list": [_pair(d, prompts) for d in ds],
            }
        )
    map_data = {
        "points": np.stack([vectors[ids[i]] for i in sample]) if sample else None,
        "kept": [[ids[i] in kept for i in sample] for kept in kept_sets],
    }
    return out, map_data


def _pair(d: dict[str, Any], prompts: dict[int, str]) -> dict[str, Any]:
    """One listed near-duplicate pair of a sidecar (hand edits possible: values kept as they are, escaped on
    the page) with both rows' prompts, read from the ratings file by row number."""

    def prompt(r: Any) -> str:
        return prompts.get(r - 1, "") if type(r) is int else ""

    return {
        "row": d.get("row"),
        "twin_row": d.get("twin_row"),
        "jaccard": d.get("jaccard"),
        "prompt": prompt(d.get("row")),
        "twin_prompt": prompt(d.get("twin_row")),
    }


def _vectors(
    ratings: str | Path,
    ids: list[str],
    wanted: set[int],
    sels: list[dict],
    store: str | Path | None,
    encode: Callable | None,
) -> dict[str, Any]:
    from alpagasus.paths import default_store
    from alpagasus.select.embed import Embedder, embedding_text, load_vectors
    from alpagasus.store import opened

    used = next((s["diverse"].get("store") for s in sels if isinstance(s.get("diverse"), dict)), None)
    store_path = Path(store or used or default_store())
    with opened(store_path) as st:  # checked like rate's: a damaged or newer store is a UserError
        emb = Embedder(st, encode)
        emb.ensure(
            (ids[i], embedding_text(row)) for i, (_, row) in enumerate(iter_ratings(ratings)) if i in wanted and ids[i]
        )
        return load_vectors(st, [ids[i] for i in wanted], emb.encoder)


def plot_map(map_data: dict, names: Sequence[str]) -> bytes | None:
    """PCA of the sampled rows' embeddings (axes shared by every selection), one panel per selection."""
    import numpy as np

    pts = map_data["points"]
    if pts is None or len(pts) < 3 or not names:
        return None
    centred = pts - pts.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    plt = pyplot()
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 4), squeeze=False)
    for ax, name, kept in zip(axes[0], names, map_data["kept"]):
        k = np.asarray(kept, dtype=bool)
        ax.scatter(xy[~k, 0], xy[~k, 1], s=4, c="#cccccc", label="dropped")
        ax.scatter(xy[k, 0], xy[k, 1], s=6, c="#d62728", label="kept")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
    axes[0][0].legend(loc="lower left", fontsize=8)
    return png_bytes(fig)


def selections_html(out: Path, s: dict[str, Any], map_png: bytes | None) -> str:
    """The page's section (empty when the report was given no selection); writes selections.png."""
    sels = s.get("selections")
    if not sels:
        return ""
    body = [
        [
            escape(x["name"]),
            fmt(x["size"]),
            fmt(x["mean_score"], 3),
            fmt(x["mean_length"], 0),
            fmt(x["redundancy"], 3),
            fmt(x["duplicates"]),
        ]
        for x in sels
    ]
    parts = [
        "<h2>Selections</h2><p>Redundancy: mean cosine similarity of each kept row to its nearest other "
        "kept row (all-MiniLM-L6-v2 over the whole example); lower is more diverse.</p>",
        table(
            "selections",
            ["selection", "rows", "mean score", "mean response length", "redundancy", "near-duplicates removed"],
            body,
        ),
    ]
    if map_png is not None:
        write_png(out / "selections.png", map_png)
        parts.append(
            f"<figure>{img_tag(map_png, 'embedding map of kept and dropped rows', 'img-selections')}"
            "<figcaption>selections.png: PCA of the embeddings of a sample of rows</figcaption></figure>"
        )
    for x in sels:
        if x.get("duplicate_list"):
            rows = [
                [
                    fmt(d.get("row")),
                    escape(d["prompt"], SNIPPET),
                    fmt(d.get("twin_row")),
                    escape(d["twin_prompt"], SNIPPET),
                    fmt(d.get("jaccard"), 2),
                ]
                for d in x["duplicate_list"]
            ]  # a sidecar may be edited by hand: every cell escaped
            parts.append(
                f"<h3>{escape(x['name'])}: near-duplicates removed</h3>"
                + table(None, ["row removed", "prompt", "twin kept", "prompt", "Jaccard"], rows)
            )
    return "".join(parts)
