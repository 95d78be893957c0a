"""summary.md as objects: its verdict, its sections and their tables as DataFrames.

The report writes Markdown (:mod:`benchlab.report.summary`); this reads it back, so
a notebook gets the same verdict and tables that ``summary.md`` shows, as data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from benchlab.messages import did_you_mean

__all__ = ["Section", "Summary", "parse"]

_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_IMAGE = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_VERDICT_INTRO = "Each part of the claim tested on its own"


@dataclass(frozen=True)
class Section:
    """One heading of summary.md and what follows it up to the next heading."""

    title: str
    level: int  # 2 for ##, 3 for ###
    text: str  # the section's Markdown, tables included
    tables: list[pd.DataFrame] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # file names, relative to the run


@dataclass(frozen=True)
class Summary:
    """A run's summary.md, read back: ``verdict`` (one sentence per tested part of the
    claim), ``sections`` in order, ``tables`` by section title."""

    title: str
    description: str
    verdict: list[str]
    sections: list[Section]
    markdown: str

    def section(self, title: str) -> Section:
        """The section called ``title`` (or the first whose title starts with it)."""
        for s in self.sections:
            if s.title == title:
                return s
        for s in self.sections:
            if s.title.startswith(title):
                return s
        names = [s.title for s in self.sections]
        raise KeyError(f"no section {title!r} in summary.md{did_you_mean(title, names)}")

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        """Every table, by the title of its section ("title (2)" for a second one)."""
        found: dict[str, pd.DataFrame] = {}
        for s in self.sections:
            for i, table in enumerate(s.tables):
                found[s.title if i == 0 else f"{s.title} ({i + 1})"] = table
        return found

    @property
    def images(self) -> list[str]:
        return [name for s in self.sections for name in s.images]

    def __str__(self) -> str:
        return self.markdown

    def _repr_markdown_(self) -> str:
        return self.markdown


def parse(path: Path) -> Summary:
    """``path`` (a summary.md) as a :class:`Summary`."""
    text = Path(path).read_text()
    lines = text.splitlines()
    title, heads = "", []
    for i, line in enumerate(lines):
        match = _HEADING.match(line)
        if match:
            if len(match.group(1)) == 1 and not title:
                title = match.group(2).strip()
            else:
                heads.append((i, len(match.group(1)), match.group(2).strip()))
    first = heads[0][0] if heads else len(lines)
    start = 1 if lines and lines[0].startswith("# ") else 0
    description = "\n".join(lines[start:first]).strip()
    sections = []
    for n, (i, level, name) in enumerate(heads):
        end = heads[n + 1][0] if n + 1 < len(heads) else len(lines)
        body = lines[i + 1:end]
        sections.append(Section(title=name, level=level, text="\n".join(body).strip(),
                                tables=_tables(body), images=_IMAGE.findall("\n".join(body))))
    return Summary(title=title, description=description, verdict=_verdict(sections),
                   sections=sections, markdown=text)


def _verdict(sections: list[Section]) -> list[str]:
    """The verdict's sentences: the "Verdict" section's paragraphs, or (in a summary
    written before it existed) the paragraphs that start with "**Verdict:**"."""
    for s in sections:
        if s.title == "Verdict":
            return [p for p in _paragraphs(s.text) if not p.startswith(_VERDICT_INTRO)]
    return [p for s in sections for p in _paragraphs(s.text) if p.startswith("**Verdict:**")]


def _paragraphs(text: str) -> list[str]:
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()
            and not p.lstrip().startswith("|")]


def _tables(lines: list[str]) -> list[pd.DataFrame]:
    found, block = [], []
    for line in [*lines, ""]:
        if line.startswith("|"):
            block.append(line)
            continue
        if len(block) >= 2:
            found.append(_table(block))
        block = []
    return found


def _table(block: list[str]) -> pd.DataFrame:
    def cells(line: str) -> list[str]:
        parts = _CELL_SPLIT.split(line.strip())[1:-1]
        return [p.strip().replace("\\|", "|") for p in parts]

    header = cells(block[0])
    rows = [cells(line) for line in block[2:]]
    frame = pd.DataFrame([r + [""] * (len(header) - len(r)) for r in rows], columns=header)
    for column in frame.columns:
        numbers = pd.to_numeric(frame[column], errors="coerce")
        if numbers.notna().all() and len(frame):
            frame[column] = numbers
    return frame
