"""`select_file`: a ratings file in, a training file out, streaming (memory stays flat).

Beside the training file it writes `NAME.selection.json` (the sidecar): the rule, the kept rows' content ids,
the near-duplicates removed and their surviving twins. `alpagasus report --selection` reads it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from alpagasus import formats
from alpagasus.data import DataError, read_jsonl, write_json, write_rows
from alpagasus.errors import UserError
from alpagasus.ratings_file import rating_field, user_fields
from alpagasus.records import Example, InvalidRow
from alpagasus.select.rules import BINS, Columns, SelectError, choose, score_bin, training_row

SIDECAR_FORMAT = 1


def sidecar_path(output: str | Path) -> Path:
    """Where the selection's sidecar lives: OUTPUT with its suffix replaced by `.selection.json`."""
    return Path(output).with_suffix(".selection.json")


def select_file(
    ratings: str | Path,
    output: str | Path,
    rule: str,
    value: Any = None,
    seed: int = 0,
    exclude_flagged: bool = False,
    *,
    diverse: str | None = None,
    similarity: float | None = None,
    pool: int | None = None,
    dedup: bool = False,
    dedup_threshold: float | None = None,
    store: str | Path | None = None,
    encode: Callable[[list[str]], Any] | None = None,
    match_length: str | Path | None = None,
    format: str | None = None,
) -> dict:
    """Select from a ratings file by one rule and write the training file, each row in the input's own format
    exactly as the ratings file holds it. Returns counts.
    `exclude_flagged` drops rows flagged as suspicious (e.g. prompt injection) whatever their score.
    `dedup` first removes near-duplicates (the best-rated copy stays); `diverse` ("deita" or "facility") then
    spends the rule's budget on rows unlike each other (embeddings kept in `store`, the default store if None).
    Two streaming passes (what the rules need, in flat arrays; then the picked rows) and, for `diverse`, one
    more per embedding round: memory stays flat. `match_length` (with the random rule): draw the K rows with the
    response-length distribution of that reference selection (select.matching). `format`: the rows' format
    (formats.names()); None reads each row in the one its keys show; a named one that a row does not fit is an
    error naming the row and the field."""
    kwargs = _rule_options(rule, value, seed)
    if match_length is not None and (rule != "random" or diverse):
        raise UserError("--match-length goes with --random (a length-matched random baseline)")
    if format is not None and format not in formats.names():
        raise UserError(f"--format {format!r}: unknown; one of {', '.join(formats.names())}")
    scan = _scan(ratings, exclude_flagged, dedup, dedup_threshold, format)
    cols, counts = scan["cols"], scan["counts"]
    result: dict[str, Any] = {}
    try:
        if diverse:
            result["diverse"] = _diverse(ratings, scan, rule, value, diverse, similarity, pool, store, encode)
            picked = result["diverse"].pop("positions")
        elif match_length is not None:
            result["matched"] = _matched(cols, match_length, int(value), seed)
            picked = result["matched"].pop("positions")
        else:
            picked = choose(cols, rule, **kwargs)
        keep = bytearray(len(cols))
        for i in picked:
            keep[i] = 1
        rows = (training_row(r) for i, r in enumerate(read_jsonl(ratings)) if keep[i])
        n = write_rows(output, rows, columns=list(scan["columns"]))
    except (SelectError, DataError, ValueError) as e:
        raise UserError(str(e)) from e
    result.update(_counts(counts, exclude_flagged, scan["bins"], n, rule))
    if dedup:
        result["duplicates"] = _duplicate_list(ratings, scan["duplicates"], scan["ids"])
    sidecar: dict[str, Any] = {
        "format": SIDECAR_FORMAT,
        "ratings": str(Path(ratings).resolve()),
        "output": str(output),
        "rule": rule,
        "value": value,
        "seed": seed,
        "diverse": diverse,
        "dedup": dedup,
        "kept_ids": [scan["ids"][i] for i in picked],
        **{k: result[k] for k in ("diverse", "duplicates", "matched") if k in result},
    }
    write_json(sidecar_path(output), sidecar)
    result["sidecar"] = str(sidecar_path(output))
    return result


def _rule_options(rule: str, value: Any, seed: int) -> dict[str, Any]:
    """`choose`'s keyword arguments for a rule and its value (a rule that needs one and has none: UserError)."""
    kwargs: dict[str, Any] = {"seed": seed}
    if value is None and rule != "all":
        raise UserError(
            f"rule {rule} needs a value (a threshold, a fraction or a size K)"
            if rule in ("threshold", "keep_fraction")
            else f"rule {rule} needs a size K"
        )
    if rule == "threshold":
        kwargs["threshold"] = float(value)
    elif rule == "keep_fraction":
        kwargs["fraction"] = float(value)
    elif rule in ("top_k", "random", "longest"):
        kwargs["k"] = int(value)
    return kwargs


def _counts(counts: dict[str, int], exclude_flagged: bool, bins: dict, kept: int, rule: str) -> dict[str, Any]:
    return {
        "rows": counts["rows"],
        "flagged": counts["flagged"],
        "excluded_flagged": counts["flagged"] if exclude_flagged else 0,
        "rated": counts["ok"],
        "unparsed": counts["unparsed"],
        "empty": counts["empty"],
        "other": counts["rows"] - counts["ok"] - counts["unparsed"] - counts["empty"],
        "bins": bins,
        "kept": kept,
        "rule": rule,
    }


def _scan(
    ratings: str | Path, exclude_flagged: bool, dedup: bool, dedup_threshold: float | None, format: str | None
) -> dict:
    """The first pass: flat columns, counts, bins, content ids and (with `dedup`) near-duplicate groups."""
    from alpagasus.select.embed import sample_text

    cols, bins, columns, ids = Columns(), dict.fromkeys(BINS, 0), {}, []
    counts = {"rows": 0, "flagged": 0, "ok": 0, "unparsed": 0, "empty": 0}
    near = _near_duplicates(dedup_threshold) if dedup else None
    try:
        for r in read_jsonl(ratings):
            counts["rows"] += 1
            if rating_field(r, "status") is None:
                raise UserError(
                    f"{ratings}, row {counts['rows']}, field 'status': missing (is this an `alpagasus rate` output?)"
                )
            flagged = bool(rating_field(r, "flags"))
            counts["flagged"] += flagged
            status, score = rating_field(r, "status"), rating_field(r, "score")
            if status in ("ok", "unparsed", "empty"):
                counts[status] += 1
            if status == "ok" and score is not None:
                bins[score_bin(float(score))] += 1
            columns.update(dict.fromkeys(user_fields(r)))
            ex = cols.add(r, excluded=exclude_flagged and flagged, format=format)
            if format is not None and isinstance(ex, InvalidRow) and status != "invalid_input":
                raise UserError(f"{ratings}, row {counts['rows']}, field '{ex.field}': {ex.reason} (--format {format})")
            ids.append(str(rating_field(r, "id") or ""))
            if near is not None and cols.valid[-1] and isinstance(ex, Example):
                near.add(len(ids) - 1, sample_text(ex), cols.scores[-1])
    except (OSError, ValueError) as e:
        raise UserError(f"{ratings}: cannot read ratings ({e})") from e
    dups = near.resolve() if near is not None else None
    if dups is not None:
        for p in dups.removed:  # a removed copy is neither rated nor valid for any rule
            cols.scores[p] = float("nan")
            cols.valid[p] = 0
    return {"cols": cols, "counts": counts, "bins": bins, "columns": columns, "ids": ids, "duplicates": dups}


def _matched(cols: Columns, reference: str | Path, k: int, seed: int) -> dict:
    from dataclasses import asdict

    from alpagasus.select.matching import match_lengths, reference_lengths

    return asdict(match_lengths(cols, reference_lengths(reference), k, seed, source=str(reference)))


def _near_duplicates(threshold: float | None) -> Any:
    from alpagasus.select.dedup import THRESHOLD, NearDuplicates

    try:
        return NearDuplicates(THRESHOLD if threshold is None else threshold)
    except (ImportError, ValueError) as e:
        raise UserError(str(e)) from e


def _diverse(
    ratings: str | Path,
    scan: dict,
    rule: str,
    value: Any,
    method: str,
    similarity: float | None,
    pool: int | None,
    store: str | Path | None,
    encode: Callable | None,
) -> dict:
    from alpagasus.paths import default_store
    from alpagasus.select.embed import ENCODER_KEY, Embedder
    from alpagasus.select.picking import DEFAULT_SIMILARITY, POOL, pick_diverse
    from alpagasus.store import opened

    sim = DEFAULT_SIMILARITY if similarity is None else float(similarity)
    store_path = Path(store) if store is not None else default_store()
    with opened(store_path) as st:  # checked like rate's: a damaged or newer store is a UserError
        got = pick_diverse(
            ratings,
            scan["cols"],
            scan["ids"],
            rule,
            value,
            method,
            Embedder(st, encode),
            sim,
            POOL if pool is None else pool,
        )
    out = {
        "method": method,
        "encoder": ENCODER_KEY,
        "store": str(store_path),
        "visited": got.visited,
        "skipped": got.skipped,
        "filled": got.filled,
        "short": got.short,
        "embedded": got.embedded,
        "positions": got.positions,
    }
    if method == "deita":
        out["similarity"] = sim
    else:
        out["pool"] = POOL if pool is None else pool
    return out


def _duplicate_list(ratings: str | Path, dups: Any, ids: list[str]) -> list[dict]:
    """Each removed row with its surviving twin (rows 1-based as in the file, ids, a glimpse of the text)."""
    if not dups.removed:
        return []
    wanted = set(dups.removed) | {t for t, _ in dups.removed.values()}
    text: dict[int, str] = {}
    for i, r in enumerate(read_jsonl(ratings)):
        if i in wanted:
            ex = formats.example_of(r)
            text[i] = ex.prompt[:100] if isinstance(ex, Example) else ""
    return [
        {
            "row": p + 1,
            "id": ids[p],
            "twin_row": t + 1,
            "twin_id": ids[t],
            "jaccard": j,
            "instruction": text.get(p, ""),
            "twin_instruction": text.get(t, ""),
        }
        for p, (t, j) in sorted(dups.removed.items())
    ]
