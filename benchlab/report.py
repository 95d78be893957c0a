"""Tables and plots, drawn from a run's ``results.csv`` (and its saved artifacts) alone.

``benchlab report DIR`` calls :func:`render` and can therefore redraw everything of
a finished or interrupted run without running any job.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.stats  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from benchlab import attention_report, stats, verdict  # noqa: E402
from benchlab.files import atomic_write_text  # noqa: E402
from benchlab.store import read_results  # noqa: E402

log = logging.getLogger("benchlab.report")

DEFAULT_THRESHOLDS = (0.98, 0.99)


def _ordered(values: pd.Series) -> list[str]:
    return list(dict.fromkeys(v for v in values if isinstance(v, str)))


def _md_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_no data_\n"
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(_md_cell(v) for v in row.tolist()) + " |")
    return "\n".join(lines) + "\n"


def _md_cell(value: object) -> str:
    """A table cell: a '|' or a line break in a message would end the cell or the row."""
    return " ".join(str(value).split("\n")).replace("|", "\\|")


def _per_epoch(results: pd.DataFrame) -> pd.DataFrame:
    """Rows measured once per epoch (learning-curve points have a step)."""
    rows = results[results["epoch"].notna()]
    return rows[rows["step"].isna()] if "step" in rows.columns else rows


def epoch_statistics(results: pd.DataFrame) -> pd.DataFrame:
    """Mean, std, 95% CI and n of every per-epoch metric, per model and epoch."""
    rows = _per_epoch(results)
    out = []
    for (model, metric, epoch), group in rows.groupby(["model", "metric", "epoch"], sort=False):
        s = stats.summarize(group["value"].tolist())
        out.append({"model": model, "metric": metric, "epoch": int(epoch), "mean": s.mean,
                    "std": s.std, "ci95": s.ci95, "n": s.n})
    return pd.DataFrame(out, columns=["model", "metric", "epoch", "mean", "std", "ci95", "n"])


# --------------------------------------------------------------------------- training


def _plot_curves(table: pd.DataFrame, metric: str, models: list[str], runs: int, title: str,
                 path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model in models:
        t = table[(table["model"] == model) & (table["metric"] == metric)].sort_values("epoch")
        if t.empty:
            continue
        mean = t["mean"] * 100
        std = t["std"].fillna(0) * 100
        line, = ax.plot(t["epoch"], mean, marker="o", ms=3, label=model)
        ax.fill_between(t["epoch"], mean - std, mean + std, alpha=0.2, color=line.get_color())
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"{title.lower()} (%)")
    ax.set_title(f"{title}: mean ± 1 std over {runs} run{'s' if runs != 1 else ''}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plot_step_curves(curves: pd.DataFrame, models: list[str], thresholds: tuple[float, ...],
                      eval_set: str, path: Path) -> Path:
    """Mean ± 1 std of the learning curves against the step: log x (the first epoch
    legible) and linear x zoomed on the thresholds."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    runs = int(curves.groupby("model")["run"].nunique().min())
    for model in models:
        g = curves[curves["model"] == model].groupby("step")["value"]
        mean, std = g.mean() * 100, g.std().fillna(0) * 100
        for ax, keep in ((axes[0], mean.index > 0), (axes[1], mean.index >= 0)):
            line, = ax.plot(mean.index[keep], mean[keep], lw=1.5, label=model)
            ax.fill_between(mean.index[keep], (mean - std)[keep], (mean + std)[keep], alpha=0.2,
                            color=line.get_color())
    low = min(thresholds) * 100 - 2 if thresholds else 90
    for ax in axes:
        for threshold in thresholds:
            ax.axhline(threshold * 100, color="grey", ls=":", lw=0.8)
        ax.set_xlabel("optimisation step")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    if (curves["step"] > 0).any():
        axes[0].set_xscale("log")
        axes[0].set_title("log steps", fontsize=10)
    else:  # a run shorter than one evaluation interval has only step 0
        axes[0].set_title("no evaluation after step 0", fontsize=10)
    axes[1].set_ylim(low, 100)
    axes[1].set_title(f"from {low:g}%", fontsize=10)
    fig.suptitle(f"Test accuracy on {eval_set} during training: mean ± 1 std over {runs} "
                 f"run{'s' if runs != 1 else ''}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _curve_section(results: pd.DataFrame, out: Path, models: list[str],
                   settings: verdict.Settings, eval_set: str
                   ) -> tuple[list[str], list[str]]:
    """Learning curves: (verdict lines, the section)."""
    curves = verdict.curve_rows(results)
    if curves.empty:
        return [], []
    _plot_step_curves(curves, models, settings.step_thresholds, eval_set,
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
    baseline = models[0]
    for other in models[1:]:
        comparisons = verdict.convergence(per_run, baseline, other, settings)
        table = []
        for c in comparisons:
            lines.append("  - " + verdict.convergence_line(c, baseline, other, settings,
                                                            eval_set, per_epoch_steps))
            is_auc = c.statistic == "auc"
            scale, digits = (100, 2) if is_auc else (1, 0)
            table.append({
                "statistic": "mean accuracy, early window (%)" if is_auc else c.statistic,
                f"{other}": _mean_sd(c.other, scale, digits),
                f"{baseline}": _mean_sd(c.baseline, scale, digits),
                "never reached": "–" if c.never is None else f"{c.never[0]} / {c.never[1]}",
                "difference": f"{c.diff * scale:+.{digits}f}",
                "95% bootstrap CI": "[{:+.{d}f}, {:+.{d}f}]".format(c.ci[0] * scale,
                                                                    c.ci[1] * scale, d=digits),
                "Welch t": "–" if math.isnan(c.t) else f"{c.t:.2f}",
                "p": verdict.fmt_p(c.p), "p (Holm)": verdict.fmt_p(c.p_holm),
                "paired p": verdict.fmt_p(c.paired_p),
                "paired r": "–" if math.isnan(c.paired_r) else f"{c.paired_r:.2f}"})
        outcome = verdict.convergence_outcome(comparisons, settings.alpha)
        lines.insert(len(lines) - len(comparisons), _convergence_head(outcome, other, baseline))
        md += [f"### {other} against {baseline}", "",
               f"n = {comparisons[0].other.size} and {comparisons[0].baseline.size} runs; Welch "
               "t-tests, Holm-corrected over the statistics; paired p / r: the same runs paired "
               "by seed (shown for reference, see docs/statistics.md).", "",
               _md_table(pd.DataFrame(table))]
    return lines, md


def _convergence_head(outcome: str, other: str, baseline: str) -> str:
    text = {"faster": f"**{other} converges faster than {baseline}**",
            "slower": f"**{other} converges more slowly than {baseline}**",
            "mixed": "**mixed: the statistics point in opposite directions**",
            "inconclusive": "**inconclusive with these runs**"}[outcome]
    return f"- **Faster convergence:** {text} (Holm-corrected, one line per statistic):"


def _eval_every(curves: pd.DataFrame) -> str:
    steps = sorted(set(curves["step"]))
    return f"{steps[1] - steps[0]:.0f}" if len(steps) > 1 else "–"


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
        parts.append(f"{model} {share.mean * 100:.1f}% (± {_or_dash(share.std * 100)}, "
                     f"n = {share.n} runs; {each.mean() * 1000:.0f} ms per evaluation)")
    if not parts:
        return []
    return ["Cost of the curves: evaluation time as a share of each run's training time: "
            + "; ".join(parts) + ".", ""]


def _or_dash(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.1f}"


def _mean_sd(values, scale: float, digits: int) -> str:
    s = stats.summarize(list(values))
    return stats.format_mean_std(s, scale, digits) if s.n else "–"


def _training_section(results: pd.DataFrame, out: Path, thresholds: tuple[float, ...],
                      alpha: float, settings: verdict.Settings | None = None,
                      eval_set: str = "the evaluation set", test_set: str = "the test split"
                      ) -> tuple[list[str], list[str]]:
    """(verdict lines, the training sections)."""
    settings = settings or verdict.Settings(alpha=alpha)
    rows = _per_epoch(results).copy()
    if rows.empty:
        return [], []
    rows["epoch"] = rows["epoch"].astype(int)
    models = _ordered(rows["model"])
    table = epoch_statistics(rows)
    runs = int(rows.groupby("model")["run"].nunique().min())
    _plot_curves(table, "test_acc", models, runs, "Test accuracy", out / "test_accuracy.png")
    _plot_curves(table, "train_acc", models, runs, "Training accuracy",
                 out / "train_accuracy.png")
    table.to_csv(out / "epoch_statistics.csv", index=False)

    md = ["## Training", "",
          f"{runs} run(s) per model. Accuracy curves: mean ± 1 standard deviation. Training "
          "images/s counts all the runs that were trained at the same time (runs, of one "
          "model or of several, train side by side, one per core).", "",
          "![test accuracy](test_accuracy.png)", "", "![training accuracy](train_accuracy.png)",
          ""]

    test = rows[rows["metric"] == "test_acc"]
    last_epoch = int(test["epoch"].max())
    final_rows = []
    for model in models:
        mt = test[test["model"] == model]
        final = stats.summarize(mt[mt["epoch"] == mt["epoch"].max()]["value"].tolist())
        means = mt.groupby("epoch")["value"].mean()
        best_epoch = int(means.idxmax())
        row = {"model": model, "runs": final.n,
               "final test acc. (%)": stats.format_mean_std(final, 100),
               "95% CI (±)": "–" if math.isnan(final.ci95) else f"{final.ci95 * 100:.2f}",
               "best epoch": best_epoch, "best mean test acc. (%)": f"{means.max() * 100:.2f}"}
        for thr in thresholds:
            reached = [stats.first_epoch_reaching(g["epoch"].tolist(), g["value"].tolist(), thr)
                       for _, g in mt.groupby("run")]
            hits = [e for e in reached if e is not None]
            mean = f"{sum(hits) / len(hits):.2f}" if hits else "never"
            row[f"epochs to {thr * 100:g}%"] = f"{mean} ({len(hits)}/{len(reached)} runs)"
        speed = rows[(rows["model"] == model) & (rows["metric"] == "images_per_s")]["value"]
        row["training images/s"] = f"{speed.mean():.0f}" if len(speed) else "–"
        final_rows.append(row)
    md += [f"### Final test accuracy (epoch {last_epoch})", "", _md_table(pd.DataFrame(final_rows))]

    stat_rows = table[table["metric"] == "test_acc"].copy()
    for column in ("mean", "std", "ci95"):
        stat_rows[column] = [_pct(v) for v in stat_rows[column]]
    md += ["### Test accuracy per epoch (%)", "",
           _md_table(stat_rows[["model", "epoch", "mean", "std", "ci95", "n"]])]

    lines: list[str] = []
    if len(models) >= 2:
        curve_lines, curve_md = _curve_section(results, out, models, settings, eval_set)
        md += curve_md
        baseline = models[0]
        for other in models[1:]:
            welch_md, sentence = _welch_section(test, baseline, other, alpha)
            md += welch_md
            claim = verdict.equivalence(test, baseline, other, settings)
            if claim is not None:
                lines.append("- **Same final accuracy:** "
                             + verdict.equivalence_line(claim, baseline, other, settings,
                                                        test_set))
            lines.append(f"- **Per-epoch test accuracy** (Welch, Holm-corrected over "
                         f"{len(set(test['epoch']))} epochs): "
                         + sentence.removeprefix("**Verdict:** "))
        lines = curve_lines + lines
    return lines, md


def _welch_section(test: pd.DataFrame, baseline: str, other: str, alpha: float
                   ) -> tuple[list[str], str]:
    """The per-epoch Welch table with Holm-corrected p-values, and its verdict sentence."""
    frame = verdict.per_epoch(test, baseline, other)
    rows, significant, better = [], [], []
    for r in frame.itertuples():
        sig = not math.isnan(r.p_holm) and r.p_holm < alpha
        if sig:
            significant.append(r.epoch)
            better.append(r.diff > 0)
        rows.append({"epoch": r.epoch, f"{other} (%)": _pct(r.other),
                     f"{baseline} (%)": _pct(r.baseline),
                     "difference (pp)": "–" if math.isnan(r.diff) else f"{r.diff * 100:+.2f}",
                     "t": "–" if math.isnan(r.t) else f"{r.t:.2f}",
                     "p": "–" if math.isnan(r.p) else f"{r.p:.3g}",
                     "p (Holm)": "–" if math.isnan(r.p_holm) else f"{r.p_holm:.3g}",
                     f"p (Holm) < {alpha:g}": "yes" if sig else "no"})
    epochs = frame["epoch"].tolist()
    sentence = _welch_sentence(other, baseline, epochs, significant, better, alpha,
                               all(r["t"] == "–" for r in rows))
    md = [f"### Welch t-test per epoch: {other} against {baseline} (test accuracy)", "",
          f"n = {int(frame['n_other'].max())} and {int(frame['n_baseline'].max())} runs. "
          f"p (Holm): corrected for the {len(epochs)} tests of this table.", "",
          _md_table(pd.DataFrame(rows)), sentence, ""]
    return md, sentence


def _pct(value: float) -> str:
    return "–" if math.isnan(value) else f"{value * 100:.2f}"


def _span(epochs: list[int]) -> str:
    if not epochs:
        return "none"
    parts, start, prev = [], epochs[0], epochs[0]
    for e in epochs[1:] + [None]:
        if e is not None and e == prev + 1:
            prev = e
            continue
        parts.append(f"{start}" if start == prev else f"{start}–{prev}")
        if e is not None:
            start = prev = e
    return ", ".join(parts)


def _welch_sentence(other: str, baseline: str, epochs: list[int], significant: list[int],
                    better: list[bool], alpha: float, untestable: bool) -> str:
    if untestable:
        return (f"**Verdict:** a t-test needs at least two runs per model; rerun with "
                f"`--set train.runs=N` (N ≥ 2) to compare {other} with {baseline}.")
    last = epochs[-1]
    ahead = [e for e, b in zip(significant, better) if b]
    behind = [e for e, b in zip(significant, better) if not b]
    if not significant:
        return (f"**Verdict:** {other} does not differ significantly from {baseline} "
                f"(Holm-corrected p < {alpha:g}) at any of epochs {epochs[0]}–{last}. No "
                "significant difference is not evidence of equal accuracy: that takes the "
                "equivalence test.")
    text = (f"**Verdict:** {other} differs significantly from {baseline} (Holm-corrected "
            f"p < {alpha:g}) at epoch(s) {_span(significant)} of {epochs[0]}–{last}")
    if ahead:
        text += f"; it is ahead at {_span(ahead)}"
    if behind:
        text += f"; behind at {_span(behind)}"
    text += ". "
    final_sig = last in significant
    early_ahead = bool(ahead) and min(ahead) < last
    if early_ahead and not final_sig:
        text += (f"{other} leads early; the final-epoch difference is not significant (which "
                 "alone does not show equal accuracy: see the equivalence test).")
    elif final_sig:
        text += ("The final accuracies differ significantly, so the data do not support "
                 "\"same final accuracy\".")
    else:
        text += "The final-epoch difference is not significant."
    return text


def _settings(report: dict, alpha: float) -> verdict.Settings:
    defaults = verdict.Settings()
    margin = report.get("equivalence_margin")
    return verdict.Settings(
        alpha=alpha,
        step_thresholds=tuple(report.get("step_thresholds", defaults.step_thresholds)),
        auc_epochs=float(report.get("auc_epochs", defaults.auc_epochs)),
        margin_pp=float(margin) if margin is not None else None)


def _eval_set(suite: dict, curve: bool = True) -> str:
    """Which test images the learning curves (or, ``curve=False``, the epochs) used."""
    train, dataset = suite.get("train") or {}, suite.get("dataset") or {}
    sizes = [dataset.get("test_size")] + ([train.get("eval_size")] if curve else [])
    sizes = [s for s in sizes if s is not None]
    return f"the first {min(sizes)} test images" if sizes else "the whole test split"


# --------------------------------------------------------------------------- robustness


_NORM_BY_P = {math.inf: "linf", 2.0: "l2", 1.0: "l1", 0.0: "l0"}
_NORM_LABEL = {"linf": "L∞", "l2": "L2", "l1": "L1", "l0": "L0"}


def _threats(rows: pd.DataFrame) -> dict[str, tuple[str, bool]]:
    """attack -> (norm, minimum-norm?), from its norm_p and minimum_norm rows; an L∞
    ball for runs recorded before attacks declared what they bound."""
    threats = {}
    for attack, sub in rows.groupby("attack"):
        p = sub[sub["metric"] == "norm_p"]["value"]
        minimum = sub[sub["metric"] == "minimum_norm"]["value"]
        norm = _NORM_BY_P.get(float(p.iloc[0]), "linf") if len(p) else "linf"
        threats[str(attack)] = (norm, bool(len(minimum) and minimum.iloc[0] > 0))
    return threats


def _rate(values: pd.Series) -> str:
    """Images per second, mean over jobs, with enough digits for a slow attack."""
    if not len(values):
        return "–"
    rate = float(values.mean())
    return f"{rate:.0f}" if rate >= 10 else f"{rate:.2g}"


def _robustness_section(results: pd.DataFrame, out: Path) -> list[str]:
    rows = results[results["attack"].notna() & results["explainer"].isna()
                   & results["epoch"].isna()]
    if rows.empty:
        return []
    models, attacks = _ordered(rows["model"]), _ordered(rows["attack"])
    threats = _threats(rows)
    table, found = [], []
    for model in models:
        for attack in attacks:
            sub = rows[(rows["model"] == model) & (rows["attack"] == attack)]
            if sub.empty:
                continue
            per_eps = sub[sub["eps"].notna()]
            norm, minimum = threats[attack]
            threat = f"minimum {_NORM_LABEL[norm]}" if minimum else f"{_NORM_LABEL[norm]} ball"
            speed = _rate(sub[sub["metric"] == "images_per_s"]["value"])
            for eps in sorted(set(per_eps["eps"])):
                cell = per_eps[per_eps["eps"] == eps]

                def fmt(metric: str, scale: float = 1.0, digits: int = 2,
                        cell: pd.DataFrame = cell) -> str:
                    values = cell[cell["metric"] == metric]["value"].tolist()
                    return stats.format_mean_std(stats.summarize(values), scale, digits) \
                        if values else "–"

                def share(metric: str, cell: pd.DataFrame = cell) -> str:
                    """One run: the share with its Wilson interval over its n images;
                    several: mean ± std over runs."""
                    values = cell[cell["metric"] == metric]["value"].tolist()
                    counts = cell[cell["metric"] == f"{metric}.n"]["value"].tolist()
                    if len(values) != 1 or len(counts) != 1 or math.isnan(values[0]):
                        return fmt(metric, 100)
                    low, high = _wilson(values[0], int(counts[0]))
                    return f"{100 * values[0]:.2f} [{100 * low:.2f}, {100 * high:.2f}]"

                images = cell[cell["metric"] == "accuracy.n"]["value"]
                table.append({"model": model, "attack": attack, "threat": threat,
                              "eps": f"{eps:g}",
                              "images (n)": "–" if images.empty else
                              "/".join(dict.fromkeys(f"{v:.0f}" for v in images)),
                              "accuracy (%)": share("accuracy"),
                              "success rate (%)": share("success_rate"),
                              "mean L∞": fmt("linf", 1, 3), "mean L2": fmt("l2", 1, 3),
                              "attack images/s": speed})
            if minimum:
                def value(metric: str, sub: pd.DataFrame = sub) -> pd.Series:
                    return sub[sub["metric"] == metric]["value"]

                median = value("median_norm")
                found.append({
                    "model": model, "attack": attack, "norm": _NORM_LABEL[norm],
                    "images attacked (n)": f"{value('attacked').sum():.0f}",
                    "found (%)": stats.format_mean_std(
                        stats.summarize(value("found_rate").tolist()), 100, 1),
                    "median norm of successful perturbations":
                        "– (none found)" if median.isna().all() else
                        stats.format_mean_std(stats.summarize(median.dropna().tolist()), 1, 3),
                    "runs": f"{len(median)}"})
    frame = pd.DataFrame(table)
    frame.to_csv(out / "robustness.csv", index=False)
    _plot_robustness(rows, models, attacks, threats, out / "robustness.png")
    n = int(rows["job"].nunique())
    md = ["## Robustness", "",
          "Accuracy on the attacked test images (ε = 0: clean images) over n images, with "
          "a 95% Wilson interval (one run) or mean ± std over runs; success rate: share "
          "of the correctly classified images that the attack makes wrong (same interval, "
          "over those images); L∞/L2: mean "
          "perturbation size per image; attack images/s: adversarial images made per second "
          "(for an attack bounded by a ball every image at every ε counts once; a "
          "minimum-norm attack makes one per image). An attack bounded by a ball is run "
          "at each ε; for a minimum-norm attack an image counts as broken at ε when the "
          "perturbation it found has norm ≤ ε, so its curve is derived from one run. "
          f"{n} attack job(s).", "",
          "![robustness](robustness.png)", "", _md_table(frame)]
    if found:
        md += ["### Minimum-norm attacks", "",
               "Found: share of the correctly classified images for which the attack found "
               "a perturbation that changes the prediction; median norm: over those "
               "perturbations, in the attack's norm (mean ± std over runs).", "",
               _md_table(pd.DataFrame(found))]
    return md


def _wilson(share: float, n: int) -> tuple[float, float]:
    """95% Wilson interval of a share observed over ``n`` images (NaN, NaN when n is 0)."""
    if n <= 0:
        return math.nan, math.nan
    k = round(share * n)
    ci = scipy.stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
    return float(ci.low), float(ci.high)


def _plot_robustness(rows: pd.DataFrame, models: list[str], attacks: list[str],
                     threats: dict[str, tuple[str, bool]], path: Path) -> None:
    """One panel per norm (ε of different norms share no axis); minimum-norm attacks
    dashed, their points derived from the norms the attack found."""
    norms = [n for n in _NORM_LABEL if any(t[0] == n for t in threats.values())]
    fig, axes = plt.subplots(1, len(norms), figsize=(6.5 * len(norms), 4.5), squeeze=False)
    acc = rows[rows["metric"] == "accuracy"]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, norm in zip(axes[0], norms):
        for i, attack in enumerate(a for a in attacks if threats[a][0] == norm):
            minimum = threats[attack][1]
            for j, model in enumerate(models):
                sub = acc[(acc["model"] == model) & (acc["attack"] == attack)]
                if sub.empty:
                    continue
                g = sub.groupby("eps")["value"]
                mean, std = g.mean() * 100, g.std().fillna(0) * 100
                color = colors[i % len(colors)]
                label = f"{model} · {attack}" + (" (minimum norm)" if minimum else "")
                ax.plot(mean.index, mean.values, color=color, label=label,
                        marker="os^vD"[j % 5], linestyle="--" if minimum else "-")
                ax.fill_between(mean.index, mean - std, mean + std, alpha=0.12, color=color)
        ax.set_xlabel(f"ε ({_NORM_LABEL[norm]} norm, [0, 1] pixel scale)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"Accuracy under attack: {_NORM_LABEL[norm]}")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- attention


def _grids(out: Path, explainers: list[str]) -> list[str]:
    """One grid per explain job of run 0, under a heading per explainer."""
    from benchlab.grid import draw_grid

    for path in sorted((out / "artifacts").glob("explain-*-r00-*.pt")):
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - one damaged file must not stop the report
            log.warning("%s cannot be read (%s: %s); its grid is left out", path,
                        type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            continue
        name = path.stem.removeprefix("explain-").replace("-r00", "")
        rows = ["clean"] + [f"ε = {e:g}" for e in data["eps"].tolist()[1:]]
        png = out / f"grid_{name}.png"
        draw_grid(data["images"], data["maps"], data["preds"], data["confidences"], rows,
                  title=name.replace("-", " · "), path=png, labels=data.get("labels"))
    # Grids drawn earlier stay listed when their artifacts are gone (a copied run).
    pngs = sorted(out.glob("grid_*.png"))
    if not pngs:
        return []
    md = ["## Explanation grids (run 0)", "",
          "Each column is one test image: the clean image (top row) and its adversarial "
          "versions at growing ε, under the explainer's map. A caption reads "
          "prediction (confidence); the top caption also gives the true label. Red: the "
          "prediction is wrong.", ""]
    by_explainer: dict[str, list[Path]] = {}
    for png in pngs:
        stem = png.stem.removeprefix("grid_")
        # The longest known explainer key that ends the name (keys may contain '-').
        owner = max((e for e in explainers if stem.endswith(f"-{e}")), key=len, default="")
        by_explainer.setdefault(owner, []).append(png)
    for explainer in [*explainers, ""]:
        if explainer not in by_explainer:
            continue
        md += [f"### {explainer or 'other'}", ""]
        for png in by_explainer[explainer]:
            md += [f"![{png.stem.removeprefix('grid_')}]({png.name})", ""]
    return md


def _failures(out: Path) -> list[str]:
    path = out / "jobs.csv"
    if not path.exists():
        return []
    jobs = pd.read_csv(path)
    failed = jobs[jobs["status"] == "failed"]
    if failed.empty:
        return []
    return ["## Failures", "", f"{len(failed)} of {len(jobs)} job(s) failed; every other job "
            "kept its results.", "",
            _md_table(failed[["id", "message"]].rename(columns={"id": "job"}))]


def render(out: Path) -> Path:
    """Write summary.md and the plots of the run in ``out``; return the summary's path."""
    out = Path(out)
    results = read_results(out)
    thresholds, alpha, title, description = DEFAULT_THRESHOLDS, 0.05, out.name, ""
    suite: dict = {}
    report: dict = {}
    suite_file = out / "suite.yaml"
    if suite_file.exists():
        suite = yaml.safe_load(suite_file.read_text()) or {}
        report = suite.get("report") or {}
        thresholds = tuple(report.get("thresholds", thresholds))
        alpha = float(report.get("alpha", alpha))
        title, description = suite.get("name", title), suite.get("description", "")
    md = [f"# {title}", ""]
    if description:
        md += [description.strip(), ""]
    claims, training_md = _training_section(results, out, thresholds, alpha,
                                            _settings(report, alpha), _eval_set(suite),
                                            _eval_set(suite, curve=False))
    if claims:
        md += ["## Verdict", "", f"Each part of the claim tested on its own (α = {alpha:g}; "
               "the methods are described in benchlab's docs/statistics.md).", "", *claims, ""]
    md += _failures(out)
    md += training_md
    md += _robustness_section(results, out)
    md += attention_report.section(results, out, _md_table)
    explainers = _ordered(results["explainer"].dropna()) if "explainer" in results else []
    md += _grids(out, explainers)
    if len(md) <= 3:
        md += ["_No finished jobs yet._", ""]
    path = out / "summary.md"
    atomic_write_text(path, "\n".join(md).rstrip() + "\n")
    return path
