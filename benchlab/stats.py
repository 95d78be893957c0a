"""Summary statistics for per-run measurements (pure functions on arrays)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _stats


@dataclass(frozen=True)
class Summary:
    mean: float
    std: float  # sample standard deviation (ddof=1); NaN for a single value
    ci95: float  # half-width of the 95% confidence interval of the mean (Student t)
    n: int


def summarize(values: Sequence[float]) -> Summary:
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    n = int(x.size)
    if n == 0:
        return Summary(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n == 1:
        return Summary(mean, math.nan, math.nan, 1)
    std = float(x.std(ddof=1))
    half = float(_stats.t.ppf(0.975, n - 1) * std / math.sqrt(n))
    return Summary(mean, std, half, n)


@dataclass(frozen=True)
class WelchResult:
    t: float
    p: float
    df: float


def welch(a: Sequence[float], b: Sequence[float]) -> WelchResult:
    """Welch's two-sample t-test (unequal variances), two-sided.

    NaN when either side has fewer than two values; p = 1 when both sides have no
    spread and equal means, p = 0 when they have no spread and differ.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size < 2 or y.size < 2:
        return WelchResult(math.nan, math.nan, math.nan)
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    if vx + vy == 0:
        same = bool(x.mean() == y.mean())
        return WelchResult(0.0 if same else math.copysign(math.inf, x.mean() - y.mean()),
                           1.0 if same else 0.0, math.nan)
    t = (x.mean() - y.mean()) / math.sqrt(vx + vy)
    df = (vx + vy) ** 2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1))
    p = float(2 * _stats.t.sf(abs(t), df))
    return WelchResult(float(t), p, float(df))


def first_epoch_reaching(epochs: Sequence[int], values: Sequence[float],
                         threshold: float) -> int | None:
    """The first epoch whose value is at least ``threshold`` (None if never)."""
    for epoch, value in sorted(zip(epochs, values)):
        if value >= threshold:
            return int(epoch)
    return None


def format_mean_std(s: Summary, scale: float = 1.0, digits: int = 2) -> str:
    if s.n == 0:
        return "–"
    if s.n == 1 or math.isnan(s.std):
        return f"{s.mean * scale:.{digits}f}"
    return f"{s.mean * scale:.{digits}f} ± {s.std * scale:.{digits}f}"
