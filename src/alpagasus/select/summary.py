"""What `select` says about diversity and near-duplicates (plain lines: the CLI prints them, tests read them)."""

from __future__ import annotations

from typing import Any

SHOWN = 10  # duplicate pairs printed; all of them are in the sidecar


def summary_lines(res: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    d = res.get("diverse")
    if d:
        how = (
            f"similarity < {d['similarity']:g} to every kept row"
            if d["method"] == "deita"
            else f"facility location over the {d['pool']}x budget best-scored rows"
        )
        lines.append(
            f"diverse ({d['method']}: {how}): {d['visited']} candidates looked at, {d['skipped']} skipped "
            f"as too similar; {d['embedded']} embeddings computed, the rest read from {d['store']}"
        )
        if d["filled"]:
            lines.append(
                f"warning: the candidates ran out before the budget was full; {d['filled']} slots were "
                "filled with the skipped rows, best score first (a higher --similarity lets more "
                "rows through)"
            )
        if d["short"] > 0:
            lines.append(f"warning: {d['short']} slots of the budget left empty: not enough rated rows")
    m = res.get("matched")
    if m:
        lines.append(
            f"length-matched to {m['reference']} ({m['reference_rows']} rows): median response "
            f"{m['median_drawn']:g} characters vs the reference's {m['median_reference']:g}, KS distance "
            f"{m['ks_distance']:.3f}"
            + (
                f"; {m['off']} rows more than 10% off their partner's length (few rows of that length)"
                if m["off"]
                else ""
            )
        )
    from alpagasus.judgecheck.caveats import selection_length_note  # kept rows much shorter or longer than all

    lines += filter(None, [selection_length_note(res)])
    dups = res.get("duplicates")
    if dups is not None:
        lines.append(
            f"near-duplicates removed: {len(dups)} (the best-rated copy kept; all listed in "
            f"{res.get('sidecar', 'the sidecar')})"
        )
        for x in dups[:SHOWN]:
            lines.append(
                f"  row {x['row']} ~ row {x['twin_row']} kept (Jaccard {x['jaccard']:.2f}): {x['instruction'][:60]!r}"
            )
        if len(dups) > SHOWN:
            lines.append(f"  ... {len(dups) - SHOWN} more")
    return lines
