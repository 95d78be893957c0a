"""Robustness decided over training seeds: two models compared at each attack and ε.

The unit of a robustness comparison is the trained model, not the test image: one
number per run (its accuracy on the attacked images), n = runs per model. Per pair
of models, every (attack, ε > 0) is one Welch test; their p-values are
Holm-corrected as one family (the pair's whole table), and, where the suite sets
``report.equivalence_margin``, a TOST within that margin is run beside each and
Holm-corrected over the same family. An outcome is:

- ``less robust`` / ``more robust``: Welch, Holm p < alpha;
- ``equivalent``: TOST, Holm p < alpha (only with a margin);
- ``identical``: every run of both models gave the same accuracy (both at 0% under a
  strong attack, say): there is no difference to test;
- ``inconclusive``: neither; with the runs per model that a two-sided t-test at
  Holm's strictest level would need for 80% power at the observed difference and
  spread (a paper estimate, like the training verdict's);
- ``untestable``: fewer than two runs of either model, said with that reason.

Pure functions on a results frame; the report renders them
(:mod:`benchlab.report.robustness`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from benchlab import stats
from benchlab.verdict import POWER, Settings, fmt_p

__all__ = ["RobustComparison", "compare", "pair_line"]


@dataclass(frozen=True)
class RobustComparison:
    """``other`` against ``baseline`` under ``attack`` at ``eps`` (accuracies in [0, 1])."""

    other: str
    baseline: str
    attack: str
    eps: float
    a: np.ndarray  # other's accuracy, one value per run
    b: np.ndarray  # baseline's
    diff: float
    ci95: tuple[float, float]
    p: float
    p_holm: float
    tost_p_holm: float  # NaN without a margin
    runs_needed: int | None
    outcome: str

    @property
    def n(self) -> tuple[int, int]:
        return int(self.a.size), int(self.b.size)


def per_run_accuracy(rows: pd.DataFrame, model: str, attack: str, eps: float) -> np.ndarray:
    """One accuracy per run of ``model`` under ``attack`` at ``eps``, in run order."""
    cell = rows[(rows["model"] == model) & (rows["attack"] == attack)
                & (rows["eps"] == eps) & (rows["metric"] == "accuracy")]
    cell = cell.sort_values("run") if "run" in cell else cell
    return cell["value"].dropna().to_numpy(float)


def compare(rows: pd.DataFrame, baseline: str, other: str, attacks: list[str],
            settings: Settings) -> list[RobustComparison]:
    """Every (attack, ε > 0) both models were attacked at, as one Holm family."""
    drafts = []
    for attack in attacks:
        both = rows[(rows["attack"] == attack) & rows["eps"].notna()
                    & (rows["metric"] == "accuracy")]
        eps_of = [set(both[both["model"] == m]["eps"]) for m in (other, baseline)]
        for eps in sorted(eps_of[0] & eps_of[1]):
            if eps <= 0:
                continue  # clean accuracy: the training section's subject
            a = per_run_accuracy(rows, other, attack, eps)
            b = per_run_accuracy(rows, baseline, attack, eps)
            welch = stats.welch(a, b)
            tost = (stats.tost(a, b, settings.margin_pp / 100, settings.alpha).p
                    if settings.margin_pp is not None else math.nan)
            drafts.append((attack, float(eps), a, b, welch.p, tost))
    holm = stats.holm([d[4] for d in drafts])
    tost_holm = stats.holm([d[5] for d in drafts])
    level = settings.alpha / max(1, len(drafts))  # Holm's first, strictest step
    out = []
    for (attack, eps, a, b, p, _), p_holm, t_holm in zip(drafts, holm, tost_holm):
        diff = float(a.mean() - b.mean()) if a.size and b.size else math.nan
        sd = stats.pooled_sd(a, b)
        needed = None
        if sd > 0 and diff != 0 and not math.isnan(diff):
            needed = stats.runs_needed(
                lambda n, diff=diff, sd=sd: stats.t_test_power(diff, sd, n, level), POWER)
        if math.isnan(p):
            outcome = "untestable"
        elif a.min() == a.max() == b.min() == b.max():
            outcome = "identical"  # every run of both gave the same accuracy: nothing to test
        elif p_holm < settings.alpha:
            outcome = "more robust" if diff > 0 else "less robust"
        elif not math.isnan(t_holm) and t_holm < settings.alpha:
            outcome = "equivalent"
        else:
            outcome = "inconclusive"
        out.append(RobustComparison(other, baseline, attack, eps, a, b, diff,
                                    stats.welch_ci(a, b), p, p_holm, t_holm, needed, outcome))
    return out


def _pp(x: float) -> str:
    return f"{100 * x:+.2f}"


def _detail(c: RobustComparison) -> str:
    low, high = c.ci95
    return (f"{_pp(c.diff)} pp [{_pp(low)}, {_pp(high)}] under {c.attack} at ε = {c.eps:g}, "
            f"Holm p = {fmt_p(c.p_holm)}")


def _where(cs: list[RobustComparison]) -> str:
    """"FGSM at ε = 0.1, 0.2; PGD at ε = 0.3"."""
    by_attack: dict[str, list[str]] = {}
    for c in cs:
        by_attack.setdefault(c.attack, []).append(f"{c.eps:g}")
    return "; ".join(f"{a} at ε = {', '.join(e)}" for a, e in by_attack.items())


def _measured_once(comparisons: list[RobustComparison]) -> str:
    """What one trained model of each showed, in words: where ``other`` is below, above
    or level with ``baseline``, and the largest gap ("" when one of them has no run)."""
    measured = [c for c in comparisons if c.a.size == 1 and c.b.size == 1]
    if not measured:
        return ""
    gaps = [100 * float(c.a[0] - c.b[0]) for c in measured]
    below, above = sum(g < 0 for g in gaps), sum(g > 0 for g in gaps)
    largest = max(measured, key=lambda c: abs(float(c.a[0] - c.b[0])))
    c0 = measured[0]
    counts = ", ".join(f"{word} in {k}" for word, k in (
        ("below", below), ("above", above), ("level", len(gaps) - below - above)) if k)
    return (f" Measured on the one trained model of each: {c0.other}'s accuracy under "
            f"attack is {counts} of {len(gaps)} (attack, ε) against {c0.baseline}'s; the "
            f"largest gap: {largest.attack} at ε = {largest.eps:g}, {100 * largest.a[0]:.2f}% "
            f"against {100 * largest.b[0]:.2f}% "
            f"({100 * float(largest.a[0] - largest.b[0]):+.2f} pp). These differences are "
            "over the test images of one model each and say nothing of another training "
            "seed; `--set train.runs=N` (N ≥ 2) tests them.")


def pair_line(comparisons: list[RobustComparison], trained: str, alpha: float) -> str:
    """One verdict line: ``other`` against ``baseline``, both trained as ``trained``."""
    c0 = comparisons[0]
    head = f"- **Robustness, {c0.other} against {c0.baseline}** ({trained})"
    tested = [c for c in comparisons if c.outcome != "untestable"]
    if not tested:
        n_a, n_b = c0.n
        return (f"{head}: untestable: {n_a} and {n_b} run(s) attacked; a comparison over "
                "training seeds needs at least two runs of each model." +
                _measured_once(comparisons))
    ns = sorted({c.n for c in tested})
    runs = (f"n = {ns[0][0]} and {ns[0][1]} runs" if len(ns) == 1
            else "n = " + ", ".join(f"{a}/{b}" for a, b in ns) + " runs")
    parts = []
    for outcome in ("less robust", "more robust", "equivalent"):
        hits = [c for c in tested if c.outcome == outcome]
        if not hits:
            continue
        largest = max(hits, key=lambda c: abs(c.diff))
        extreme = ("the largest gap" if outcome != "equivalent"
                   else "the largest difference")
        parts.append(f"{outcome} in {len(hits)} of {len(tested)} tests ({_where(hits)}; "
                     f"{extreme} {_detail(largest)})")
    same = [c for c in tested if c.outcome == "identical"]
    if same:
        levels = sorted({f"{100 * c.a[0]:.2f}%" for c in same})
        parts.append(f"identical in every run in {len(same)} ({_where(same)}; both at "
                     f"{', '.join(levels)})")
    open_ = [c for c in tested if c.outcome == "inconclusive"]
    if open_:
        known = [c.runs_needed for c in open_ if c.runs_needed is not None]
        estimate = (f"; about {min(known)} to {max(known)} runs per model would decide them"
                    if len(known) == len(open_) and min(known) != max(known) else
                    f"; about {known[0]} runs per model would decide them"
                    if len(known) == len(open_) else
                    "; for some the observed difference is zero, so no number of runs "
                    "is estimated")
        parts.append(f"inconclusive in {len(open_)} ({_where(open_)}{estimate})")
    skipped = len(comparisons) - len(tested)
    tail = f"; {skipped} untestable (fewer than two runs)" if skipped else ""
    return (f"{head}: " + "; ".join(parts) + tail +
            f". Accuracy under attack per trained model, {runs}; Welch tests, Holm-corrected "
            f"over the {len(comparisons)} (attack, ε) of this pair, α = {alpha:g}.")
