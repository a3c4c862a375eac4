"""`select_file`: a ratings file in, a training file out, streaming (memory stays flat)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from alpagasus.data import DataError, read_jsonl, write_rows
from alpagasus.errors import UserError
from alpagasus.records import rating_field, user_fields
from alpagasus.select.rules import BINS, Columns, SelectError, choose, score_bin, training_row


def select_file(ratings: str | Path, output: str | Path, rule: str, value: Any = None, seed: int = 0,
                exclude_flagged: bool = False) -> dict:
    """Select from a ratings file by one rule and write the training file. Returns counts.
    `exclude_flagged` drops rows flagged as suspicious (e.g. prompt injection) whatever their score.
    Two streaming passes (what the rules need, in flat arrays; then the picked rows): memory stays flat."""
    kwargs: dict[str, Any] = {"seed": seed}
    if value is None and rule != "all":
        raise UserError(f"rule {rule} needs a value (a threshold, a fraction or a size K)" if rule in
                        ("threshold", "keep_fraction") else f"rule {rule} needs a size K")
    if rule == "threshold":
        kwargs["threshold"] = float(value)
    elif rule == "keep_fraction":
        kwargs["fraction"] = float(value)
    elif rule in ("top_k", "random", "longest"):
        kwargs["k"] = int(value)
    cols, bins, columns = Columns(), dict.fromkeys(BINS, 0), {}
    counts = {"rows": 0, "flagged": 0, "ok": 0, "unparsed": 0, "empty": 0}
    try:
        for r in read_jsonl(ratings):
            counts["rows"] += 1
            if rating_field(r, "status") is None:
                raise UserError(f"{ratings}, row {counts['rows']}, field 'status': missing (is this an "
                                "`alpagasus rate` output?)")
            flagged = bool(rating_field(r, "flags"))
            counts["flagged"] += flagged
            status, score = rating_field(r, "status"), rating_field(r, "score")
            if status in ("ok", "unparsed", "empty"):
                counts[status] += 1
            if status == "ok" and score is not None:
                bins[score_bin(float(score))] += 1
            columns.update(dict.fromkeys(user_fields(r)))
            cols.add(r, excluded=exclude_flagged and flagged)
    except (OSError, ValueError) as e:
        raise UserError(f"{ratings}: cannot read ratings ({e})") from e
    try:
        picked = choose(cols, rule, **kwargs)
        keep = bytearray(len(cols))
        for i in picked:
            keep[i] = 1
        rows = (training_row(r) for i, r in enumerate(read_jsonl(ratings)) if keep[i])
        n = write_rows(output, rows, columns=list(columns))
    except (SelectError, DataError) as e:
        raise UserError(str(e)) from e
    excluded = counts["flagged"] if exclude_flagged else 0
    return {"rows": counts["rows"], "flagged": counts["flagged"], "excluded_flagged": excluded,
            "rated": counts["ok"], "unparsed": counts["unparsed"], "empty": counts["empty"],
            "other": counts["rows"] - counts["ok"] - counts["unparsed"] - counts["empty"], "bins": bins, "kept": n,
            "rule": rule}
