"""A run directory as a Python object: its results, summary and plots, and how a
notebook shows it (the verdict and the main figure)."""

from __future__ import annotations

import base64
import html
import json
import re
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from benchlab.parsed_summary import Summary, parse

__all__ = ["Run"]

_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`]+)`")


class Run:
    """The run in ``path``: ``results`` (the tidy table of results.csv), ``summary``
    (summary.md as objects), ``plots`` (figure name -> PNG path), ``failed`` (job id ->
    its one-line message)."""

    def __init__(self, path: str | Path, failed: dict[str, str] | None = None):
        self.path = Path(path)
        self._failed = failed

    @classmethod
    def open(cls, path: str | Path) -> Run:
        """The run in ``path``; ValueError (one line) if it is not a run directory."""
        path = Path(path)
        if not path.is_dir():
            raise ValueError(f"{path}: {'is a file' if path.exists() else 'does not exist'}; "
                             "expected a benchlab run directory")
        if not (path / "results.csv").is_file():
            raise ValueError(f"{path}: no results.csv there; not a finished benchlab run "
                             "directory")
        return cls(path)

    def __repr__(self) -> str:
        return f"benchlab.Run({str(self.path)!r})"

    # ----------------------------------------------------------------------- what it holds

    @cached_property
    def results(self) -> pd.DataFrame:
        """results.csv: one row per measurement (job, model, run, seed, epoch, step,
        attack, eps, explainer, metric, value)."""
        from benchlab.store import read_results

        return read_results(self.path)

    @cached_property
    def summary(self) -> Summary:
        """summary.md as objects: ``.verdict``, ``.sections``, ``.tables``."""
        path = self.path / "summary.md"
        if not path.is_file():
            raise ValueError(f"{self.path}: no summary.md there; draw it with: benchlab "
                             f"report {self.path}")
        return parse(path)

    @property
    def verdict(self) -> list[str]:
        return self.summary.verdict

    @property
    def plots(self) -> dict[str, Path]:
        """Figure name (file name without .png) -> path: in the order summary.md shows
        them, then any other figure of the run."""
        shown = self.summary.images if (self.path / "summary.md").is_file() else []
        names = [*shown, *sorted(p.name for p in self.path.glob("*.png"))]
        return {Path(n).stem: self.path / n for n in dict.fromkeys(names)
                if (self.path / n).is_file()}

    def figure(self, name: str | None = None):
        """A figure to show in a notebook (``IPython.display.Image``; its path where
        IPython is not installed): ``name`` from :attr:`plots`, default the first."""
        path = self._plot(name)
        try:
            from IPython.display import Image
        except ImportError:
            return path
        return Image(filename=str(path))

    def _plot(self, name: str | None) -> Path:
        plots = self.plots
        if not plots:
            raise ValueError(f"{self.path}: no figures there")
        if name is None:
            return next(iter(plots.values()))
        if name not in plots:
            from benchlab.messages import unknown_name

            raise KeyError(unknown_name("figure", name, plots))
        return plots[name]

    @cached_property
    def suite(self) -> dict[str, Any]:
        """suite.yaml: the suite as it ran, overrides included."""
        import yaml

        path = self.path / "suite.yaml"
        return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}

    @cached_property
    def environment(self) -> dict[str, Any]:
        path = self.path / "environment.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    @property
    def failed(self) -> dict[str, str]:
        """Job id -> the one-line message of each failed job."""
        if self._failed is not None:
            return dict(self._failed)
        path = self.path / "jobs.csv"
        if not path.is_file():
            return {}
        jobs = pd.read_csv(path)
        if "status" not in jobs or "id" not in jobs:
            return {}
        bad = jobs[jobs["status"] == "failed"]
        messages = bad["message"] if "message" in bad else pd.Series("", index=bad.index)
        return {str(j): "" if pd.isna(m) else str(m) for j, m in zip(bad["id"], messages)}

    def compare(self, *others: Run | str | Path, metrics: list[str] | None = None):
        """This run (the baseline) against ``others``: a :class:`benchlab.compare.Comparison`
        (``benchlab.compare_text.markdown`` writes it as ``benchlab compare`` does)."""
        from benchlab.compare import compare

        paths = [self.path, *(o.path if isinstance(o, Run) else Path(o) for o in others)]
        return compare(paths, metrics)

    # ----------------------------------------------------------------------- display

    def _title(self) -> str:
        return str(self.suite.get("name") or self.path.name)

    def _verdict_or_none(self) -> list[str]:
        try:
            return self.summary.verdict
        except ValueError:
            return []

    def _repr_markdown_(self) -> str:
        lines = [f"**{self._title()}**: `{self.path}`", ""]
        if self.failed:
            lines += [f"{len(self.failed)} job(s) failed: {', '.join(self.failed)}", ""]
        lines += [*(v for line in self._verdict_or_none() for v in (line, "")),
                  *(f"![{n}]({p})" for n, p in list(self.plots.items())[:1])]
        return "\n".join(lines).rstrip() + "\n"

    def _repr_html_(self) -> str:
        parts = [f"<p><b>{html.escape(self._title())}</b>: <code>{html.escape(str(self.path))}"
                 "</code></p>"]
        if self.failed:
            parts.append(f"<p>{len(self.failed)} job(s) failed: "
                         f"{html.escape(', '.join(self.failed))}</p>")
        verdict = self._verdict_or_none()
        if verdict:
            parts.append("<div>" + "".join(f"<p>{_inline(v)}</p>" for v in verdict) + "</div>")
        plots = self.plots
        if plots:
            name, path = next(iter(plots.items()))
            data = base64.b64encode(path.read_bytes()).decode()
            parts.append(f'<img alt="{html.escape(name)}" style="max-width:100%" '
                         f'src="data:image/png;base64,{data}">')
        return "\n".join(parts)


def _inline(text: str) -> str:
    """A Markdown sentence as HTML: escaped, with its bold and code spans."""
    text = html.escape(text.lstrip("- "))
    return _CODE.sub(r"<code>\1</code>", _BOLD.sub(r"<b>\1</b>", text))
