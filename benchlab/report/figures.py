"""The interactive figures of report.html, one Plotly figure per figure of summary.md,
drawn from the same tables (the results table, and the ``epoch_statistics.csv`` and
``attention_estimates.csv`` the sections wrote). Every point's hover names its n and
interval; the legend toggles a series; a button switches the x axis to a log scale.

:func:`figures` maps the file name of each PNG in summary.md to its figure; a PNG
without one (the explanation grids) is embedded as it is.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from benchlab import stats, verdict
from benchlab.messages import NORM_LABELS
from benchlab.report.attention import OUTCOME_PANELS, PANELS
from benchlab.report.loading import Run, ordered
from benchlab.report.overfitting import METRIC as PGD_CURVE
from benchlab.report.plots import CONTROLS
from benchlab.report.robustness import threats

__all__ = ["figures"]

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf")


def figures(run: Run) -> dict[str, go.Figure]:
    """File name of a figure of summary.md -> its interactive figure."""
    found: dict[str, go.Figure] = {}
    out, results = run.out, run.results
    epochs = _csv(out / "epoch_statistics.csv")
    if epochs is not None and not epochs.empty:
        for metric, name, title in (("test_acc", "test_accuracy.png", "Test accuracy"),
                                    ("train_acc", "train_accuracy.png", "Training accuracy")):
            found[name] = _epoch_curves(epochs, metric, title)
    curves = verdict.curve_rows(results)
    if not curves.empty:
        found["test_accuracy_steps.png"] = _step_curves(curves, run.settings.step_thresholds)
    pgd = results[(results["metric"] == PGD_CURVE) & results["step"].notna()]
    if not pgd.empty:
        found["robust_accuracy_steps.png"] = _run_curves(pgd)
    rows = results[results["attack"].notna() & results["explainer"].isna()
                   & results["epoch"].isna()]
    if not rows.empty:
        found["robustness.png"] = _robustness(rows)
    estimates = _csv(out / "attention_estimates.csv")
    if estimates is not None and not estimates.empty:
        estimates["qualifier"] = estimates["qualifier"].fillna("")
        found["attention.png"] = _attention(estimates, PANELS, "Attention under attack")
        found["attention_outcome.png"] = _attention(estimates, OUTCOME_PANELS,
                                                    "Attention shift by outcome")
        sanity = _sanity(estimates)
        if sanity is not None:
            found["attention_sanity.png"] = sanity
    return found


def _csv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.exists() else None


def _color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def _band(x, low, high, color: str, group: str) -> go.Scatter:
    """A filled band between ``low`` and ``high``, toggled with its line's legend entry."""
    return go.Scatter(x=list(x) + list(x)[::-1], y=list(high) + list(low)[::-1], fill="toself",
                      fillcolor=_rgba(color, 0.15), line={"width": 0}, hoverinfo="skip",
                      showlegend=False, legendgroup=group, mode="lines")


def _rgba(color: str, alpha: float) -> str:
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _layout(fig: go.Figure, title: str, x: str, y: str, log_x: bool = True) -> go.Figure:
    """Title, axes, legend; with ``log_x`` a linear/log switch for every x axis."""
    fig.update_layout(title={"text": title, "font": {"size": 14}}, template="plotly_white",
                      hovermode="closest", legend={"title": {"text": "click: hide / show"}},
                      margin={"t": 90, "l": 60, "r": 20, "b": 50}, height=460)
    fig.update_xaxes(title_text=x)
    fig.update_yaxes(title_text=y)
    if log_x:
        axes = [k for k in fig.layout.to_plotly_json() if k.startswith("xaxis")] or ["xaxis"]
        fig.update_layout(updatemenus=[{
            "type": "buttons", "direction": "right", "x": 1.0, "xanchor": "right", "y": 1.01,
            "yanchor": "bottom", "pad": {"b": 4}, "showactive": True, "font": {"size": 11},
            "buttons": [{"label": "x linear", "method": "relayout",
                         "args": [{f"{a}.type": "linear" for a in axes}]},
                        {"label": "x log", "method": "relayout",
                         "args": [{f"{a}.type": "log" for a in axes}]}]}])
    return fig


def _epoch_curves(table: pd.DataFrame, metric: str, title: str) -> go.Figure:
    fig = go.Figure()
    sub = table[table["metric"] == metric]
    for i, model in enumerate(ordered(sub["model"])):
        t = sub[sub["model"] == model].sort_values("epoch")
        mean, std, ci = t["mean"] * 100, t["std"].fillna(0) * 100, t["ci95"] * 100
        color = _color(i)
        fig.add_trace(_band(t["epoch"], mean - std, mean + std, color, model))
        fig.add_trace(go.Scatter(
            x=t["epoch"], y=mean, name=model, legendgroup=model, mode="lines+markers",
            line={"color": color}, customdata=list(zip(std, ci, t["n"])),
            hovertemplate=(f"{model}<br>epoch %{{x}}: %{{y:.2f}}%<br>± %{{customdata[0]:.2f}} "
                           "(1 std), 95% CI ± %{customdata[1]:.2f}<br>n = %{customdata[2]} "
                           "runs<extra></extra>")))
    fig = _layout(fig, f"{title}: mean ± 1 std over runs", "epoch", f"{title.lower()} (%)")
    return fig.update_xaxes(dtick=1)


def _step_curves(curves: pd.DataFrame, thresholds: tuple[float, ...]) -> go.Figure:
    fig = go.Figure()
    for i, model in enumerate(ordered(curves["model"])):
        g = curves[curves["model"] == model].groupby("step")["value"]
        mean, std, n = g.mean() * 100, g.std().fillna(0) * 100, g.count()
        color = _color(i)
        fig.add_trace(_band(mean.index, mean - std, mean + std, color, model))
        fig.add_trace(go.Scatter(
            x=mean.index, y=mean, name=model, legendgroup=model, mode="lines",
            line={"color": color, "width": 1.5}, customdata=list(zip(std, n)),
            hovertemplate=(f"{model}<br>step %{{x}}: %{{y:.2f}}% ± %{{customdata[0]:.2f}} "
                           "(1 std)<br>n = %{customdata[1]} runs<extra></extra>")))
    for threshold in thresholds:
        fig.add_hline(y=threshold * 100, line={"color": "grey", "dash": "dot", "width": 1})
    fig = _layout(fig, "Test accuracy during training: mean ± 1 std over runs "
                       "(drag to zoom, double-click to reset)", "optimisation step",
                  "test accuracy (%)")
    first = curves.loc[curves["step"] > 0, "step"]
    if not first.empty:  # the first epoch legible at once: a log step axis
        fig.update_xaxes(type="log")
        fig.layout.updatemenus[0].active = 1
    return fig


def _run_curves(curves: pd.DataFrame) -> go.Figure:
    """One line per run (a collapse is one run's event), one colour per model."""
    fig = go.Figure()
    for i, model in enumerate(ordered(curves["model"])):
        for k, (run, g) in enumerate(curves[curves["model"] == model].groupby("run")):
            g = g.sort_values("step")
            fig.add_trace(go.Scatter(
                x=g["step"], y=g["value"] * 100, name=model, legendgroup=model,
                showlegend=k == 0, mode="lines", line={"color": _color(i), "width": 1},
                hovertemplate=f"{model}, run {int(run)}<br>step %{{x}}: %{{y:.1f}}%<br>n = 1 "
                              "run<extra></extra>"))
    return _layout(fig, "Accuracy under PGD during training (one line per run)",
                   "optimisation step", "accuracy under PGD (%)")


def _robustness(rows: pd.DataFrame) -> go.Figure:
    attacks, models = ordered(rows["attack"]), ordered(rows["model"])
    threat_of = threats(rows)
    cols = min(3, len(attacks))
    fig = make_subplots(rows=math.ceil(len(attacks) / cols), cols=cols,
                        subplot_titles=[a + (" (minimum norm)" if threat_of[a][1] else "")
                                        for a in attacks])
    acc = rows[rows["metric"] == "accuracy"]
    for k, attack in enumerate(attacks):
        norm, minimum = threat_of[attack]
        for j, model in enumerate(models):
            sub = acc[(acc["model"] == model) & (acc["attack"] == attack)]
            eps = sorted(set(sub["eps"].dropna()))
            if not eps:
                continue
            s = [stats.summarize(sub[sub["eps"] == e]["value"].tolist()) for e in eps]
            half = [0.0 if math.isnan(x.ci95) else x.ci95 * 100 for x in s]
            fig.add_trace(go.Scatter(
                x=eps, y=[x.mean * 100 for x in s], name=model, legendgroup=model,
                showlegend=k == 0, mode="lines+markers",
                line={"color": _color(j), "dash": "dash" if minimum else "solid"},
                error_y={"type": "data", "array": half, "visible": True, "thickness": 1},
                customdata=[[h, x.n] for h, x in zip(half, s)],
                hovertemplate=(f"{model} · {attack}<br>ε %{{x:g}}: %{{y:.2f}}%<br>95% t "
                               "interval ± %{customdata[0]:.2f} (none for one run)<br>n = "
                               "%{customdata[1]} runs<extra></extra>")),
                row=k // cols + 1, col=k % cols + 1)
        fig.update_xaxes(title_text=f"ε ({NORM_LABELS[norm]})", row=k // cols + 1,
                         col=k % cols + 1)
    fig = _layout(fig, "Accuracy under attack: mean over runs, bars: 95% t interval",
                  "", "test accuracy (%)")
    fig.update_layout(height=max(460, 330 * math.ceil(len(attacks) / cols)))
    return fig


def _attention(table: pd.DataFrame, panels, title: str) -> go.Figure:
    groups = list(dict.fromkeys(zip(table["model"], table["attack"], table["explainer"])))
    cols = 3
    fig = make_subplots(rows=math.ceil(len(panels) / cols), cols=cols,
                        subplot_titles=[label for _, label in panels])
    for k, (metric, _) in enumerate(panels):
        base, _, qualifier = metric.partition("|")
        for j, (model, attack, explainer) in enumerate(groups):
            sub = table[(table["model"] == model) & (table["attack"] == attack)
                        & (table["explainer"] == explainer) & (table["base"] == base)
                        & (table["qualifier"] == qualifier)].sort_values("eps")
            if sub.empty:
                continue
            name = f"{model} · {attack} · {explainer}"
            fig.add_trace(go.Scatter(
                x=sub["eps"], y=sub["value"], name=name, legendgroup=name, showlegend=k == 0,
                mode="lines+markers", opacity=0.6 if explainer in CONTROLS else 1.0,
                line={"color": _color(j), "dash": "dash" if explainer in CONTROLS else "solid"},
                error_y={"type": "data", "symmetric": False, "thickness": 1,
                         "array": (sub["high"] - sub["value"]).clip(lower=0),
                         "arrayminus": (sub["value"] - sub["low"]).clip(lower=0)},
                customdata=list(zip(sub["low"], sub["high"], sub["n"])),
                hovertemplate=(f"{name}<br>ε %{{x:g}}: %{{y:.3f}}<br>95% interval "
                               "[%{customdata[0]:.3f}, %{customdata[1]:.3f}]<br>n = "
                               "%{customdata[2]} images<extra></extra>")),
                row=k // cols + 1, col=k % cols + 1)
    fig = _layout(fig, f"{title}; bars: 95% confidence intervals", "ε", "")
    fig.update_layout(height=340 * math.ceil(len(panels) / cols) + 120,
                      legend={"orientation": "h", "y": -0.12})
    return fig


def _sanity(table: pd.DataFrame) -> go.Figure | None:
    rows = table[(table["base"] == "sanity_rank_correlation") & (table["qualifier"] == "")
                 & (table["eps"] == 0.0)].drop_duplicates(["model", "explainer"])
    if rows.empty:
        return None
    labels = [f"{r.model} · {r.explainer}" for r in rows.itertuples()]
    fig = go.Figure(go.Bar(
        x=rows["value"], y=labels, orientation="h", name="Spearman r",
        marker={"color": ["#999999" if e in CONTROLS else COLORS[0] for e in rows["explainer"]]},
        error_x={"type": "data", "symmetric": False,
                 "array": (rows["high"] - rows["value"]).clip(lower=0),
                 "arrayminus": (rows["value"] - rows["low"]).clip(lower=0)},
        customdata=list(zip(rows["low"], rows["high"], rows["n"])),
        hovertemplate=("%{y}<br>r = %{x:.3f}, 95% interval [%{customdata[0]:.3f}, "
                       "%{customdata[1]:.3f}]<br>n = %{customdata[2]} images<extra></extra>")))
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, "Model-randomisation check, clean images; bars: 95% intervals",
                   "Spearman r, maps of trained vs randomised weights", "", log_x=False)
