"""The "Convergence at step resolution" section: from the learning curves (test
accuracy evaluated every few optimisation steps), the steps each run needs to reach
each threshold and its early-window mean accuracy, compared model by model against
the baseline, with the verdict lines they support."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from benchlab import stats, verdict
from benchlab.report.markdown import DASH, interval, mean_sd, number, table
from benchlab.report.plots import plot_step_curves

__all__ = ["section"]


def section(results: pd.DataFrame, out: Path, models: list[str], settings: verdict.Settings,
            eval_set: str, pairs: list[tuple[str, str]] | None = None
            ) -> tuple[list[str], list[str]]:
    """(verdict lines, the section); both empty for a run without learning curves.
    Writes ``test_accuracy_steps.png`` and ``convergence.csv``. ``pairs``: the (model,
    against) comparisons (default: every model against the first)."""
    curves = verdict.curve_rows(results)
    if curves.empty:
        return [], []
    plot_step_curves(curves, models, settings.step_thresholds, eval_set,
                      out / "test_accuracy_steps.png")
    per_run = verdict.run_statistics(curves, settings)
    per_run.to_csv(out / "convergence.csv", index=False)
    per_epoch_steps = verdict.steps_per_epoch(curves)
    md = ["## Convergence at step resolution", "",
          f"Test accuracy on {eval_set}, evaluated during training every "
          f"{_eval_every(curves)} optimisation steps ({per_epoch_steps:.0f} steps per epoch). "
          "Per run: the steps it needs to first reach each threshold (a run that never "
          "reaches one is counted one evaluation past its last) and its mean accuracy over "
          f"the first {settings.auc_epochs:g} epoch(s) (area under the curve); per-run values "
          "in `convergence.csv`.", "", "![test accuracy during training](test_accuracy_steps.png)",
          ""]
    md += _evaluation_cost(results, models)
    lines: list[str] = []
    pairs = pairs if pairs is not None else [(other, models[0]) for other in models[1:]]
    for other, baseline in pairs:
        comparisons = verdict.convergence(per_run, baseline, other, settings)
        rows = []
        for c in comparisons:
            lines.append("  - " + verdict.convergence_line(c, baseline, other, settings,
                                                            eval_set, per_epoch_steps))
            is_auc = c.statistic == "auc"
            scale, digits = (100, 2) if is_auc else (1, 0)
            rows.append({
                "statistic": "mean accuracy, early window (%)" if is_auc else c.statistic,
                f"{other}": mean_sd(c.other, scale, digits),
                f"{baseline}": mean_sd(c.baseline, scale, digits),
                "never reached": DASH if c.never is None else f"{c.never[0]} / {c.never[1]}",
                "difference": f"{c.diff * scale:+.{digits}f}",
                "95% bootstrap CI": interval(c.ci[0] * scale, c.ci[1] * scale,
                                             f"+.{digits}f"),
                "Welch t": number(c.t),
                "p": verdict.fmt_p(c.p), "p (Holm)": verdict.fmt_p(c.p_holm),
                "paired p": verdict.fmt_p(c.paired_p),
                "paired r": number(c.paired_r)})
        lead = verdict.lead_step(curves, baseline, other, settings)
        lines.insert(len(lines) - len(comparisons),
                     _head(comparisons, settings, other, baseline, lead, per_epoch_steps,
                           named=len(pairs) > 1))
        md += [f"### {other} against {baseline}", "",
               f"n = {comparisons[0].other.size} and {comparisons[0].baseline.size} runs; Welch "
               "t-tests, Holm-corrected over the statistics; paired p / r: the same runs paired "
               "by seed (shown for reference, see docs/statistics.md)."
               + _undefined_note(comparisons), "",
               table(pd.DataFrame(rows))]
    return lines, md


def _undefined_note(comparisons: list[verdict.Comparison]) -> str:
    """Why dashes stand in the table, where they do."""
    few = min(comparisons[0].other.size, comparisons[0].baseline.size)
    if few >= 2:
        return ""
    return (" With fewer than two runs of a model no interval or test can be computed: "
            "those cells are dashes.")


def _head(comparisons: list[verdict.Comparison], settings: verdict.Settings, other: str,
          baseline: str, lead: float, per_epoch_steps: float, named: bool = False) -> str:
    """The verdict line above the per-statistic lines of one comparison: which
    statistics showed a difference, in their own terms, and which did not (``named``:
    saying which comparison, when there are several)."""
    which = f", {other} against {baseline}" if named else ""
    shown, not_shown = [], []
    for c in comparisons:
        if math.isnan(c.p_holm) or c.p_holm >= settings.alpha:
            not_shown.append(_name(c, settings))
        else:
            shown.append(_shown(c, settings, other, baseline, lead, per_epoch_steps))
    outcome = verdict.convergence_outcome(comparisons, settings.alpha)
    if all(math.isnan(c.p_holm) for c in comparisons):
        return (f"- **Faster convergence{which}:** **not tested**: none of the "
                f"{len(comparisons)} statistics could be computed for two runs per model "
                "(why, one line per statistic):")
    if not shown:
        return (f"- **Faster convergence{which}:** **inconclusive with these runs**: none of "
                f"the {len(comparisons)} statistics differs (Holm-corrected, one line per "
                "statistic):")
    text = (f"- **Faster convergence{which}:** "
            + ("**mixed: the statistics point in opposite directions**: "
               if outcome == "mixed" else "")
            + f"shown by {len(shown)} of {len(comparisons)} statistics: "
            + "; ".join(shown))
    if not_shown:
        text += "; not shown (inconclusive): " + ", ".join(not_shown)
    return text + " (Holm-corrected, one line per statistic):"


def _name(c: verdict.Comparison, settings: verdict.Settings) -> str:
    if c.statistic == "auc":
        return f"mean accuracy over the first {settings.auc_epochs:g} epoch(s)"
    return c.statistic


def _shown(c: verdict.Comparison, settings: verdict.Settings, other: str, baseline: str,
           lead: float, per_epoch_steps: float) -> str:
    """What a significant statistic shows, in the words of what it measures."""
    better = c.diff < 0 if c.faster_when == "lower" else c.diff > 0
    if c.statistic != "auc":
        target = c.statistic.removeprefix("steps to ")
        return (f"**{other} reaches {target} in {'fewer' if better else 'more'} steps than "
                f"{baseline}** ({c.diff:+.0f} steps)")
    text = (f"**{other} has {'higher' if better else 'lower'} test accuracy than {baseline} "
            f"early in training** (mean accuracy over the first {settings.auc_epochs:g} "
            f"epoch(s) {c.diff * 100:+.2f} pp")
    if math.isfinite(lead):
        horizon = settings.auc_epochs * per_epoch_steps
        text += f", {verdict.LEAD_SHARE:.0%} of it made by step {lead:.0f} of {horizon:.0f}"
    return text + ")"


def _eval_every(curves: pd.DataFrame) -> str:
    steps = sorted(set(curves["step"]))
    return f"{steps[1] - steps[0]:.0f}" if len(steps) > 1 else DASH


def _evaluation_cost(results: pd.DataFrame, models: list[str]) -> list[str]:
    """What the learning curves cost: evaluation time against training time, per run."""
    timing = results[results["metric"].isin(["step_eval_time_s", "epoch_time_s"])]
    if timing.empty:
        return []
    parts = []
    for model in models:
        sub = timing[timing["model"] == model]
        per_run = sub.groupby(["run", "metric"])["value"].sum().unstack()
        if "step_eval_time_s" not in per_run or "epoch_time_s" not in per_run:
            continue
        share = stats.summarize((per_run["step_eval_time_s"] / per_run["epoch_time_s"]).tolist())
        each = sub[sub["metric"] == "step_eval_time_s"]["value"]
        parts.append(f"{model} {share.mean * 100:.1f}% (± {number(share.std * 100, '.1f')}, "
                     f"n = {share.n} runs; {each.mean() * 1000:.0f} ms per evaluation)")
    if not parts:
        return []
    return ["Cost of the curves: evaluation time as a share of each run's training time: "
            + "; ".join(parts) + ".", ""]
