"""The figures of summary.md, drawn with matplotlib's Agg backend (no display needed)
and saved at one resolution. Each function draws one figure from tables that its
section has already computed; the Grad-CAM grid has its own module (:mod:`.grid`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from benchlab import stats  # noqa: E402
from benchlab.messages import NORM_LABELS  # noqa: E402

__all__ = ["CONTROLS", "line_styles", "plot_attention", "plot_epoch_curves", "plot_robustness",
           "plot_sanity", "plot_step_curves", "plot_sweep"]

DPI = 120
CONTROLS = ("random",)  # explainers drawn dashed: what the others are read against


def _save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)  # pyplot keeps every figure open until closed


def _over_runs(runs: int) -> str:
    if runs == 1:
        return "one run (one trained model: no spread over runs)"
    return f"mean ± 1 std over {runs} runs"


def plot_epoch_curves(table: pd.DataFrame, metric: str, models: list[str], runs: int, title: str,
                 path: Path) -> Path:
    """``metric`` (a share) against the epoch, one line per model with a ± 1 std band;
    ``table`` is :func:`benchlab.report.epochs.epoch_statistics`."""
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
    ax.set_title(f"{title}: {_over_runs(runs)}")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)
    return path


def plot_step_curves(curves: pd.DataFrame, models: list[str], thresholds: tuple[float, ...],
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
    fig.suptitle(f"Test accuracy on {eval_set} during training: {_over_runs(runs)}")
    _save(fig, path)
    return path


def plot_robust_curves(curves: pd.DataFrame, models: list[str], eval_set: str,
                       path: Path) -> Path:
    """Accuracy under the learning curve's PGD against the step, one thin line per run,
    one colour per model (a collapse is a run's own event: a mean would blur it)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, model in enumerate(models):
        mine = curves[curves["model"] == model]
        for k, (_, g) in enumerate(mine.groupby("run")):
            g = g.sort_values("step")
            ax.plot(g["step"], g["value"] * 100, color=colors[j % len(colors)], lw=1,
                    alpha=0.8, label=model if k == 0 else None)
    ax.set_xlabel("optimisation step")
    ax.set_ylabel("accuracy under PGD (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(f"Accuracy under a 10-step PGD on {eval_set} during adversarial training "
                 "(one line per run)", fontsize=10)
    _save(fig, path)
    return path


def plot_robustness(rows: pd.DataFrame, models: list[str], attacks: list[str],
                    threats: dict[str, tuple[str, bool]], path: Path) -> None:
    """Accuracy against ε, one panel per attack (on its own norm's ε axis), one line per
    model: the mean over runs with its 95% t interval as a band (none for one run).
    A minimum-norm attack's points are derived from the norms it found (dashed)."""
    cols = min(3, len(attacks))
    n_rows = math.ceil(len(attacks) / cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(4.6 * cols, 3.8 * n_rows), squeeze=False)
    acc = rows[rows["metric"] == "accuracy"]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, attack in zip(axes.flat, attacks):
        norm, minimum = threats[attack]
        for j, model in enumerate(models):
            sub = acc[(acc["model"] == model) & (acc["attack"] == attack)]
            if sub.empty:
                continue
            eps = sorted(set(sub["eps"].dropna()))
            summaries = [stats.summarize(sub[sub["eps"] == e]["value"].tolist()) for e in eps]
            mean = np.array([s.mean for s in summaries]) * 100
            half = np.nan_to_num(np.array([s.ci95 for s in summaries]) * 100)
            n = max(s.n for s in summaries)
            color = colors[j % len(colors)]
            ax.plot(eps, mean, color=color, marker="os^vDP"[j % 6], ms=4,
                    linestyle="--" if minimum else "-",
                    label=f"{model} (n = {n} run{'s' if n != 1 else ''})")
            if n > 1:
                ax.fill_between(eps, mean - half, mean + half, alpha=0.15, color=color)
        ax.set_xlabel(f"ε ({NORM_LABELS[norm]} norm, [0, 1] pixel scale)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{attack}" + (" (minimum norm)" if minimum else ""), fontsize=10)
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(attacks):]:
        ax.axis("off")
    fig.suptitle("Accuracy under attack: mean over runs, band: 95% t interval over runs",
                 fontsize=10)
    _save(fig, path)


def line_styles(groups: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], dict]:
    """A style per (model, attack, explainer) that stays distinct past ten lines: the
    colour says the attack and explainer (tab20, or evenly spaced hues beyond 20), the
    line style and marker the model; a control explainer is drawn faded."""
    pairs = list(dict.fromkeys((attack, explainer) for _, attack, explainer in groups))
    models = list(dict.fromkeys(model for model, _, _ in groups))
    if len(pairs) <= 10:
        colors = [plt.get_cmap("tab10")(i) for i in range(len(pairs))]
    elif len(pairs) <= 20:
        colors = [plt.get_cmap("tab20")(i) for i in range(len(pairs))]
    else:
        colors = [plt.get_cmap("turbo")(x) for x in np.linspace(0.05, 0.95, len(pairs))]
    dashes, markers = ["-", "--", ":", "-."], "os^vDP<>"
    styles = {}
    for model, attack, explainer in groups:
        m = models.index(model)
        control = explainer in CONTROLS
        styles[(model, attack, explainer)] = dict(
            color=colors[pairs.index((attack, explainer))], linestyle=dashes[m % len(dashes)],
            marker=markers[m % len(markers)], alpha=0.6 if control else 1.0)
    return styles


def plot_attention(table: pd.DataFrame, groups: list[tuple[str, str, str]],
                   panels: list[tuple[str, str]], path: Path, title: str,
                   norms: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """One panel per (metric, label) of ``panels`` and norm against ε, one line with its
    interval per (model, attack, explainer); a metric ``base|qualifier`` picks a
    qualified estimate. ``norms``: each attack's norm (default L∞); attacks of different
    norms are drawn on separate panels, their ε being on different scales. The legend
    sits below the panels. ``table`` is
    :func:`benchlab.report.attention_estimates.estimates`. Returns each panel's title
    and x label."""
    norms = norms or {}
    present = list(dict.fromkeys(norms.get(attack, "linf") for _, attack, _ in groups))
    cells = [(metric, label, norm) for metric, label in panels for norm in present]
    cols = 3 if len(present) == 1 else len(present)
    rows = math.ceil(len(cells) / cols)
    styles = line_styles(groups)
    ncol = 3 if cols >= 3 else 2
    legend_height = 0.2 * math.ceil(len(groups) / ncol) + 0.3
    height = 3.4 * rows + legend_height
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, height), squeeze=False)
    handles: dict[str, object] = {}
    for ax, (metric, label, norm) in zip(axes.flat, cells):
        base, _, qualifier = metric.partition("|")
        for group in groups:
            model, attack, explainer = group
            if norms.get(attack, "linf") != norm:
                continue
            sub = table[(table["model"] == model) & (table["attack"] == attack)
                        & (table["explainer"] == explainer) & (table["base"] == base)
                        & (table["qualifier"] == qualifier)].sort_values("eps")
            if sub.empty:
                continue
            low = (sub["value"] - sub["low"]).clip(lower=0).fillna(0)
            high = (sub["high"] - sub["value"]).clip(lower=0).fillna(0)
            name = f"{model} · {attack} · {explainer}"
            handles[name] = ax.errorbar(sub["eps"], sub["value"], yerr=[low, high], ms=3,
                                        capsize=2, lw=1.2, label=name, **styles[group])
        ax.set_xlabel(f"ε ({NORM_LABELS[norm]})")
        ax.set_title(label if len(present) == 1 else f"{label}, {NORM_LABELS[norm]}",
                     fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(cells):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=ncol,
                   fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, legend_height / height, 1, 1))
    fig.savefig(path, dpi=DPI)
    drawn = [(ax.get_title(), ax.get_xlabel()) for ax in list(axes.flat)[:len(cells)]]
    plt.close(fig)
    return drawn


def plot_sanity(table: pd.DataFrame, path: Path) -> bool:
    """The model-randomisation check as one bar per model and explainer, with its
    interval; False (and no file) when no explain job measured it."""
    rows = table[(table["base"] == "sanity_rank_correlation") & (table["qualifier"] == "")
                 & (table["eps"] == 0.0)].drop_duplicates(["model", "explainer"])
    if rows.empty:
        return False
    labels = [f"{r.model} · {r.explainer}  (n = {int(r.n)})" for r in rows.itertuples()]
    low = (rows["value"] - rows["low"]).clip(lower=0).fillna(0)
    high = (rows["high"] - rows["value"]).clip(lower=0).fillna(0)
    colors = ["0.6" if e in CONTROLS else "C0" for e in rows["explainer"]]
    fig, ax = plt.subplots(figsize=(6.4, 0.5 * len(rows) + 1.4))
    ax.barh(range(len(rows)), rows["value"], xerr=[low, high], color=colors, capsize=3)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlim(min(-0.1, float(rows["low"].min()) - 0.05), 1.0)
    ax.set_xlabel("Spearman r, maps of trained vs randomised weights", fontsize=8)
    ax.set_title("Model-randomisation check, clean images (near 0: the maps depend on\n"
                 "what the model learnt); bars: 95% intervals", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)
    return True


def plot_sweep(points: list[tuple[Any, dict[str, Any], list[float]]], axis: str, metric: str,
               title: str, path: Path) -> bool:
    """``metric`` (a share, in %) against the values of one sweep axis: per point (value,
    the other axes' values, the runs' values), one line per combination of the other
    axes, the mean over runs with its 95% t interval as error bars (none for one run).
    A numeric axis is drawn to scale (log when its values span 20× or more), another
    one in the order written. False when no point has a value."""
    if not any(runs for _, _, runs in points):
        return False
    numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x, _, _ in points)
    order = list(dict.fromkeys(repr(x) for x, _, _ in points))
    fig, ax = plt.subplots(figsize=(6, 4))
    lines: dict[str, list[tuple[Any, list[float]]]] = {}
    for x, others, runs in points:
        name = ", ".join(f"{k} {v}" for k, v in others.items()) or metric
        lines.setdefault(name, []).append((x, runs))
    markers = "os^vDP<>"
    for j, (name, line) in enumerate(lines.items()):
        line = sorted(line, key=lambda p: p[0] if numeric else order.index(repr(p[0])))
        xs = [p[0] if numeric else order.index(repr(p[0])) for p in line]
        summaries = [stats.summarize(runs) for _, runs in line]
        mean = np.array([s.mean for s in summaries]) * 100
        half = np.array([s.ci95 for s in summaries]) * 100
        n = min(s.n for s in summaries)
        ax.errorbar(xs, mean, yerr=np.where(np.isnan(half), 0.0, half), marker=markers[j % 8],
                    ms=4, capsize=3, label=f"{name} (n = {n} run{'s' if n != 1 else ''})")
    if numeric:
        values = [float(x) for x, _, _ in points]
        if min(values) > 0 and max(values) / min(values) >= 20:
            ax.set_xscale("log")
    else:
        ax.set_xticks(range(len(order)), [r.strip("'") for r in order])
    ax.set_xlabel(axis)
    ax.set_ylabel(f"{metric} (%)")
    ax.set_ylim(-2, 102)  # an interval of few runs may reach past 0 or 100: the table has it
    ax.set_title(f"{title.replace('`', '')}\nmean over runs, bars: 95% t interval over runs",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)
    return True
