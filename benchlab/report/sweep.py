"""The "Sweeps" section: each swept entry's configurations side by side, by axis.

A sweep (:mod:`benchlab.suite.sweep`) writes, for every configuration it made, the
entry it came from (``sweep_of``) and the value each axis took (``swept``) into the
run's ``suite.yaml``. Per swept entry this section gives one table (a row per
configuration: its values, the runs, the headline metric with its 95% t interval
over the runs, the training seeds) and one plot per axis: the headline metric
against the axis's values, one line per combination of the other axes' values.

The headline metric of a model configuration is its final test accuracy (the last
epoch each run trained) and, with attacks, its accuracy under each attack at the
attack's largest ε; of an attack configuration, the accuracy under it at each ε,
per model.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from benchlab import stats
from benchlab.report.markdown import DASH, table
from benchlab.report.plots import plot_sweep

__all__ = ["section", "sweeps_of"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def sweeps_of(suite: dict, section: str) -> dict[str, dict[str, dict[str, Any]]]:
    """Swept entry -> {configuration's label: {axis: value}}, in the suite's order."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for entry in suite.get(section) or []:
        if isinstance(entry, dict) and isinstance(entry.get("swept"), dict):
            key = entry.get("label") or entry.get("name")
            found.setdefault(str(entry.get("sweep_of") or key), {})[str(key)] = entry["swept"]
    return found


def interval(values: list[float]) -> str:
    """A mean in % with its 95% t interval over runs, said in words for one run."""
    s = stats.summarize(values)
    if s.n == 0:
        return DASH
    if s.n == 1:
        return f"{s.mean * 100:.2f} (one run: no interval)"
    return f"{s.mean * 100:.2f} [{(s.mean - s.ci95) * 100:.2f}, {(s.mean + s.ci95) * 100:.2f}]"


def _final_accuracies(results: pd.DataFrame, model: str) -> list[float]:
    rows = results[(results["model"] == model) & (results["metric"] == "test_acc")
                   & results["epoch"].notna()]
    if "step" in rows.columns:
        rows = rows[rows["step"].isna()]
    last = rows.sort_values("epoch").groupby("run").tail(1)
    return last["value"].tolist()


def _attacked(results: pd.DataFrame, model: str, attack: str, eps: float) -> list[float]:
    rows = results[(results["model"] == model) & (results["attack"] == attack)
                   & (results["metric"] == "accuracy")]
    return rows[(rows["eps"] - eps).abs() < 1e-9]["value"].tolist()


def _largest_eps(results: pd.DataFrame) -> dict[str, float]:
    acc = results[results["metric"] == "accuracy"].dropna(subset=["attack", "eps"])
    return {str(a): float(g["eps"].max()) for a, g in acc.groupby("attack", sort=False)}


def section(results: pd.DataFrame, out: Path, suite: dict) -> list[str]:
    """The section's lines (none for a run without sweeps); writes its plots."""
    models, attacks = sweeps_of(suite, "models"), sweeps_of(suite, "attacks")
    if not models and not attacks or results.empty:
        return []
    md = ["## Sweeps", "",
          "Each swept entry's configurations, by axis. Intervals are 95% t intervals over "
          "the training runs (seeds) of each configuration.", ""]
    largest = _largest_eps(results)
    for base, configs in models.items():
        frame = []
        for label, values in configs.items():
            finals = _final_accuracies(results, label)
            row = {**values, "runs": len(finals), "final test acc. (%) [95% CI]":
                   interval(finals)}
            points = {"final test accuracy": finals}
            for attack, eps in largest.items():
                attacked = _attacked(results, label, attack, eps)
                row[f"{attack} ε = {eps:g} acc. (%) [95% CI]"] = interval(attacked)
                points[f"accuracy under {attack} at ε = {eps:g}"] = attacked
            frame.append((row, points))
        md += _entry_lines(out, f"model `{base}`", base, configs, frame)
    for base, configs in attacks.items():
        model_keys = sorted(set(results.loc[results["attack"].isin(list(configs)), "model"]
                                .dropna()))
        for model in model_keys:
            frame = []
            for label, values in configs.items():
                eps_all = sorted(set(results.loc[(results["attack"] == label)
                                                 & (results["metric"] == "accuracy"),
                                                 "eps"].dropna()))
                row: dict[str, Any] = dict(values)
                points = {}
                for eps in eps_all:
                    attacked = _attacked(results, model, label, eps)
                    row[f"acc. at ε = {eps:g} (%) [95% CI]"] = interval(attacked)
                    points[f"accuracy at ε = {eps:g}"] = attacked
                frame.append((row, points))
            md += _entry_lines(out, f"attack `{base}` on `{model}`", f"{base}-{model}",
                               configs, frame)
    return md


def _entry_lines(out: Path, title: str, name: str, configs: dict[str, dict[str, Any]],
                 frame: list[tuple[dict[str, Any], dict[str, list[float]]]]) -> list[str]:
    axes = list(dict.fromkeys(k for values in configs.values() for k in values))
    md = [f"### {title}: {len(configs)} configurations over {', '.join(axes)}", "",
          table(pd.DataFrame([row for row, _ in frame])), ""]
    if not frame or not frame[0][1]:
        return md
    headline = next(iter(frame[0][1]))
    for axis in axes:
        values = [values.get(axis) for values in configs.values()]
        others = [a for a in axes if a != axis]
        path = out / f"sweep_{_UNSAFE.sub('_', name)}_{_UNSAFE.sub('_', axis)}.png"
        drawn = plot_sweep([(values[i], {a: list(configs.values())[i].get(a) for a in others},
                             points[headline]) for i, (_, points) in enumerate(frame)],
                           axis, headline, f"{title}: {headline} against {axis}", path)
        if drawn:
            md += [f"![{headline} against {axis}]({path.name})", ""]
    return md
