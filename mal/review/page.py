"""Shared HTML building for the review pages.

Every page is one file a person can open anywhere (mail it, attach it to an issue): styles are inline, images
are ``data:`` URIs, and there is no script and no external resource, so it renders offline and the browser
has nothing to fetch. Every value that reaches the page goes through :func:`esc`.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.2rem 1.6rem;color:#222;background:#fafafa}
h1{font-size:1.45rem;margin:0 0 .3rem}h2{font-size:1.15rem;margin:1.4rem 0 .5rem;border-bottom:1px solid #ddd}
h3{font-size:1rem;margin:1rem 0 .4rem}p.meta{color:#555;margin:.2rem 0 .8rem;font-size:.9rem}
table{border-collapse:collapse;margin:.4rem 0 .8rem;font-size:.85rem;background:#fff}
th,td{border:1px solid #ccc;padding:.25rem .55rem;text-align:right}th{background:#eef1f5}
td.l,th.l{text-align:left}.note{color:#555;font-size:.85rem;max-width:60rem}
.warn{background:#fff4e5;border:1px solid #f0c36d;padding:.4rem .7rem;font-size:.85rem;max-width:60rem}
.cards{display:flex;flex-wrap:wrap;gap:.6rem}
.card{background:#fff;border:1px solid #ccc;border-radius:4px;padding:.35rem;width:200px;font-size:.75rem}
.card img{display:block;width:192px;height:192px;object-fit:contain;background:#000;image-rendering:pixelated}
.card dl{display:grid;grid-template-columns:auto 1fr;gap:0 .4rem;margin:.3rem 0 0}
.card dt{color:#666}.card dd{margin:0;overflow-wrap:anywhere}
.card.fallback{border-color:#d9822b}
.legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .2rem 0 .6rem;vertical-align:middle}
img.plot{max-width:100%;background:#fff;border:1px solid #ddd}
"""


def esc(value: Any) -> str:
    """HTML-escaped text of any value (quotes too: it is also used inside attributes)."""
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table cell: floats rounded, None/NaN as an en dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def rgb_uri(rgb: np.ndarray) -> str:
    """``H x W x 3`` uint8 RGB -> PNG data URI."""
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("could not encode an overlay as PNG")
    return png_uri(buf.tobytes())


def figure_uri(fig: Any, dpi: int = 100) -> str:
    """A matplotlib figure -> PNG data URI (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return png_uri(buf.getvalue())


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def histogram_uri(groups: dict[str, Sequence[float]], title: str, xlabel: str, bins: int = 20) -> str:
    """Stacked histogram over [0, 1] of one or more named groups of values, as a PNG data URI."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 2.8))
    names = [n for n, v in groups.items() if len(v)]
    ax.hist([list(groups[n]) for n in names], bins=bins, range=(0.0, 1.0), stacked=True, label=names)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("annotations")
    ax.set_title(title, fontsize=10)
    if len(names) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return figure_uri(fig)


def img(uri: str, alt: str, cls: str = "plot") -> str:
    return f'<img class="{esc(cls)}" alt="{esc(alt)}" src="{uri}">'


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "", left: int = 1) -> str:
    """An HTML table; the first ``left`` columns are left-aligned (labels), the rest right-aligned (numbers)."""
    def cell(tag: str, i: int, v: Any) -> str:
        return f'<{tag}{" class=l" if i < left else ""}>{esc(fmt(v))}</{tag}>'

    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def document(title: str, body: str, subtitle: str = "") -> str:
    """A complete HTML page; the empty ``data:`` icon keeps the browser from asking for /favicon.ico."""
    meta = f'<p class="meta">{esc(subtitle)}</p>' if subtitle else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="data:,"><title>{esc(title)}</title><style>{CSS}</style></head>\n'
        f"<body><h1>{esc(title)}</h1>{meta}\n{body}\n</body></html>\n"
    )
