"""Statistics of per-run measurements (pure functions on arrays).

The tests themselves come from scipy (``scipy.stats.t``, ``nct``, ``bootstrap``);
what is written here is how they are combined: the Welch interval, two one-sided
tests (TOST) for equivalence, Holm's step-down correction, the runs a test needs
for a given power, and the convergence statistics of a learning curve. Each is
cross-checked in ``tests/test_stats.py`` against scipy or a hand-worked example.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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


def welch_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95
             ) -> tuple[float, float]:
    """Confidence interval of ``mean(a) - mean(b)`` with Welch's degrees of freedom.

    NaN when either side has fewer than two values; a point when neither side varies.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size < 2 or y.size < 2:
        return math.nan, math.nan
    diff = float(x.mean() - y.mean())
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    if vx + vy == 0:
        return diff, diff
    df = (vx + vy) ** 2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1))
    half = float(_stats.t.ppf(0.5 + level / 2, df) * math.sqrt(vx + vy))
    return diff - half, diff + half


@dataclass(frozen=True)
class TostResult:
    """Two one-sided Welch tests of ``|mean(a) - mean(b)| < margin``.

    ``p`` is the larger of the two one-sided p-values: equivalence is shown at level
    alpha when ``p < alpha``, which is the same as the ``1 - 2 alpha`` confidence
    interval (``ci``) lying inside ``(-margin, margin)``.
    """

    diff: float
    p: float
    p_lower: float  # H0: diff <= -margin
    p_upper: float  # H0: diff >= +margin
    ci: tuple[float, float]
    df: float


def tost(a: Sequence[float], b: Sequence[float], margin: float,
         alpha: float = 0.05) -> TostResult:
    """Equivalence of two means within ``margin`` by two one-sided Welch t-tests."""
    if not margin > 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    nan = TostResult(math.nan, math.nan, math.nan, math.nan, (math.nan, math.nan), math.nan)
    if x.size < 2 or y.size < 2:
        return nan
    diff = float(x.mean() - y.mean())
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    ci = welch_ci(a, b, 1 - 2 * alpha)
    if vx + vy == 0:
        p_lower = 0.0 if diff > -margin else 1.0
        p_upper = 0.0 if diff < margin else 1.0
        return TostResult(diff, max(p_lower, p_upper), p_lower, p_upper, ci, math.nan)
    se = math.sqrt(vx + vy)
    df = (vx + vy) ** 2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1))
    p_lower = float(_stats.t.sf((diff + margin) / se, df))
    p_upper = float(_stats.t.cdf((diff - margin) / se, df))
    return TostResult(diff, max(p_lower, p_upper), p_lower, p_upper, ci, float(df))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error rate), in input order.

    The i-th smallest of m p-values is multiplied by ``m - i`` (i from 0), running
    maxima keep the order, and values are capped at 1. NaN p-values (tests that
    could not be run) are not part of the family and stay NaN.
    """
    values = [float(p) for p in pvalues]
    tested = sorted((p, i) for i, p in enumerate(values) if not math.isnan(p))
    adjusted = [math.nan] * len(values)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[i] = running
    return adjusted


def p_from_interval(value: float, low: float, high: float, level: float = 0.95,
                    df: float | None = None) -> float:
    """Two-sided p-value of "the estimate is 0", read off its confidence interval.

    With ``df``, the interval is a Student t interval with ``df`` degrees of freedom
    (a mean over runs: df = runs - 1) and the p-value is that t-test's. Without it,
    the normal approximation: the standard error is the interval's width over
    2·z(1 − (1 − level)/2). For a percentile bootstrap interval that is exact only for
    a symmetric, normal sampling distribution; it is what lets intervals computed
    elsewhere (e.g. stored in results.csv) enter a multiple-comparison correction.
    NaN when the interval is missing or has no width.
    """
    if any(math.isnan(float(x)) for x in (value, low, high)) or high <= low:
        return math.nan
    if df is not None and not math.isnan(float(df)):
        if df < 1:
            return math.nan
        dist = _stats.t(df)
    else:
        dist = _stats.norm
    se = (high - low) / (2 * dist.ppf(0.5 + level / 2))
    return float(2 * dist.sf(abs(value) / se))


def bootstrap_diff_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95,
                      resamples: int = 9999, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(a) - mean(b)``, resampling each side.

    Seeded, so a report redrawn from the same results shows the same interval. NaN
    when either side has fewer than two values.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size < 2 or y.size < 2:
        return math.nan, math.nan
    if x.var() == 0 and y.var() == 0:
        diff = float(x.mean() - y.mean())
        return diff, diff

    def difference(u: np.ndarray, v: np.ndarray, axis: int = -1) -> np.ndarray:
        return u.mean(axis=axis) - v.mean(axis=axis)

    result = _stats.bootstrap((x, y), difference, n_resamples=resamples, confidence_level=level,
                              method="percentile", vectorized=True,
                              rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def t_test_power(diff: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of a two-sided two-sample t-test, ``n`` runs per side, common ``sd``."""
    if n < 2 or not sd > 0:
        return math.nan
    df = 2 * n - 2
    nc = abs(diff) / (sd * math.sqrt(2 / n))
    crit = _stats.t.ppf(1 - alpha / 2, df)
    power = _stats.nct.sf(crit, df, nc) + _stats.nct.cdf(-crit, df, nc)
    if math.isnan(power):  # scipy's nct fails far in the tail; the normal limit holds there
        power = _stats.norm.sf(crit - nc) + _stats.norm.cdf(-crit - nc)
    return float(power)


def tost_power(sd: float, margin: float, n: int, alpha: float = 0.05,
               diff: float = 0.0) -> float:
    """Approximate power of TOST with ``n`` runs per side, common ``sd``, true ``diff``.

    Both one-sided tests must reject: power ~ P(T1 > t) + P(T2 > t) - 1 with T1, T2
    noncentral t with noncentralities ``(margin +- diff) / se`` (the usual
    approximation; it ignores that both tests share one variance estimate).
    """
    if n < 2 or not sd > 0:
        return math.nan
    df = 2 * n - 2
    se = sd * math.sqrt(2 / n)
    crit = _stats.t.ppf(1 - alpha, df)
    power = 0.0 - 1
    for nc in ((margin + diff) / se, (margin - diff) / se):
        one = _stats.nct.sf(crit, df, nc)
        power += one if not math.isnan(one) else _stats.norm.sf(crit - nc)
    return float(max(0.0, power))


def runs_needed(power_at: Callable[[int], float], target: float = 0.8,
                limit: int = 100_000) -> int | None:
    """The smallest n (runs per side, >= 2) with ``power_at(n) >= target``; None
    if even ``limit`` runs do not reach it. ``power_at`` must grow with n."""
    high = 2
    while not power_at(high) >= target:  # doubling keeps the search where power is accurate
        if high >= limit:
            return None
        high = min(2 * high, limit)
    low = max(2, high // 2)
    while low < high:
        mid = (low + high) // 2
        if power_at(mid) >= target:
            high = mid
        else:
            low = mid + 1
    return low


def pooled_sd(a: Sequence[float], b: Sequence[float]) -> float:
    """sqrt of the mean of the two sample variances (the common sd of a power estimate)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size < 2 or y.size < 2:
        return math.nan
    return float(math.sqrt((x.var(ddof=1) + y.var(ddof=1)) / 2))


# --------------------------------------------------------------------------- curves


def first_epoch_reaching(epochs: Sequence[float], values: Sequence[float],
                         threshold: float) -> int | None:
    """The first epoch (or step) whose value is at least ``threshold`` (None if never)."""
    for epoch, value in sorted(zip(epochs, values)):
        if value >= threshold:
            return int(epoch)
    return None


first_step_reaching = first_epoch_reaching


def early_auc(steps: Sequence[float], values: Sequence[float], horizon: float) -> float:
    """Mean of a learning curve over steps [first point, ``horizon``] (trapezoid rule).

    The area under the curve divided by the width of the window, so it reads as an
    accuracy: higher means the run learned earlier. The curve is interpolated
    linearly at ``horizon``; NaN if it has no point before ``horizon`` or does not
    reach it.
    """
    order = np.argsort(np.asarray(steps, dtype=float))
    x = np.asarray(steps, dtype=float)[order]
    y = np.asarray(values, dtype=float)[order]
    if x.size < 2 or x[0] >= horizon or x[-1] < horizon:
        return math.nan
    inside = x < horizon
    xs = np.append(x[inside], horizon)
    ys = np.append(y[inside], np.interp(horizon, x, y))
    area = np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2)
    return float(area / (horizon - xs[0]))


def lead_step(steps: Sequence[float], diffs: Sequence[float], horizon: float,
              share: float = 0.9) -> float:
    """The step by which ``share`` of the area of a difference curve over
    [first point, ``horizon``] has accumulated (trapezoid rule, as :func:`early_auc`).

    ``diffs`` is one model's mean learning curve minus another's at ``steps``: the
    answer says how early in the window a difference in early-window mean accuracy
    was made. NaN when the window is not covered or the area is zero; the first step
    at which the running area reaches ``share`` of the whole, in the whole's sign.
    """
    order = np.argsort(np.asarray(steps, dtype=float))
    x = np.asarray(steps, dtype=float)[order]
    y = np.asarray(diffs, dtype=float)[order]
    if x.size < 2 or x[0] >= horizon or x[-1] < horizon or not 0 < share <= 1:
        return math.nan
    inside = x < horizon
    xs = np.append(x[inside], horizon)
    ys = np.append(y[inside], np.interp(horizon, x, y))
    running = np.cumsum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2)
    total = running[-1]
    if total == 0 or not math.isfinite(total):
        return math.nan
    reached = np.nonzero(running / total >= share)[0]
    return float(xs[1:][reached[0]])


def format_mean_std(s: Summary, scale: float = 1.0, digits: int = 2) -> str:
    if s.n == 0:
        return "–"
    if s.n == 1 or math.isnan(s.std):
        return f"{s.mean * scale:.{digits}f}"
    return f"{s.mean * scale:.{digits}f} ± {s.std * scale:.{digits}f}"
