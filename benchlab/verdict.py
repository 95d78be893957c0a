"""A two-model claim, tested part by part from a run's results table.

The claim of the BatchNorm study has two halves, and each gets its own test:

* *faster convergence*: per run, the steps its learning curve needs to first reach
  each threshold and the mean accuracy over the early window (the area under the
  curve divided by its width); the models are compared with Welch's t-test and a
  bootstrap interval of the difference, and the p-values of these statistics are
  Holm-corrected as one family. A run that never reaches a threshold is counted
  at the step where it could next have been seen to reach it (one evaluation
  after its last), so its model's mean is a lower bound, and the count is shown.
* *same final accuracy*: two one-sided tests (TOST) of the final test accuracy
  against an equivalence margin, with the ``1 - 2 alpha`` interval of the
  difference, so that "equivalent", "different" and "inconclusive" are told apart.

Welch (unpaired) is the primary analysis, although run r of both models shares its
seed; docs/statistics.md says why, and the paired test and the correlation of the
paired runs are shown beside it. Everything here is pandas on ``results.csv`` rows
and numbers from :mod:`benchlab.stats`; :mod:`benchlab.report` writes it out.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as _scipy

from benchlab import stats
from benchlab.suite.schema import (
    REPORT_ALPHA,
    REPORT_AUC_EPOCHS,
    REPORT_EQUIVALENCE_MARGIN,
    REPORT_STEP_THRESHOLDS,
)

CURVE_METRIC = "step_test_acc"
POWER = 0.8  # the power a "runs needed" estimate aims for
LEAD_SHARE = 0.9  # "90% of the early-window difference was made by step N"


@dataclass(frozen=True)
class Settings:
    """The report section of a suite, as the verdict reads it (defaults: the suite's)."""

    alpha: float = REPORT_ALPHA
    step_thresholds: tuple[float, ...] = REPORT_STEP_THRESHOLDS
    auc_epochs: float = REPORT_AUC_EPOCHS
    margin_pp: float | None = REPORT_EQUIVALENCE_MARGIN  # percentage points


# --------------------------------------------------------------------------- per run


def curve_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The step-resolution accuracy rows (empty when the run had no learning curves)."""
    if "step" not in results.columns:
        return results.iloc[0:0]
    return results[(results["metric"] == CURVE_METRIC) & results["step"].notna()]


def steps_per_epoch(curves: pd.DataFrame) -> float:
    """Steps per epoch, from any point past step 0 (step / fractional epoch)."""
    later = curves[curves["step"] > 0]
    if later.empty:
        return math.nan
    row = later.iloc[0]
    return float(row["step"]) / float(row["epoch"])


def run_statistics(curves: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """One row per (model, run): steps to each threshold, whether it was reached,
    and the early-window mean accuracy (``auc``)."""
    per_epoch = steps_per_epoch(curves)
    horizon = settings.auc_epochs * per_epoch
    out = []
    for (model, run), g in curves.groupby(["model", "run"], sort=False):
        g = g.sort_values("step")
        steps, values = g["step"].to_numpy(float), g["value"].to_numpy(float)
        gaps = np.diff(steps)
        every = float(np.median(gaps)) if gaps.size else math.nan
        row = {"model": model, "run": int(run), "seed": int(g["seed"].iloc[0])}
        for threshold in settings.step_thresholds:
            first = stats.first_step_reaching(steps, values, threshold)
            row[_reached(threshold)] = first is not None
            row[_steps_to(threshold)] = float(first) if first is not None \
                else float(steps[-1] + every)
        row["auc"] = stats.early_auc(steps, values, horizon)
        out.append(row)
    return pd.DataFrame(out)


def _steps_to(threshold: float) -> str:
    return f"steps to {threshold * 100:g}%"


def _reached(threshold: float) -> str:
    return f"reached {threshold * 100:g}%"


# --------------------------------------------------------------------------- comparisons


@dataclass(frozen=True)
class Comparison:
    """``other`` against ``baseline`` on one per-run statistic."""

    statistic: str
    other: np.ndarray
    baseline: np.ndarray
    diff: float
    ci: tuple[float, float]  # bootstrap, 95%
    t: float
    p: float
    p_holm: float
    faster_when: str  # "lower" or "higher"
    never: tuple[int, int] | None  # runs that never reached it: (other, baseline)
    paired_p: float
    paired_r: float
    runs_needed: int | None
    # runs for which the statistic is undefined (other, baseline): an early window
    # their learning curve does not reach
    undefined: tuple[int, int] = (0, 0)


def _paired(other: pd.DataFrame, baseline: pd.DataFrame, column: str) -> tuple[float, float]:
    """Paired t-test p and Pearson r over runs that share a seed (NaN if < 3 pairs)."""
    pairs = other[["seed", column]].merge(baseline[["seed", column]], on="seed").dropna()
    if len(pairs) < 3:
        return math.nan, math.nan
    x, y = pairs[f"{column}_x"].to_numpy(float), pairs[f"{column}_y"].to_numpy(float)
    with warnings.catch_warnings():  # near-constant differences: scipy warns, p stays valid
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(_scipy.ttest_rel(x, y).pvalue) if np.any(x != y) else 1.0
    r = float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else math.nan
    return p, r


def convergence(per_run: pd.DataFrame, baseline: str, other: str,
                settings: Settings) -> list[Comparison]:
    """Each convergence statistic compared; p-values Holm-corrected as one family."""
    a_rows, b_rows = per_run[per_run["model"] == other], per_run[per_run["model"] == baseline]
    columns = [(_steps_to(t), "lower", _reached(t)) for t in settings.step_thresholds]
    columns.append(("auc", "higher", None))
    drafts = []
    for column, faster_when, reached in columns:
        a = a_rows[column].dropna().to_numpy(float)
        b = b_rows[column].dropna().to_numpy(float)
        welch = stats.welch(a, b)
        diff = float(a.mean() - b.mean()) if a.size and b.size else math.nan
        never = None if reached is None else (int((~a_rows[reached]).sum()),
                                               int((~b_rows[reached]).sum()))
        paired_p, paired_r = _paired(a_rows, b_rows, column)
        undefined = (int(a_rows[column].isna().sum()), int(b_rows[column].isna().sum()))
        drafts.append((column, a, b, diff, stats.bootstrap_diff_ci(a, b), welch, faster_when,
                       never, paired_p, paired_r, undefined))
    adjusted = stats.holm([d[5].p for d in drafts])
    out = []
    for (column, a, b, diff, ci, welch, faster_when, never, paired_p, paired_r,
         undefined), p_holm in zip(drafts, adjusted):
        sd = stats.pooled_sd(a, b)
        level = settings.alpha / max(1, len(drafts))  # Holm's first, strictest step

        def power_at(n: int, diff: float = diff, sd: float = sd, level: float = level) -> float:
            return stats.t_test_power(diff, sd, n, level)

        needed = stats.runs_needed(power_at, POWER) \
            if sd > 0 and diff != 0 and not math.isnan(diff) else None
        out.append(Comparison(column, a, b, diff, ci, welch.t, welch.p, p_holm, faster_when,
                              never, paired_p, paired_r, needed, undefined))
    return out


def lead_step(curves: pd.DataFrame, baseline: str, other: str, settings: Settings,
              share: float = LEAD_SHARE) -> float:
    """The step by which ``share`` of the early-window accuracy difference between the
    two models' mean learning curves has been made (NaN when undefined): what "higher
    mean accuracy over the first epoch" means in steps."""
    means = curves.groupby(["model", "step"])["value"].mean()
    if other not in means.index.get_level_values(0) or \
            baseline not in means.index.get_level_values(0):
        return math.nan
    both = pd.concat([means[other], means[baseline]], axis=1, join="inner").dropna()
    horizon = settings.auc_epochs * steps_per_epoch(curves)
    return stats.lead_step(both.index.to_numpy(float), (both.iloc[:, 0] - both.iloc[:, 1])
                           .to_numpy(float), horizon, share)


@dataclass(frozen=True)
class Equivalence:
    epoch: int
    other: np.ndarray
    baseline: np.ndarray
    margin: float  # fraction of accuracy
    tost: stats.TostResult
    welch_p: float
    ci95: tuple[float, float]
    paired_p: float
    paired_r: float
    runs_needed: int | None
    outcome: str  # "equivalent", "different", "inconclusive" or "untestable"


def equivalence(test_acc: pd.DataFrame, baseline: str, other: str,
                settings: Settings) -> Equivalence | None:
    """TOST of the final test accuracy (the last epoch both models have)."""
    if settings.margin_pp is None or test_acc.empty:
        return None
    last = int(min(test_acc[test_acc["model"] == m]["epoch"].max() for m in (baseline, other)))
    final = test_acc[test_acc["epoch"] == last]
    a_rows, b_rows = final[final["model"] == other], final[final["model"] == baseline]
    a, b = a_rows["value"].to_numpy(float), b_rows["value"].to_numpy(float)
    margin = settings.margin_pp / 100
    result = stats.tost(a, b, margin, settings.alpha)
    welch_p = stats.welch(a, b).p
    paired_p, paired_r = _paired(a_rows, b_rows, "value")
    sd = stats.pooled_sd(a, b)
    needed = stats.runs_needed(
        lambda n: stats.tost_power(sd, margin, n, settings.alpha), POWER) if sd > 0 else None
    if math.isnan(result.p):
        outcome = "untestable"
    elif result.p < settings.alpha:
        outcome = "equivalent"
    elif welch_p < settings.alpha:
        outcome = "different"
    else:
        outcome = "inconclusive"
    return Equivalence(last, a, b, margin, result, welch_p, stats.welch_ci(a, b), paired_p,
                       paired_r, needed, outcome)


def per_epoch(test_acc: pd.DataFrame, baseline: str, other: str) -> pd.DataFrame:
    """Welch's test of every epoch's test accuracy, with Holm-corrected p-values."""
    rows = []
    for epoch in sorted(set(test_acc["epoch"])):
        here = test_acc[test_acc["epoch"] == epoch]
        a = here[here["model"] == other]["value"].to_numpy(float)
        b = here[here["model"] == baseline]["value"].to_numpy(float)
        w = stats.welch(a, b)
        rows.append({"epoch": int(epoch), "other": a.mean() if a.size else math.nan,
                     "baseline": b.mean() if b.size else math.nan,
                     "diff": a.mean() - b.mean() if a.size and b.size else math.nan,
                     "t": w.t, "p": w.p, "n_other": a.size, "n_baseline": b.size})
    frame = pd.DataFrame(rows, columns=["epoch", "other", "baseline", "diff", "t", "p",
                                        "n_other", "n_baseline"])
    frame["p_holm"] = stats.holm(frame["p"].tolist())
    return frame


# --------------------------------------------------------------------------- sentences


def fmt_p(p: float) -> str:
    if math.isnan(p):
        return "–"
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def _steps(x: float) -> str:
    return f"{x:.0f}"


def _auc(x: float) -> str:
    return f"{x * 100:.2f}%"


def convergence_outcome(comparisons: list[Comparison], alpha: float) -> str:
    """'faster', 'slower' or 'inconclusive', from the Holm-corrected p-values."""
    ahead = behind = False
    for c in comparisons:
        if math.isnan(c.p_holm) or c.p_holm >= alpha:
            continue
        better = c.diff < 0 if c.faster_when == "lower" else c.diff > 0
        ahead, behind = ahead or better, behind or not better
    if ahead and not behind:
        return "faster"
    if behind and not ahead:
        return "slower"
    return "mixed" if ahead else "inconclusive"


def convergence_line(c: Comparison, baseline: str, other: str, settings: Settings,
                     eval_set: str, per_epoch_steps: float) -> str:
    is_auc = c.statistic == "auc"
    show = _auc if is_auc else _steps
    unit = " pp" if is_auc else " steps"
    scale = 100 if is_auc else 1
    horizon = settings.auc_epochs * per_epoch_steps
    if is_auc:
        steps = f"steps 0–{horizon:.0f}, " if math.isfinite(horizon) else ""
        name = (f"mean accuracy over the first {settings.auc_epochs:g} epoch(s) "
                f"({steps}area under the curve)")
    else:
        name = c.statistic
    if c.other.size < 2 or c.baseline.size < 2:
        return f"{name} on {eval_set}: not tested ({_why_untested(c, other, baseline, horizon)})"
    text = (f"{name} on {eval_set}: {other} {_mean_sd(c.other, show)} "
            f"(n = {c.other.size}), {baseline} {_mean_sd(c.baseline, show)} "
            f"(n = {c.baseline.size})")
    if c.never is not None and any(c.never):
        text += (f"; never reached: {other} {c.never[0]}/{c.other.size}, {baseline} "
                 f"{c.never[1]}/{c.baseline.size} (counted at one evaluation past the end)")
    text += (f"; difference {c.diff * scale:+.{2 if is_auc else 0}f}{unit}, 95% bootstrap CI "
             f"[{c.ci[0] * scale:+.{2 if is_auc else 0}f}, "
             f"{c.ci[1] * scale:+.{2 if is_auc else 0}f}], Welch p = {fmt_p(c.p)}, "
             f"Holm p = {fmt_p(c.p_holm)}")
    if math.isnan(c.p_holm):
        return text + " → untestable (fewer than two runs per model)"
    if c.p_holm < settings.alpha:
        better = c.diff < 0 if c.faster_when == "lower" else c.diff > 0
        word = ("higher" if better else "lower") if is_auc else \
            ("faster" if better else "slower")
        return text + f" → **{other} {word}**"
    text += " → **inconclusive**"
    if c.never is not None and c.never == (c.other.size, c.baseline.size):
        text += " (no run of either model reached it: train longer)"
    elif c.runs_needed is not None:
        text += (f" (about {c.runs_needed} runs per model would detect this difference with "
                 f"{POWER:.0%} power)")
    else:
        text += " (no difference to detect: the means agree)"
    return text


def _mean_sd(values: np.ndarray, show: Callable[[float], str]) -> str:
    """``mean ± sd`` over runs (``mean`` alone for one run)."""
    if values.size < 2:
        return show(float(values.mean()))
    return f"{show(float(values.mean()))} ± {show(float(values.std(ddof=1)))}"


def _why_untested(c: Comparison, other: str, baseline: str, horizon: float) -> str:
    """Why a convergence statistic has fewer than two values per model, in words."""
    if not any(c.undefined):
        return (f"fewer than two runs per model: {other} {c.other.size}, "
                f"{baseline} {c.baseline.size}")
    counts = (f"undefined for {c.undefined[0]} of {c.undefined[0] + c.other.size} runs of "
              f"{other} and {c.undefined[1]} of {c.undefined[1] + c.baseline.size} of "
              f"{baseline}")
    if c.statistic == "auc":
        if not math.isfinite(horizon):  # no point past step 0: steps per epoch unknown
            return (f"{counts}: their learning curves hold no point after step 0; train "
                    "longer or set train.eval_every lower")
        return (f"{counts}: their learning curves end before step {horizon:.0f}, the end of "
                "the window; train longer or set report.auc_epochs lower")
    return f"{counts}: their learning curves hold fewer than two points"


def equivalence_line(e: Equivalence, baseline: str, other: str, settings: Settings,
                     test_set: str = "the test split") -> str:
    t = e.tost
    text = (f"test accuracy at epoch {e.epoch} on {test_set}: {other} "
            f"{e.other.mean() * 100:.2f}% ± {_sd(e.other) * 100:.2f} (n = {e.other.size}), "
            f"{baseline} {e.baseline.mean() * 100:.2f}% ± {_sd(e.baseline) * 100:.2f} "
            f"(n = {e.baseline.size}); difference {t.diff * 100:+.2f} pp, "
            f"{(1 - 2 * settings.alpha):.0%} CI [{t.ci[0] * 100:+.2f}, {t.ci[1] * 100:+.2f}] "
            f"against the margin ±{e.margin * 100:g} pp: TOST p = {fmt_p(t.p)}, "
            f"Welch p = {fmt_p(e.welch_p)}")
    if e.outcome == "untestable":
        return text + " → untestable (fewer than two runs per model)"
    if e.outcome == "equivalent":
        return text + f" → **equivalent within ±{e.margin * 100:g} pp**"
    if e.outcome == "different":
        return text + (f" → **different** (95% CI [{e.ci95[0] * 100:+.2f}, "
                       f"{e.ci95[1] * 100:+.2f}] pp excludes 0, and equivalence is not shown)")
    text += " → **inconclusive with these runs**"
    if e.runs_needed is not None:
        text += (f" (about {e.runs_needed} runs per model would show equivalence within "
                 f"±{e.margin * 100:g} pp with {POWER:.0%} power, if the true difference is 0 "
                 f"and the spread is as observed)")
    return text


def one_sided_lines(e: Equivalence, baseline: str, other: str, settings: Settings) -> list[str]:
    """The two one-sided readings of the final accuracy, each a claim of its own: "does
    not improve on the baseline by the margin or more" (non-superiority) and "is not
    worse by the margin or more" (non-inferiority). They are TOST's two halves, each
    tested alone at ``alpha``; empty when untestable."""
    t, m = e.tost, e.margin * 100
    if e.outcome == "untestable" or math.isnan(t.p_upper):
        return []

    def reading(p: float, claim: str) -> str:
        shown = "**shown**" if p < settings.alpha else "**not shown**"
        return f"{claim}: one-sided Welch p = {fmt_p(p)} → {shown}"

    return [reading(t.p_upper, f"{other} does not improve on {baseline} by {m:g} pp or more "
                               f"(non-superiority; the reading of a claim that {other} does "
                               "not improve the accuracy)"),
            reading(t.p_lower, f"{other} is not worse than {baseline} by {m:g} pp or more "
                               f"(non-inferiority; the reading of a claim that {other} "
                               "costs no accuracy)")]


def _sd(x: np.ndarray) -> float:
    return float(x.std(ddof=1)) if x.size > 1 else math.nan
