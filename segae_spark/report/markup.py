"""HTML assembly: one self-contained page (inline CSS, images as base64 PNG data URIs, no script).

The page must open anywhere, offline and from an e-mail attachment, so it
references no file, font or URL. Table cells carry their exact value in
``data-value`` next to the rounded text, so tests and scrapers read the
numbers without parsing formatted text.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from html import escape
from typing import Callable

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 0 auto; max-width: 1200px; padding: 16px 24px 48px; color: #1d2330; background: #fff; }
h1 { font-size: 1.6em; margin: 0.2em 0 0.4em; }
h2 { font-size: 1.25em; margin: 1.6em 0 0.5em; border-bottom: 2px solid #e3e6ec; padding-bottom: 4px; }
h3 { font-size: 1.05em; margin: 1em 0 0.3em; }
p.note { color: #4a5263; margin: 0.3em 0 0.8em; }
table { border-collapse: collapse; font-size: 0.86em; margin: 6px 0 10px; }
th, td { border: 1px solid #d8dce4; padding: 3px 8px; text-align: right; }
th { background: #f2f4f8; }
td.text, th.text { text-align: left; }
tr.all td { font-weight: 600; background: #fafbfd; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: 2px 14px; font-size: 0.92em; margin: 0; }
dl.meta dt { color: #4a5263; } dl.meta dd { margin: 0; font-family: ui-monospace, Menlo, Consolas, monospace; }
.tiles { display: flex; flex-wrap: wrap; gap: 10px; margin: 10px 0; }
.tile { border: 1px solid #d8dce4; border-radius: 6px; padding: 6px 14px; min-width: 92px; }
.tile b { display: block; font-size: 1.3em; } .tile span { color: #4a5263; font-size: 0.82em; }
.figures { display: flex; flex-wrap: wrap; gap: 8px; align-items: flex-start; }
.segment { border: 1px solid #e3e6ec; border-radius: 6px; padding: 2px 12px 8px; margin: 10px 0; }
img { max-width: 100%; height: auto; }
"""


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    fmt: Callable[[object], str]
    text: bool = False  # left-aligned


def integer(v) -> str:
    return "n/a" if v is None else f"{int(v):,}"


def decimal(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def general(v) -> str:
    return "n/a" if v is None else f"{v:.5g}"


def percent(v) -> str:
    return "n/a" if v is None else f"{100 * v:.2f} %"


def plain(v) -> str:
    return "" if v is None else str(v)


def _value(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


def table(table_id: str, columns: list[Column], rows: list[dict]) -> str:
    """A table whose rows are dicts; ``_row`` names the row (``data-row``), ``_class`` styles it."""
    head = "".join(f'<th class="{"text" if c.text else ""}">{escape(c.title)}</th>' for c in columns)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="{"text" if c.text else ""}" data-key="{escape(c.key)}" data-value="{escape(_value(row.get(c.key)))}">'
            f"{escape(c.fmt(row.get(c.key)))}</td>"
            for c in columns
        )
        body.append(f'<tr class="{escape(row.get("_class", ""))}" data-row="{escape(str(row.get("_row", "")))}">{cells}</tr>')
    return f'<table id="{escape(table_id)}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def image(png: bytes, alt: str, figure: str, segment: int | None = None) -> str:
    """An ``<img>`` holding ``png`` itself; ``data-figure`` (and ``data-segment``) say which figure it is."""
    data = base64.b64encode(png).decode("ascii")
    seg = "" if segment is None else f' data-segment="{segment}"'
    return f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}" data-figure="{escape(figure)}"{seg}>'


def tiles(items: list[tuple[str, str]]) -> str:
    return '<div class="tiles">' + "".join(f'<div class="tile"><b>{escape(v)}</b><span>{escape(k)}</span></div>' for k, v in items) + "</div>"


def note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def section(section_id: str, title: str, *parts: str) -> str:
    return f'<section id="{escape(section_id)}"><h2>{escape(title)}</h2>{"".join(parts)}</section>'


def page(title: str, meta: list[tuple[str, str]], *sections: str) -> str:
    items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in meta)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>\n<body>"
        f'<header><h1>{escape(title)}</h1><dl class="meta">{items}</dl></header>\n'
        + "\n".join(sections)
        + "\n</body></html>\n"
    )
