"""What the package's pages are made of: matplotlib figures as PNG (written atomically, or inlined as data URIs
so a page is one self-contained file), escaped text, numbers and tables. Shared by the ratings report,
`compare`'s charts and the run's final report. matplotlib is imported inside the functions (Agg backend: no
display needed), so importing this module costs nothing."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any, Sequence

from alpagasus.data import atomic_writer

# Every page we write allows no script and no remote content (page.html carries the same meta), so text from a
# hostile example or a hand-edited file cannot act in a browser even if it slipped past escaping.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (files only, works without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig: Any, dpi: int = 100) -> bytes:
    """The figure as PNG; the figure is closed (pyplot keeps every open one alive). Every text is drawn as plain
    text: labels are data (model, selection, keyword names), and a `$` in one is a dollar sign, not mathtext
    that matplotlib would fail to parse (`$\\frac{`) after the work was done."""
    import matplotlib
    from matplotlib.text import Text

    buf = io.BytesIO()
    with matplotlib.rc_context({"text.parse_math": False}):  # texts created while drawing (tick labels)
        for t in fig.findobj(Text):  # ... and those created before
            t.set_parse_math(False)
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=dpi)
    pyplot().close(fig)
    return buf.getvalue()


def write_png(path: str | Path, data: bytes) -> None:
    """Atomically: a reader never sees half a picture."""
    with atomic_writer(path, "wb") as f:
        f.write(data)


def save_png(fig: Any, path: str | Path, dpi: int = 100) -> bytes:
    """Write the figure to `path` (atomically) and return its PNG bytes."""
    data = png_bytes(fig, dpi)
    write_png(path, data)
    return data


def clean(value: Any) -> str:
    """Text fit for a page or a JSON file: lone surrogates (undecodable input bytes) become U+FFFD."""
    return str(value).encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def escape(value: Any, clip: int | None = None) -> str:
    """Untrusted text made safe for HTML (None reads as empty); `clip` keeps that many characters."""
    text = clean("" if value is None else value)
    if clip is not None and len(text) > clip:
        text = text[:clip] + f"… [{len(text) - clip} more characters]"
    return html.escape(text, quote=True)


def fmt(x: Any, digits: int = 2) -> str:
    """A number for a page: trailing zeros dropped, "–" for none; anything else (a hand-edited file's text) is
    escaped, so the result is always safe in HTML."""
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}".rstrip("0").rstrip(".") if abs(x) < 1e6 else f"{x:.3g}"
    return escape(x)


def img_tag(data: bytes, alt: str, element_id: str | None = None) -> str:
    """An <img> holding the PNG itself, so the page needs no file beside it."""
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    ident = f'id="{escape(element_id)}" ' if element_id else ""
    return f'<img {ident}src="{uri}" alt="{escape(alt)}">'


def table(tid: str | None, head: Sequence[str], body: Sequence[Sequence[Any]]) -> str:
    """An HTML table; header cells are escaped here, body cells must be escaped by the caller (they may hold
    markup). Numbers are right-aligned."""
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    rows = "".join(
        "<tr>" + "".join(f'<td class="num">{c}</td>' if _numeric(c) else f"<td>{c}</td>" for c in r) + "</tr>"
        for r in body
    )
    ident = f' id="{escape(tid)}"' if tid else ""
    return f"<table{ident}><thead><tr>{th}</tr></thead><tbody>{rows}</tbody></table>"


def _numeric(cell: Any) -> bool:
    return isinstance(cell, (int, float)) or str(cell).rstrip("%").replace(".", "", 1).lstrip("-").isdigit()
