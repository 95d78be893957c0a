"""The "Catastrophic overfitting" section: for runs trained adversarially with learning
curves on, their accuracy under a short PGD on the curve's images at every point
(``step_pgd_acc``), which runs collapsed, and the plot that shows it.

FGSM training is known to collapse (Wong et al. 2020): within a few hundred steps the
accuracy under a multi-step attack falls to about 0 while the accuracy under FGSM,
the attack trained on, stays high. Per run:

- **collapsed**: its PGD accuracy fell more than ``DROP`` (20 points) below its peak
  by the end of training;
- **never robust**: its PGD accuracy never reached ``FLOOR`` (10%);
- **held**: neither.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchlab.report.loading import ordered
from benchlab.report.markdown import table
from benchlab.report.plots import plot_robust_curves

__all__ = ["DROP", "FLOOR", "METRIC", "outcomes", "section"]

METRIC = "step_pgd_acc"
DROP = 0.20
FLOOR = 0.10


def outcomes(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, run) with a PGD curve: its peak, where, its end, and outcome."""
    curves = results[(results["metric"] == METRIC) & results["step"].notna()]
    rows = []
    for (model, run), g in curves.groupby(["model", "run"], sort=False):
        g = g.sort_values("step")
        peak_at = g["value"].idxmax()
        peak, final = float(g.loc[peak_at, "value"]), float(g["value"].iloc[-1])
        if peak < FLOOR:
            outcome = "never robust"
        elif final < peak - DROP:
            outcome = "collapsed"
        else:
            outcome = "held"
        rows.append({"model": model, "run": int(run), "peak": peak,
                     "peak_step": int(g.loc[peak_at, "step"]), "final": final,
                     "final_step": int(g["step"].iloc[-1]), "outcome": outcome})
    return pd.DataFrame(rows, columns=["model", "run", "peak", "peak_step", "final",
                                       "final_step", "outcome"])


def section(results: pd.DataFrame, out: Path, procedures: dict[str, str], eval_set: str
            ) -> tuple[list[str], list[str]]:
    """(verdict lines, the section); both empty without PGD curves.
    Writes ``robust_accuracy_steps.png`` and ``overfitting.csv``."""
    per_run = outcomes(results)
    if per_run.empty:
        return [], []
    per_run.to_csv(out / "overfitting.csv", index=False)
    curves = results[(results["metric"] == METRIC) & results["step"].notna()]
    models = ordered(per_run["model"])
    plot_robust_curves(curves, models, eval_set, out / "robust_accuracy_steps.png")
    shown = per_run.assign(
        training=[procedures.get(m, "standard") for m in per_run["model"]],
        **{"peak PGD accuracy (%)": [f"{100 * v:.1f}" for v in per_run["peak"]],
           "at step": per_run["peak_step"],
           "final PGD accuracy (%)": [f"{100 * v:.1f}" for v in per_run["final"]],
           "final step": per_run["final_step"]})
    shown = shown[["model", "training", "run", "peak PGD accuracy (%)", "at step",
                   "final PGD accuracy (%)", "final step", "outcome"]]
    md = ["## Catastrophic overfitting", "",
          f"Runs trained adversarially are also evaluated on {eval_set} under a 10-step "
          "L∞ PGD at their procedure's ε (step 2.5·ε/10, from the clean image) at every "
          "point of their learning curve. Collapsed: the PGD accuracy fell more than "
          f"{100 * DROP:.0f} points below its peak by the end of training; never robust: it "
          f"never reached {100 * FLOOR:.0f}%; held: neither. Per-run values in "
          "`overfitting.csv`.", "", "![PGD accuracy during training](robust_accuracy_steps.png)",
          "", table(shown)]
    lines = []
    for model in models:
        mine = per_run[per_run["model"] == model]
        counts = mine["outcome"].value_counts()
        parts = [f"{int(counts[o])} {o}" for o in ("collapsed", "never robust", "held")
                 if o in counts]
        lines.append(f"- **Catastrophic overfitting, {model}** ({procedures.get(model, '')}): "
                     f"of {len(mine)} run(s), " + ", ".join(parts) +
                     f"; PGD accuracy on {eval_set} peaked at "
                     f"{100 * mine['peak'].min():.1f}–{100 * mine['peak'].max():.1f}% and ended "
                     f"at {100 * mine['final'].min():.1f}–{100 * mine['final'].max():.1f}%.")
    return lines, md
