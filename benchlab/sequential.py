"""A group-sequential design: as many runs as the claim needs, and no more.

The runs of a suite are looked at after ``min``, ``min + step``, ... runs per model,
up to ``max``. Every look tests every part of the claim again, so each test spends
its error rate over the looks by the Lan–DeMets method: a spending function
``alpha(t)`` of the information fraction ``t = n / max`` gives the error the test
may have spent by the look at ``n`` runs; the boundary of each look is the z value
whose crossing (given that no earlier look crossed) has exactly the probability
``alpha(t_k) - alpha(t_{k-1})`` under the null. The joint law of the z statistics
of the looks is that of Brownian motion observed at ``t_1 < t_2 < ...``; the
crossing probabilities are computed by numerical integration of the density of the
partial sum over the continuation region, look by look (Armitage, McPherson & Rowe,
1969), on a grid with Simpson's weights.

The tests are Welch t tests at a handful of runs, so a z boundary ``c_k`` is used
through its **nominal level**: a look rejects when the test's own p-value (Welch's t
at that look's degrees of freedom) is below ``sides * (1 - Phi(c_k))``; i.e. the
boundary in t is the t quantile of that level. ``tests/test_sequential.py`` shows
by simulation that this keeps the error rates of the design.

Decisions, per part of the claim (docs/statistics.md):

* **final accuracy**: *equivalent* when both one-sided Welch tests of TOST reject
  at the one-sided boundary of level ``alpha`` (each side spends its own alpha);
  *different* when the two-sided Welch test rejects at the two-sided boundary;
* **convergence**: Holm's step-down over its statistics, each level ``alpha / j``
  with its own boundaries, a statistic once rejected staying rejected; the part is
  decided (*faster*, *slower* or *mixed*) at the first look that rejects one.

A part not decided at the last look (``n = max``) is *inconclusive*.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import optimize
from scipy import stats as _stats

__all__ = ["SPENDING", "Design", "boundaries", "nominal_levels", "spent", "welch_arrays"]

SPENDING = ("obrien-fleming", "pocock")
_GRID = 601  # points of the integration grid (odd: Simpson)
_WIDTH = 9.0  # the grid of a one-sided region reaches this many sd below 0


def spent(t: float | np.ndarray, alpha: float, kind: str = "obrien-fleming",
          sides: int = 2) -> float | np.ndarray:
    """The error spent by information fraction ``t`` (0 at t = 0, ``alpha`` at t = 1).

    O'Brien–Fleming type, as Lan and DeMets (1983) and gsDesign's ``sfLDOF`` write it
    for a one-sided level ``a``: ``2 - 2 Phi(z_{1 - a/2} / sqrt t)``, which spends
    almost nothing early; a two-sided test spends it on each side with ``a = alpha/2``.
    Pocock type: ``alpha log(1 + (e - 1) t)`` (in total, over both sides).
    """
    t = np.clip(np.asarray(t, dtype=float), 0.0, 1.0)
    if kind == "obrien-fleming":
        side = alpha / sides
        with np.errstate(divide="ignore"):
            out = sides * (2 - 2 * _stats.norm.cdf(_stats.norm.ppf(1 - side / 2) / np.sqrt(t)))
    elif kind == "pocock":
        out = alpha * np.log1p((math.e - 1) * t)
    else:
        raise ValueError(f"spending must be one of {', '.join(SPENDING)}, got {kind!r}")
    return float(out) if out.ndim == 0 else out


def _simpson(m: int) -> np.ndarray:
    w = np.ones(m)
    w[1:-1:2], w[2:-1:2] = 4, 2
    return w / 3


def _grid(c: float, t: float, sides: int) -> tuple[np.ndarray, np.ndarray]:
    """Points and weights over the continuation region of the partial sum ``S = Z sqrt t``."""
    hi = c * math.sqrt(t)
    lo = -hi if sides == 2 else min(-_WIDTH * math.sqrt(t), hi - 1e-9)
    s = np.linspace(lo, hi, _GRID)
    return s, _simpson(_GRID) * (s[1] - s[0])


@lru_cache(maxsize=256)
def _boundaries(fractions: tuple[float, ...], alpha: float, kind: str,
                sides: int) -> tuple[float, ...]:
    cum = spent(np.asarray(fractions), alpha, kind, sides)
    out: list[float] = []
    s = w = f = None  # the grid and the sub-density of S over the continuation region
    previous_t, previous_spent = 0.0, 0.0
    for t, total in zip(fractions, cum):
        target = float(total) - previous_spent
        if s is None:
            def cross(c: float, t: float = t) -> float:
                return sides * float(_stats.norm.sf(c))
        else:
            sd = math.sqrt(t - previous_t)

            def cross(c: float, t: float = t, sd: float = sd, s=s, w=w, f=f) -> float:
                hi = c * math.sqrt(t)
                up = _stats.norm.sf((hi - s) / sd)
                if sides == 2:
                    up = up + _stats.norm.cdf((-hi - s) / sd)
                return float(np.sum(w * f * up))
        if target <= 1e-15:
            c = math.inf
        else:
            c = float(optimize.brentq(lambda c, f=cross, a=target: f(c) - a, 0.0, 40.0, xtol=1e-10))
        out.append(c)
        previous_spent += cross(c) if math.isfinite(c) else 0.0
        # the density of S at this look, restricted to where no boundary was crossed
        c_grid = min(c, 12.0)
        s_new, w_new = _grid(c_grid, t, sides)
        if s is None:
            f = _stats.norm.pdf(s_new / math.sqrt(t)) / math.sqrt(t)
        else:
            sd = math.sqrt(t - previous_t)
            kernel = _stats.norm.pdf((s_new[:, None] - s[None, :]) / sd) / sd
            f = kernel @ (w * f)
        s, w, previous_t = s_new, w_new, t
    return tuple(out)


def boundaries(fractions: Sequence[float], alpha: float, kind: str = "obrien-fleming",
               sides: int = 2) -> np.ndarray:
    """The z boundary of each look at information ``fractions`` (increasing, in (0, 1]).

    Two-sided: reject when ``|Z_k| >= c_k``; one-sided: when ``Z_k >= c_k``. ``inf``
    where a look has nothing to spend. A look's boundary depends only on that look
    and the ones before it, so the boundaries of looks made so far never change.
    """
    fr = tuple(float(x) for x in fractions)
    if any(not 0 < x <= 1 for x in fr) or any(b <= a for a, b in zip(fr, fr[1:])):
        raise ValueError(f"information fractions must increase within (0, 1], got {fr}")
    if sides not in (1, 2):
        raise ValueError(f"sides must be 1 or 2, got {sides}")
    spent(0.5, alpha, kind)  # the spending function's name is checked here
    return np.asarray(_boundaries(fr, float(alpha), kind, sides))


def nominal_levels(fractions: Sequence[float], alpha: float, kind: str = "obrien-fleming",
                   sides: int = 2) -> np.ndarray:
    """The p-value each look's test must fall below: ``sides * (1 - Phi(c_k))``."""
    return sides * _stats.norm.sf(boundaries(fractions, alpha, kind, sides))


# --------------------------------------------------------------------------- tests


def welch_arrays(mean_a, var_a, n_a, mean_b, var_b, n_b, shift: float = 0.0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Welch's t of ``mean_a - mean_b - shift`` and its degrees of freedom, elementwise
    (sample variances with ddof = 1; no spread gives t = ±inf or 0 and df = 1)."""
    va, vb = np.asarray(var_a, float) / n_a, np.asarray(var_b, float) / n_b
    se2 = va + vb
    diff = np.asarray(mean_a, float) - np.asarray(mean_b, float) - shift
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se2 > 0, diff / np.sqrt(se2), np.sign(diff) * np.inf)
        t = np.where((se2 == 0) & (diff == 0), 0.0, t)
        df = np.where(se2 > 0, se2**2 / (va**2 / (n_a - 1) + vb**2 / (n_b - 1)), 1.0)
    return t, df


@dataclass(frozen=True)
class Design:
    """Runs per model: ``min_runs`` first, then ``step`` more until ``max_runs``."""

    min_runs: int
    max_runs: int
    step: int
    alpha: float = 0.05
    spending: str = "obrien-fleming"

    def __post_init__(self) -> None:
        if not (2 <= self.min_runs <= self.max_runs and self.step >= 1):
            raise ValueError(f"expected 2 <= min <= max and step >= 1, got min "
                             f"{self.min_runs}, max {self.max_runs}, step {self.step}")
        spent(0.5, self.alpha, self.spending)

    def schedule(self) -> tuple[int, ...]:
        """The runs per model at each look the design can make."""
        ns = list(range(self.min_runs, self.max_runs, self.step))
        return (*ns, self.max_runs)

    def fractions(self, looks: int) -> tuple[float, ...]:
        return tuple(n / self.max_runs for n in self.schedule()[:looks])

    def levels(self, looks: int, sides: int = 2, alpha: float | None = None) -> np.ndarray:
        """The nominal level of each of the first ``looks`` looks (those of the whole
        schedule, cut: a look's boundary depends on the looks up to it only)."""
        every = nominal_levels(self.fractions(len(self.schedule())),
                               self.alpha if alpha is None else alpha, self.spending, sides)
        return every[:looks]

    def equality(self, p_two_sided: np.ndarray, look: int) -> np.ndarray:
        """Does the two-sided test reject equality at look ``look`` (0-based)?"""
        return np.asarray(p_two_sided) < self.levels(look + 1, 2)[look]

    def equivalence(self, p_lower: np.ndarray, p_upper: np.ndarray, look: int) -> np.ndarray:
        """Do both one-sided tests of TOST reject at look ``look``?"""
        level = self.levels(look + 1, 1)[look]
        return (np.asarray(p_lower) < level) & (np.asarray(p_upper) < level)

    def final_accuracy(self, p_two_sided, p_lower, p_upper, look: int) -> np.ndarray:
        """'equivalent', 'different' or 'undecided' ('inconclusive' at the last look),
        elementwise; a NaN p-value (fewer than two runs) decides nothing."""
        p2, lo, up = (np.asarray(x, float) for x in (p_two_sided, p_lower, p_upper))
        with np.errstate(invalid="ignore"):
            equivalent = self.equivalence(lo, up, look)
            different = self.equality(p2, look)
        return np.where(equivalent, "equivalent",
                        np.where(different, "different", self._undecided(look)))

    def holm(self, p_values, rejected, look: int) -> np.ndarray:
        """Holm's step-down at look ``look`` (0-based), elementwise over the trailing
        axes: which of the ``m`` statistics (first axis) are rejected by now, given
        those ``rejected`` by the looks before. With ``r`` statistics not yet rejected
        the level is ``alpha / r``, each level with its own spending over the looks;
        a NaN p-value (an untestable statistic) is left out of ``r``, as in
        :func:`benchlab.stats.holm`."""
        p = np.asarray(p_values, float)
        out = np.array(rejected, dtype=bool, copy=True)
        m = p.shape[0]
        levels = np.array([0.0] + [self.levels(look + 1, 2, self.alpha / r)[look]
                                   for r in range(1, m + 1)])
        testable = ~np.isnan(p)
        for _ in range(m):
            remaining = (testable & ~out).sum(axis=0)
            with np.errstate(invalid="ignore"):
                out = out | (p < levels[remaining])  # NaN: never rejected
        return out

    def is_last(self, look: int) -> bool:
        return look >= len(self.schedule()) - 1

    def _undecided(self, look: int) -> str:
        return "inconclusive" if self.is_last(look) else "undecided"
