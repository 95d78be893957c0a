"""The interactive figures of report.html, one per figure of summary.md, drawn from
the same tables (the results table, and the ``epoch_statistics.csv`` and
``attention_estimates.csv`` the sections wrote). Every point's hover names its n and
interval; the legend toggles a series; a button switches the x axis to a log scale.

Each figure is a plotly.js specification (``{"data": [...], "layout": {...}}``) of
plain values, drawn in the browser by the bundle :mod:`.page` inlines. They are built
here rather than with the Python plotly package, whose checks of every property cost
several seconds a report; the browser tests check that each one draws.

:func:`figures` maps the file name of each PNG in summary.md to its figure; a PNG
without one (the explanation grids) is embedded as it is.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

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
GAP = 0.08  # between the panels of a figure, a share of its width or height


def figures(run: Run) -> dict[str, dict]:
    """File name of a figure of summary.md -> its interactive figure."""
    found: dict[str, dict] = {}
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


def _values(values) -> list:
    """Plain numbers for JSON, None (a gap) for NaN."""
    out = []
    for v in list(values):
        if isinstance(v, (list, tuple)):
            out.append(_values(v))
        elif v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(None)
        elif hasattr(v, "item"):
            v = v.item()
            out.append(None if isinstance(v, float) and math.isnan(v) else v)
        else:
            out.append(v)
    return out


def _line(x, y, name: str, color: str, hover: str, custom=None, **more) -> dict:
    trace = {"type": "scatter", "x": _values(x), "y": _values(y), "name": name,
             "legendgroup": name, "mode": "lines+markers", "line": {"color": color},
             "hovertemplate": hover}
    if custom is not None:
        trace["customdata"] = _values(custom)
    for key, value in more.items():
        trace[key] = value
    return trace


def _band(x, low, high, color: str, group: str) -> dict:
    """A filled band between ``low`` and ``high``, toggled with its line's legend entry."""
    x = list(x)
    return {"type": "scatter", "x": _values(x + x[::-1]),
            "y": _values(list(high) + list(low)[::-1]), "fill": "toself",
            "fillcolor": _rgba(color, 0.15), "line": {"width": 0}, "hoverinfo": "skip",
            "showlegend": False, "legendgroup": group, "mode": "lines"}


def _rgba(color: str, alpha: float) -> str:
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _axis(title: str, **more) -> dict:
    return {"title": {"text": title}, "gridcolor": "#e5e8eb", "zerolinecolor": "#c9ced4",
            "automargin": True, **more}


def _figure(data: list[dict], title: str, x: str, y: str, panels: list[str] | None = None,
            cols: int = 1, log_x: bool = True, height: int = 460) -> dict:
    """A figure of ``data``: one panel, or ``panels`` (their titles) ``cols`` to a row,
    each trace on the panel its ``xaxis`` names; with ``log_x`` linear/log buttons."""
    layout: dict = {"title": {"text": title, "font": {"size": 14}}, "hovermode": "closest",
                    "plot_bgcolor": "#ffffff", "paper_bgcolor": "#ffffff",
                    "legend": {"title": {"text": "click: hide / show"}},
                    "margin": {"t": 90, "l": 60, "r": 20, "b": 50}, "height": height}
    names = ["xaxis"]
    if not panels:
        layout["xaxis"], layout["yaxis"] = _axis(x), _axis(y)
    else:
        rows = math.ceil(len(panels) / cols)
        width, tall = (1 - GAP * (cols - 1)) / cols, (1 - GAP * 1.6 * (rows - 1)) / rows
        names, notes = [], []
        for k, label in enumerate(panels):
            row, col = divmod(k, cols)
            suffix = "" if k == 0 else str(k + 1)
            left, top = col * (width + GAP), 1 - row * (tall + GAP * 1.6)
            layout[f"xaxis{suffix}"] = _axis(x if isinstance(x, str) else x[k],
                                             domain=[left, left + width], anchor=f"y{suffix}")
            layout[f"yaxis{suffix}"] = _axis(y, domain=[top - tall, top], anchor=f"x{suffix}")
            names.append(f"xaxis{suffix}")
            notes.append({"text": label, "showarrow": False, "xref": "paper",
                          "yref": "paper", "x": left + width / 2, "y": top,
                          "xanchor": "center", "yanchor": "bottom", "font": {"size": 12}})
        layout["annotations"] = notes
    if log_x:
        layout["updatemenus"] = [{
            "type": "buttons", "direction": "right", "x": 1.0, "xanchor": "right", "y": 1.01,
            "yanchor": "bottom", "pad": {"b": 4}, "showactive": True, "font": {"size": 11},
            "buttons": [{"label": "x linear", "method": "relayout",
                         "args": [{f"{a}.type": "linear" for a in names}]},
                        {"label": "x log", "method": "relayout",
                         "args": [{f"{a}.type": "log" for a in names}]}]}]
    return {"data": data, "layout": layout}


def _panel(k: int) -> dict:
    """Which panel a trace of a figure with panels is drawn on."""
    return {"xaxis": f"x{k + 1 if k else ''}", "yaxis": f"y{k + 1 if k else ''}"}


def _epoch_curves(table: pd.DataFrame, metric: str, title: str) -> dict:
    data = []
    sub = table[table["metric"] == metric]
    for i, model in enumerate(ordered(sub["model"])):
        t = sub[sub["model"] == model].sort_values("epoch")
        mean, std, ci = t["mean"] * 100, t["std"].fillna(0) * 100, t["ci95"] * 100
        data.append(_band(t["epoch"], mean - std, mean + std, _color(i), model))
        data.append(_line(
            t["epoch"], mean, model, _color(i), custom=zip(std, ci, t["n"]),
            hover=(f"{model}<br>epoch %{{x}}: %{{y:.2f}}%<br>± %{{customdata[0]:.2f}} "
                   "(1 std), 95% CI ± %{customdata[1]:.2f}<br>n = %{customdata[2]} "
                   "runs<extra></extra>")))
    fig = _figure(data, f"{title}: mean ± 1 std over runs", "epoch", f"{title.lower()} (%)")
    fig["layout"]["xaxis"]["dtick"] = 1
    return fig


def _step_curves(curves: pd.DataFrame, thresholds: tuple[float, ...]) -> dict:
    data = []
    for i, model in enumerate(ordered(curves["model"])):
        g = curves[curves["model"] == model].groupby("step")["value"]
        mean, std, n = g.mean() * 100, g.std().fillna(0) * 100, g.count()
        data.append(_band(mean.index, mean - std, mean + std, _color(i), model))
        data.append(_line(
            mean.index, mean, model, _color(i), custom=zip(std, n), mode="lines",
            hover=(f"{model}<br>step %{{x}}: %{{y:.2f}}% ± %{{customdata[0]:.2f}} "
                   "(1 std)<br>n = %{customdata[1]} runs<extra></extra>")))
    fig = _figure(data, "Test accuracy during training: mean ± 1 std over runs "
                        "(drag to zoom, double-click to reset)", "optimisation step",
                  "test accuracy (%)")
    fig["layout"]["shapes"] = [
        {"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": t * 100, "y1": t * 100,
         "line": {"color": "grey", "dash": "dot", "width": 1}} for t in thresholds]
    if (curves["step"] > 0).any():  # the first epoch legible at once: a log step axis
        fig["layout"]["xaxis"]["type"] = "log"
        fig["layout"]["updatemenus"][0]["active"] = 1
    return fig


def _run_curves(curves: pd.DataFrame) -> dict:
    """One line per run (a collapse is one run's event), one colour per model."""
    data = []
    for i, model in enumerate(ordered(curves["model"])):
        for k, (run, g) in enumerate(curves[curves["model"] == model].groupby("run")):
            g = g.sort_values("step")
            data.append(_line(
                g["step"], g["value"] * 100, model, _color(i), mode="lines",
                showlegend=k == 0,
                hover=(f"{model}, run {int(run)}<br>step %{{x}}: %{{y:.1f}}%<br>n = 1 "
                       "run<extra></extra>")))
    return _figure(data, "Accuracy under PGD during training (one line per run)",
                   "optimisation step", "accuracy under PGD (%)")


def _robustness(rows: pd.DataFrame) -> dict:
    attacks, models = ordered(rows["attack"]), ordered(rows["model"])
    threat_of = threats(rows)
    acc = rows[rows["metric"] == "accuracy"]
    data = []
    for k, attack in enumerate(attacks):
        minimum = threat_of[attack][1]
        for j, model in enumerate(models):
            sub = acc[(acc["model"] == model) & (acc["attack"] == attack)]
            eps = sorted(set(sub["eps"].dropna()))
            if not eps:
                continue
            s = [stats.summarize(sub[sub["eps"] == e]["value"].tolist()) for e in eps]
            half = [0.0 if math.isnan(x.ci95) else x.ci95 * 100 for x in s]
            data.append(_line(
                eps, [x.mean * 100 for x in s], model, _color(j),
                custom=[[h, x.n] for h, x in zip(half, s)], showlegend=k == 0,
                line={"color": _color(j), "dash": "dash" if minimum else "solid"},
                error_y={"type": "data", "array": half, "visible": True, "thickness": 1},
                hover=(f"{model} · {attack}<br>ε %{{x:g}}: %{{y:.2f}}%<br>95% t interval ± "
                       "%{customdata[0]:.2f} (none for one run)<br>n = %{customdata[1]} "
                       "runs<extra></extra>"), **_panel(k)))
    cols = min(3, len(attacks))
    return _figure(data, "Accuracy under attack: mean over runs, bars: 95% t interval",
                   [f"ε ({NORM_LABELS[threat_of[a][0]]})" for a in attacks],
                   "test accuracy (%)", cols=cols,
                   panels=[a + (" (minimum norm)" if threat_of[a][1] else "") for a in attacks],
                   height=max(460, 330 * math.ceil(len(attacks) / cols)))


def _attention(table: pd.DataFrame, panels, title: str) -> dict:
    groups = list(dict.fromkeys(zip(table["model"], table["attack"], table["explainer"])))
    data = []
    for k, (metric, _) in enumerate(panels):
        base, _, qualifier = metric.partition("|")
        for j, (model, attack, explainer) in enumerate(groups):
            sub = table[(table["model"] == model) & (table["attack"] == attack)
                        & (table["explainer"] == explainer) & (table["base"] == base)
                        & (table["qualifier"] == qualifier)].sort_values("eps")
            if sub.empty:
                continue
            name, control = f"{model} · {attack} · {explainer}", explainer in CONTROLS
            data.append(_line(
                sub["eps"], sub["value"], name, _color(j), showlegend=k == 0,
                custom=zip(sub["low"], sub["high"], sub["n"]), opacity=0.6 if control else 1.0,
                line={"color": _color(j), "dash": "dash" if control else "solid"},
                error_y={"type": "data", "symmetric": False, "thickness": 1,
                         "array": _values((sub["high"] - sub["value"]).clip(lower=0)),
                         "arrayminus": _values((sub["value"] - sub["low"]).clip(lower=0))},
                hover=(f"{name}<br>ε %{{x:g}}: %{{y:.3f}}<br>95% interval "
                       "[%{customdata[0]:.3f}, %{customdata[1]:.3f}]<br>n = "
                       "%{customdata[2]} images<extra></extra>"), **_panel(k)))
    fig = _figure(data, f"{title}; bars: 95% confidence intervals", "ε", "",
                  panels=[label for _, label in panels], cols=3,
                  height=340 * math.ceil(len(panels) / 3) + 160)
    fig["layout"]["legend"].update({"orientation": "h", "y": -0.12})
    return fig


def _sanity(table: pd.DataFrame) -> dict | None:
    rows = table[(table["base"] == "sanity_rank_correlation") & (table["qualifier"] == "")
                 & (table["eps"] == 0.0)].drop_duplicates(["model", "explainer"])
    if rows.empty:
        return None
    bar = {"type": "bar", "orientation": "h", "name": "Spearman r",
           "x": _values(rows["value"]), "y": [f"{r.model} · {r.explainer}"
                                              for r in rows.itertuples()],
           "marker": {"color": ["#999999" if e in CONTROLS else COLORS[0]
                                for e in rows["explainer"]]},
           "error_x": {"type": "data", "symmetric": False,
                       "array": _values((rows["high"] - rows["value"]).clip(lower=0)),
                       "arrayminus": _values((rows["value"] - rows["low"]).clip(lower=0))},
           "customdata": _values(zip(rows["low"], rows["high"], rows["n"])),
           "hovertemplate": ("%{y}<br>r = %{x:.3f}, 95% interval [%{customdata[0]:.3f}, "
                             "%{customdata[1]:.3f}]<br>n = %{customdata[2]} "
                             "images<extra></extra>")}
    fig = _figure([bar], "Model-randomisation check, clean images; bars: 95% intervals",
                  "Spearman r, maps of trained vs randomised weights", "", log_x=False)
    fig["layout"]["yaxis"]["autorange"] = "reversed"
    return fig
