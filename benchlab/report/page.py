"""One self-contained HTML page: a title and sections of Markdown, tables, interactive
figures and images, with its scripts and styles inline, so the file opens offline by
double-click. ``report.html`` of a run is built with it (:mod:`benchlab.report.html`);
any other page of benchlab can be, in the same style::

    from benchlab.report.page import Figure, Markdown, Section, Table, page
    html = page("fp32 against bf16", [Section("Accuracy", [Markdown("..."), Table(frame)])])

Figures are plotly.js figures (``{"data": [...], "layout": {...}}``, or anything with
``to_plotly_json()``), drawn in the browser by plotly.js's basic bundle (scatter and
bar traces) shipped in ``static/``; tables sort by a click
on a column's header and filter by free text and by the values of their model, attack,
explainer and ε columns (``static/page.js``).
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import pandas as pd
from markdown_it import MarkdownIt

__all__ = ["Figure", "Html", "Image", "Markdown", "Part", "Section", "Table", "page",
           "slug"]

#: nothing may load from outside the file: no script, style, image or font from a network
POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
          "img-src data: blob:; font-src data:; connect-src 'none'")


@dataclass(frozen=True)
class Markdown:
    """Markdown text (CommonMark and tables); its tables sort and filter like a Table."""

    text: str


@dataclass(frozen=True)
class Table:
    """A frame shown as a sortable, filterable table; cells are shown as text."""

    frame: pd.DataFrame
    caption: str = ""


@dataclass(frozen=True)
class Figure:
    """A plotly.js figure: a dict of ``data`` and ``layout`` (numpy values allowed)."""

    figure: Any
    caption: str = ""


@dataclass(frozen=True)
class Image:
    """A PNG image, embedded in the page."""

    png: bytes
    alt: str


@dataclass(frozen=True)
class Html:
    """Markup put into the page as it is (the caller escapes what it holds)."""

    markup: str


Part = Markdown | Table | Figure | Image | Html


@dataclass(frozen=True)
class Section:
    """A heading (empty: none) and what follows it, in order."""

    heading: str
    parts: Sequence[Part] = field(default_factory=list)


def page(title: str, sections: Sequence[Section], subtitle: str = "") -> str:
    """The whole page as text: the title, a table of contents of the headed sections,
    then each section in order."""
    counter = _Counter()
    body, toc = [], []
    for section in sections:
        anchor = slug(section.heading) if section.heading else ""
        if anchor:
            toc.append(f'<li><a href="#{anchor}">{html.escape(section.heading)}</a></li>')
        inner = "".join(_part(p, counter) for p in section.parts)
        head = f"<h2>{html.escape(section.heading)}</h2>" if section.heading else ""
        body.append(f'<section id="{anchor}">{head}{inner}</section>' if anchor
                    else f"<section>{inner}</section>")
    nav = f'<nav id="toc"><ul>{"".join(toc)}</ul></nav>' if toc else ""
    sub = f'<p class="subtitle">{html.escape(subtitle)}</p>' if subtitle else ""
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{_asset('page.css')}</style>"
            f"<script>{_asset('plotly-basic.min.js')}</script></head>\n<body>"
            f"<header><h1>{html.escape(title)}</h1>{sub}</header>{nav}<main>"
            + "\n".join(body) + f"</main><script>{_asset('page.js')}</script></body></html>\n")


def slug(text: str) -> str:
    """An anchor for a heading: lower case, words joined by dashes."""
    return re.sub(r"[^\w]+", "-", text.lower(), flags=re.UNICODE).strip("-") or "section"


class _Counter:
    def __init__(self) -> None:
        self.n = 0

    def next(self) -> int:
        self.n += 1
        return self.n


def _part(part: Part, counter: _Counter) -> str:
    if isinstance(part, Markdown):
        return f'<div class="md">{_markdown().render(part.text)}</div>'
    if isinstance(part, Table):
        return _table(part.frame, part.caption)
    if isinstance(part, Figure):
        return _figure(part.figure, part.caption, counter.next())
    if isinstance(part, Image):
        data = base64.b64encode(part.png).decode("ascii")
        return (f'<figure class="image"><img alt="{html.escape(part.alt)}" '
                f'src="data:image/png;base64,{data}"><figcaption>{html.escape(part.alt)}'
                "</figcaption></figure>")
    if isinstance(part, Html):
        return part.markup
    raise TypeError(f"a page part is Markdown, Table, Figure, Image or Html, not "
                    f"{type(part).__name__}")


def _table(frame: pd.DataFrame, caption: str) -> str:
    if frame.empty:
        return "<p><em>no data</em></p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(_text(v))}</td>" for v in row)
                   + "</tr>" for row in frame.itertuples(index=False))
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _text(value: object) -> str:
    return "–" if value is None or (isinstance(value, float) and value != value) else str(value)


def _figure(figure: Any, caption: str, number: int) -> str:
    spec = figure.to_plotly_json() if hasattr(figure, "to_plotly_json") else figure
    data = json.dumps(_plain({"data": spec.get("data", []), "layout": spec.get("layout", {})}),
                      separators=(",", ":"), allow_nan=False)
    # "</" inside a script element would end it early
    data = data.replace("</", "<\\/")
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return (f'<figure class="plot"><div class="plotly-figure" id="figure-{number}"></div>'
            f'<script type="application/json" class="figure-data">{data}</script>{cap}'
            "</figure>")


def _plain(value: Any) -> Any:
    """``value`` in plain JSON types: numpy arrays and numbers as lists and numbers, NaN
    as null (a gap in a line)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        items = value.tolist() if hasattr(value, "tolist") else value
        return _plain(items) if not isinstance(items, (list, tuple)) else [_plain(v) for v in items]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@cache
def _markdown() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False}).enable("table")


@cache
def _asset(name: str) -> str:
    text = resources.files("benchlab.report").joinpath("static", name).read_text("utf-8")
    return text.replace("</script", "<\\/script") if name.endswith(".js") else text
