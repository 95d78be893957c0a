"""The "Training" section: per-epoch accuracy of every model (curves, the final test
accuracy, the per-epoch table) and, with two models or more, the comparisons against
the first one (learning curves, per-epoch Welch tests, the equivalence test), whose
verdict lines the summary puts at its top."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchlab import stats, verdict
from benchlab.report.convergence import section as convergence_section
from benchlab.report.loading import ordered
from benchlab.report.markdown import DASH, number, percent, table
from benchlab.report.plots import plot_epoch_curves
from benchlab.report.welch import section as welch_section

__all__ = ["epoch_statistics", "per_epoch", "section"]


def per_epoch(results: pd.DataFrame) -> pd.DataFrame:
    """Rows measured once per epoch (learning-curve points have a step)."""
    rows = results[results["epoch"].notna()]
    return rows[rows["step"].isna()] if "step" in rows.columns else rows


def epoch_statistics(results: pd.DataFrame) -> pd.DataFrame:
    """Mean, std, 95% CI and n of every per-epoch metric, per model and epoch."""
    rows = per_epoch(results)
    out = []
    for (model, metric, epoch), group in rows.groupby(["model", "metric", "epoch"], sort=False):
        s = stats.summarize(group["value"].tolist())
        out.append({"model": model, "metric": metric, "epoch": int(epoch), "mean": s.mean,
                    "std": s.std, "ci95": s.ci95, "n": s.n})
    return pd.DataFrame(out, columns=["model", "metric", "epoch", "mean", "std", "ci95", "n"])


def section(results: pd.DataFrame, out: Path, thresholds: tuple[float, ...],
            settings: verdict.Settings, eval_set: str = "the evaluation set",
            test_set: str = "the test split",
            procedures: dict[str, str] | None = None) -> tuple[list[str], list[str]]:
    """(verdict lines, the training sections); both empty for a run without epochs.
    Writes the accuracy plots and ``epoch_statistics.csv``. Each model is compared with
    the first model trained the same way (``procedures``: model -> procedure in words;
    without it, all with the first model)."""
    rows = per_epoch(results).copy()
    if rows.empty:
        return [], []
    rows["epoch"] = rows["epoch"].astype(int)
    models = ordered(rows["model"])
    stats_table = epoch_statistics(rows)
    runs = int(rows.groupby("model")["run"].nunique().min())
    plot_epoch_curves(stats_table, "test_acc", models, runs, "Test accuracy",
                      out / "test_accuracy.png")
    plot_epoch_curves(stats_table, "train_acc", models, runs, "Training accuracy",
                      out / "train_accuracy.png")
    stats_table.to_csv(out / "epoch_statistics.csv", index=False)

    md = ["## Training", "",
          f"{runs} run(s) per model. Accuracy curves: mean ± 1 standard deviation. Training "
          "images/s counts all the runs that were trained at the same time (runs, of one "
          "model or of several, train side by side, one per core).", "",
          "![test accuracy](test_accuracy.png)", "", "![training accuracy](train_accuracy.png)",
          ""]

    test = rows[rows["metric"] == "test_acc"]
    last_epoch = int(test["epoch"].max())
    final_rows = [_final_row(rows, test, model, thresholds) for model in models]
    md += [f"### Final test accuracy (epoch {last_epoch})", "", table(pd.DataFrame(final_rows))]

    stat_rows = stats_table[stats_table["metric"] == "test_acc"].copy()
    for column in ("mean", "std", "ci95"):
        stat_rows[column] = [percent(v) for v in stat_rows[column]]
    md += ["### Test accuracy per epoch (%)", "",
           table(stat_rows[["model", "epoch", "mean", "std", "ci95", "n"]])]

    lines: list[str] = []
    pairs = same_training_pairs(models, procedures or {})
    if pairs:
        curve_lines, curve_md = convergence_section(results, out, models, settings, eval_set,
                                                    pairs)
        md += curve_md
        for other, baseline in pairs:
            welch_md, sentence = welch_section(test, baseline, other, settings.alpha)
            md += welch_md
            claim = verdict.equivalence(test, baseline, other, settings)
            if claim is not None:
                lines.append("- **Same final accuracy** (both directions, TOST): "
                             + verdict.equivalence_line(claim, baseline, other, settings,
                                                        test_set))
                lines += ["  - " + line for line in
                          verdict.one_sided_lines(claim, baseline, other, settings)]
            lines.append(f"- **Per-epoch test accuracy** (Welch, Holm-corrected over "
                         f"{len(set(test['epoch']))} epochs): "
                         + sentence.removeprefix("**Verdict:** "))
        lines = curve_lines + lines
    return lines, md


def _final_row(rows: pd.DataFrame, test: pd.DataFrame, model: str,
               thresholds: tuple[float, ...]) -> dict[str, object]:
    """One model's row of the final-accuracy table."""
    mt = test[test["model"] == model]
    final = stats.summarize(mt[mt["epoch"] == mt["epoch"].max()]["value"].tolist())
    means = mt.groupby("epoch")["value"].mean()
    row: dict[str, object] = {
        "model": model, "runs": final.n,
        "final test acc. (%)": stats.format_mean_std(final, 100),
        "95% CI (±)": number(final.ci95 * 100), "best epoch": int(means.idxmax()),
        "best mean test acc. (%)": f"{means.max() * 100:.2f}"}
    for thr in thresholds:
        reached = [stats.first_epoch_reaching(g["epoch"].tolist(), g["value"].tolist(), thr)
                   for _, g in mt.groupby("run")]
        hits = [e for e in reached if e is not None]
        mean = f"{sum(hits) / len(hits):.2f}" if hits else "never"
        row[f"epochs to {thr * 100:g}%"] = f"{mean} ({len(hits)}/{len(reached)} runs)"
    speed = rows[(rows["model"] == model) & (rows["metric"] == "images_per_s")]["value"]
    row["training images/s"] = f"{speed.mean():.0f}" if len(speed) else DASH
    return row


def same_training_pairs(models: list[str], procedures: dict[str, str]) -> list[tuple[str, str]]:
    """(model, against) pairs: each model against the first model trained the same way
    (a model without a procedure in ``procedures`` counts as trained the standard way)."""
    groups: dict[str, list[str]] = {}
    for model in models:
        groups.setdefault(procedures.get(model, "standard"), []).append(model)
    return [(other, members[0]) for members in groups.values() for other in members[1:]]

