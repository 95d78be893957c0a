"""The looks of a sequential run: the claim tested with the runs so far.

A suite whose ``train.runs`` is a range (``{min, max, step}``) is run in looks. After
the runs of a look have finished, :func:`look` tests every part of the claim (each
model against the first) with the group-sequential design of
:mod:`benchlab.sequential`, on the run's ``results.csv``, and says how many runs per
model the next look needs, or that the run stops: every part decided, or ``max``
reached. The runner keeps the looks in ``looks.json`` in the run directory; the
report reads them from there. A part decided at a look stays decided; a look is a
function of the results of its runs and the looks before it, so a resumed run
recomputes it identically.

Parts: *convergence* (the learning-curve statistics of :mod:`benchlab.verdict`,
Holm's step-down under the spending), when the run has learning curves (decided
*untestable* when the curves are too short for every statistic, which more runs
would not change), and *final
accuracy* (TOST against ``report.equivalence_margin`` and the two-sided Welch test),
when the suite sets a margin, each for the pairs the report compares (each model
against the first trained the same way); and *robustness* (each attack and ε > 0 of
a pair, :mod:`benchlab.robust_verdict`'s cells: Holm's step-down under the spending
for a difference, every cell's TOST for equivalence), when the suite attacks both
models of a pair.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchlab import robust_verdict, stats, verdict
from benchlab.files import atomic_write_text
from benchlab.sequential import Design, boundaries
from benchlab.suite.schema import RunsRange, Suite

__all__ = ["LOOKS_FILE", "design_of", "look", "pairs_of", "read_looks", "settings_of",
           "write_looks"]

LOOKS_FILE = "looks.json"
UNDECIDED = ("undecided", "inconclusive")


def design_of(suite: Suite) -> Design | None:
    """The sequential design of ``suite`` (None: a fixed number of runs)."""
    runs = suite.train.runs
    if not isinstance(runs, RunsRange):
        return None
    return Design(runs.min, runs.max, runs.step, suite.report.alpha, runs.spending)


def settings_of(suite: Suite) -> verdict.Settings:
    r = suite.report
    return verdict.Settings(alpha=r.alpha, step_thresholds=tuple(r.step_thresholds),
                            auc_epochs=r.auc_epochs, margin_pp=r.equivalence_margin)


def read_looks(root: Path) -> list[dict[str, Any]]:
    path = Path(root) / LOOKS_FILE
    return json.loads(path.read_text())["looks"] if path.exists() else []


def write_looks(root: Path, design: Design, looks: list[dict[str, Any]]) -> None:
    head = {"min": design.min_runs, "max": design.max_runs, "step": design.step,
            "alpha": design.alpha, "spending": design.spending,
            "schedule": list(design.schedule())}
    atomic_write_text(Path(root) / LOOKS_FILE,
                      json.dumps({"design": head, "looks": looks}, indent=2) + "\n")


Pair = tuple[str, str]


def pairs_of(suite: Suite) -> tuple[list[Pair], list[Pair]]:
    """The (model, against) pairs a look tests, as the report compares them: for
    training, each model against the first model trained the same way; for robustness,
    ``report.robustness_pairs`` or those same pairs."""
    groups: dict[str, list[str]] = {}
    for model in suite.models:
        procedure = model.procedure or suite.train.procedure
        how = "standard" if procedure is None else \
            json.dumps(procedure.model_dump(mode="json"), sort_keys=True, default=str)
        groups.setdefault(how, []).append(model.key)
    same = [(other, members[0]) for members in groups.values() for other in members[1:]]
    named = suite.report.robustness_pairs
    return same, ([(a, b) for a, b in named] if named else same)


def look(design: Design, results: pd.DataFrame, settings: verdict.Settings, planned: int,
         before: list[dict[str, Any]], pairs: list[Pair] | None = None,
         robust_pairs: list[Pair] | None = None) -> dict[str, Any]:
    """The look at ``planned`` runs per model, after the looks ``before`` it.

    ``pairs``: the (model, against) pairs of the training parts (default: every model
    against the first); ``robust_pairs``: those of the robustness parts (default:
    ``pairs``), tested where both models were attacked."""
    k = design.schedule().index(planned)
    previous = {p["part"]: p for p in before[-1]["parts"]} if before else {}
    epochs = results[results["epoch"].notna() & results["step"].isna()]
    test_acc = epochs[epochs["metric"] == "test_acc"]
    models = list(dict.fromkeys(epochs["model"].tolist()))
    if pairs is None:
        pairs = [(other, models[0]) for other in models[1:]]
    curves = verdict.curve_rows(results)
    per_run = verdict.run_statistics(curves, settings) if not curves.empty else None
    parts: list[dict[str, Any]] = []
    for other, baseline in pairs:
        if other not in models or baseline not in models:
            continue
        if per_run is not None:
            name = f"convergence: {other} against {baseline}"
            parts.append(previous.get(name) if _decided(previous.get(name)) else
                         _convergence(design, k, planned, name, per_run, baseline, other,
                                      settings, previous.get(name)))
        if settings.margin_pp is not None:
            name = f"final accuracy: {other} against {baseline}"
            parts.append(previous.get(name) if _decided(previous.get(name)) else
                         _final(design, k, planned, name, test_acc, baseline, other, settings))
    if {"attack", "eps", "explainer"} <= set(results.columns):
        attacked = results[results["attack"].notna() & results["explainer"].isna()
                           & results["epoch"].isna() & (results["metric"] == "accuracy")]
    else:  # a run with no attack rows at all
        attacked = results.iloc[0:0].assign(attack=None)
    attacks = list(dict.fromkeys(attacked["attack"].tolist()))
    for other, baseline in (robust_pairs if robust_pairs is not None else pairs):
        name = f"robustness: {other} against {baseline}"
        if _decided(previous.get(name)):
            parts.append(previous[name])
            continue
        part = _robustness(design, k, planned, name, attacked, baseline, other, attacks,
                           settings, previous.get(name))
        if part is not None:
            parts.append(part)
    n = {m: int(epochs[epochs["model"] == m]["run"].nunique()) for m in models}
    if parts and all(_decided(p) for p in parts):
        following, why = None, "every part of the claim is decided"
    elif design.is_last(k):
        following, why = None, f"the most runs the design allows ({design.max_runs}) are reached"
    else:
        following = design.schedule()[k + 1]
        why = "nothing to test (no learning curves, no equivalence margin)" if not parts \
            else "undecided: " + ", ".join(p["part"] for p in parts if not _decided(p))
    return {"look": k + 1, "planned": planned, "runs": n, "parts": parts,
            "next": following, "why": why}


def _decided(part: dict[str, Any] | None) -> bool:
    return part is not None and part["decision"] not in UNDECIDED


def _z(design: Design, k: int, sides: int, alpha: float) -> float:
    return float(boundaries(design.fractions(k + 1), alpha, design.spending, sides)[k])


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _convergence(design: Design, k: int, planned: int, name: str, per_run: pd.DataFrame,
                 baseline: str, other: str, settings: verdict.Settings,
                 before: dict[str, Any] | None) -> dict[str, Any]:
    comparisons = verdict.convergence(per_run, baseline, other, settings)
    rejected = np.array(before["rejected"] if before else [False] * len(comparisons))
    p = np.array([c.p for c in comparisons], dtype=float)
    now = design.holm(p, rejected, k)
    r = int((~np.isnan(p) & ~now).sum()) or 1
    level = float(design.levels(k + 1, 2, design.alpha / r)[k])
    ahead = [c.diff < 0 if c.faster_when == "lower" else c.diff > 0
             for c, hit in zip(comparisons, now) if hit]
    if not ahead and all(_undefined(c) for c in comparisons):
        decision = "untestable"  # more runs do not lengthen a learning curve
    elif not ahead:
        decision = "inconclusive" if design.is_last(k) else "undecided"
    else:
        decision = "faster" if all(ahead) else "slower" if not any(ahead) else "mixed"
    return {"part": name, "kind": "convergence", "decision": decision,
            "decided_at": planned if decision not in UNDECIDED else None,
            "rejected": [bool(x) for x in now],
            "statistics": [{"statistic": c.statistic, "diff": _num(c.diff), "t": _num(c.t),
                            "p": _num(c.p), "n": [int(c.other.size), int(c.baseline.size)]}
                           for c in comparisons],
            "level": level, "z": _z(design, k, 2, design.alpha / r)}


def _undefined(c: verdict.Comparison) -> bool:
    """Is the statistic undefined for so many runs (curves too short for it) that fewer
    than two values per model remain?"""
    return (c.other.size < 2 and c.undefined[0] > 0) or \
        (c.baseline.size < 2 and c.undefined[1] > 0)


def _final(design: Design, k: int, planned: int, name: str, test_acc: pd.DataFrame,
           baseline: str, other: str, settings: verdict.Settings) -> dict[str, Any]:
    e = verdict.equivalence(test_acc, baseline, other, settings)
    assert e is not None  # a margin is set
    t = e.tost
    decision = str(design.final_accuracy(e.welch_p, t.p_lower, t.p_upper, k))
    return {"part": name, "kind": "final accuracy", "decision": decision,
            "decided_at": planned if decision not in UNDECIDED else None,
            "epoch": e.epoch, "diff": _num(t.diff), "margin": e.margin,
            "n": [int(e.other.size), int(e.baseline.size)],
            "welch_p": _num(e.welch_p), "tost_p_lower": _num(t.p_lower),
            "tost_p_upper": _num(t.p_upper),
            "level_two_sided": float(design.levels(k + 1, 2)[k]),
            "z_two_sided": _z(design, k, 2, design.alpha),
            "level_one_sided": float(design.levels(k + 1, 1)[k]),
            "z_one_sided": _z(design, k, 1, design.alpha)}


def _robustness(design: Design, k: int, planned: int, name: str, rows: pd.DataFrame,
                baseline: str, other: str, attacks: list[str], settings: verdict.Settings,
                before: dict[str, Any] | None) -> dict[str, Any] | None:
    """A pair's robustness part: its (attack, ε > 0) cells as one family. *Less robust*,
    *more robust* or *mixed* when Holm's step-down under the spending rejects a cell
    (a cell once rejected stays rejected); *equivalent* when, with a margin, every
    cell's TOST rejects at the one-sided boundary (an intersection-union test: no
    multiplicity adjustment is needed for "all cells equivalent"). None: no cell."""
    found = robust_verdict.compare(rows, baseline, other, attacks, settings)
    if not found:
        return None
    p = np.array([c.p for c in found], dtype=float)
    rejected = np.array(before["rejected"] if before and len(before["rejected"]) == len(found)
                        else [False] * len(found))
    now = design.holm(p, rejected, k)
    sides = [c.diff > 0 for c, hit in zip(found, now) if hit]
    tost = [stats.tost(c.a, c.b, settings.margin_pp / 100, settings.alpha)
            if settings.margin_pp is not None and c.a.size > 1 and c.b.size > 1 else None
            for c in found]
    equivalent = all(t is not None and bool(design.equivalence(t.p_lower, t.p_upper, k))
                     for t in tost)
    if sides:
        decision = "more robust" if all(sides) else "less robust" if not any(sides) \
            else "mixed"
    elif equivalent:
        decision = "equivalent"
    else:
        decision = "inconclusive" if design.is_last(k) else "undecided"
    r = int((~np.isnan(p) & ~now).sum()) or 1
    return {"part": name, "kind": "robustness", "decision": decision,
            "decided_at": planned if decision not in UNDECIDED else None,
            "rejected": [bool(x) for x in now],
            "cells": [{"attack": c.attack, "eps": c.eps, "diff": _num(c.diff), "p": _num(c.p),
                       "tost_p": _num(t.p) if t is not None else None,
                       "n": [int(c.a.size), int(c.b.size)]} for c, t in zip(found, tost)],
            "level": float(design.levels(k + 1, 2, design.alpha / r)[k]),
            "z": _z(design, k, 2, design.alpha / r),
            "level_one_sided": float(design.levels(k + 1, 1)[k])}
