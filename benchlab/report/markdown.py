"""How summary.md writes tables and numbers: one Markdown table per frame, a dash for
a value that does not exist."""

from __future__ import annotations

import math
from collections.abc import Iterable

import pandas as pd

from benchlab import stats

__all__ = ["DASH", "mean_sd", "number", "percent", "table"]

#: what a cell shows where there is no value (NaN, no runs, nothing measured)
DASH = "–"


def table(frame: pd.DataFrame) -> str:
    """``frame`` as a Markdown table (``_no data_`` for an empty frame)."""
    if frame.empty:
        return "_no data_\n"
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(_cell(v) for v in row.tolist()) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: object) -> str:
    """A table cell: a '|' or a line break in a message would end the cell or the row."""
    return " ".join(str(value).split("\n")).replace("|", "\\|")


def number(value: float, spec: str = ".2f") -> str:
    """``value`` written with the format ``spec``, or a dash for NaN."""
    return DASH if math.isnan(value) else format(value, spec)


def interval(low: float, high: float, spec: str = "+.2f") -> str:
    """``[low, high]`` written with the format ``spec``, or a dash where it is undefined
    (NaN: too few runs or values for an interval)."""
    if math.isnan(low) or math.isnan(high):
        return DASH
    return f"[{format(low, spec)}, {format(high, spec)}]"


def percent(share: float) -> str:
    """A share in [0, 1] as a percentage with two decimals, or a dash for NaN."""
    return number(share * 100)


def mean_sd(values: Iterable[float], scale: float, digits: int) -> str:
    """``mean ± std`` of ``values`` times ``scale`` (the mean alone for one value), or
    a dash when there are none."""
    return stats.format_mean_std(stats.summarize(list(values)), scale, digits)
