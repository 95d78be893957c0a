"""The verdict's lines of a sequential run (``train.runs`` a range): the looks made,
when each part of the claim was decided, and what the fixed design would have cost,
from ``looks.json`` and ``jobs.csv``."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from benchlab.looks import LOOKS_FILE
from benchlab.verdict import fmt_p

__all__ = ["lines"]


def lines(out: Path) -> list[str]:
    """The lines, empty for a run with a fixed number of runs."""
    path = Path(out) / LOOKS_FILE
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    design, looks = data["design"], data["looks"]
    if not looks:
        return []
    last = looks[-1]
    at = ", ".join(str(x["planned"]) for x in looks)
    state = f"stopped: {last['why']}" if last["next"] is None \
        else f"under way: the next look is at {last['next']} runs per model"
    md = [f"- **Sequential design** (runs {{min: {design['min']}, max: {design['max']}, "
          f"step: {design['step']}}}, Lan–DeMets {design['spending']} spending, "
          f"α = {design['alpha']:g} per part): {len(looks)} looks, at {at} runs per model; "
          f"{state}. The decisions below spend α over the looks (docs/statistics.md); "
          "the per-part lines after them are fixed-sample tests of all the runs, for their "
          "numbers."]
    for part in last["parts"]:
        md.append("  - " + _part(part, last))
        if part["kind"] == "final accuracy":
            md.append("    - " + _one_sided(part["part"], looks))
    md.append("  - " + _cost(Path(out), design, looks))
    return md


def _part(part: dict, last: dict) -> str:
    decided = part["decided_at"]
    when = (f"at the look at {decided} runs per model" if decided is not None
            else f"after the last look ({last['planned']} runs per model)")
    text = f"{part['part']}: **{part['decision']}** {when}"
    if part["kind"] == "final accuracy":
        tost = max(x for x in (part["tost_p_lower"], part["tost_p_upper"], 0.0)
                   if x is not None)
        return text + (f"; TOST p = {fmt_p(tost)} against the one-sided level "
                       f"{fmt_p(part['level_one_sided'])} (z ≥ {part['z_one_sided']:.2f}), "
                       f"Welch p = {fmt_p(part['welch_p'] or float('nan'))} against the "
                       f"two-sided level {fmt_p(part['level_two_sided'])} "
                       f"(|z| ≥ {part['z_two_sided']:.2f})")
    if part["kind"] == "robustness":
        cells = part["cells"]
        hits = [c for c, hit in zip(cells, part["rejected"]) if hit]
        shown = "; ".join(f"{c['attack']} ε = {c['eps']:g}: {c['diff'] * 100:+.1f} pp, "
                          f"p = {fmt_p(c['p'] if c['p'] is not None else float('nan'))}"
                          for c in hits)
        return text + (f"; {len(hits)} of {len(cells)} (attack, ε) cells differ at Holm's "
                       f"step-down under the spending" + (f" ({shown})" if shown else "")
                       + f"; equivalence needs every cell's TOST below the one-sided level "
                       f"{fmt_p(part['level_one_sided'])}")
    if part["decision"] == "untestable":
        return text + (": every statistic is undefined for these runs (learning curves too "
                       "short for it), which more runs would not change")
    ps = ", ".join(f"{s['statistic']} p = {fmt_p(s['p'] if s['p'] is not None else float('nan'))}"
                   for s in part["statistics"])
    return text + f"; {ps}; Holm level {fmt_p(part['level'])} (|z| ≥ {part['z']:.2f})"


def _one_sided(name: str, looks: list[dict]) -> str:
    """The two one-sided readings of a final-accuracy part (TOST's halves, each a
    group-sequential test of its own at the one-sided boundaries): the first look at
    which each was shown."""
    other, _, baseline = name.removeprefix("final accuracy: ").partition(" against ")
    first: dict[str, int | None] = {"p_upper": None, "p_lower": None}
    margin = None
    for look in looks:
        for part in look["parts"]:
            if part["part"] != name:
                continue
            margin = part["margin"]
            for side in first:
                p = part[f"tost_{side}"]
                if first[side] is None and p is not None and p < part["level_one_sided"]:
                    first[side] = look["planned"]
    m = f"{margin * 100:g} pp" if margin is not None else "the margin"

    def when(at: int | None) -> str:
        return (f"**shown** at the look at {at} runs per model" if at is not None
                else "**not shown** at any look")

    return (f"one-sided readings: {other} does not improve on {baseline} by {m} or more "
            f"(non-superiority): {when(first['p_upper'])}; {other} is not worse by {m} or "
            f"more (non-inferiority): {when(first['p_lower'])}")


def _cost(out: Path, design: dict, looks: list[dict]) -> str:
    models = len(looks[-1]["runs"]) or 1
    trained = sum(looks[-1]["runs"].values())
    fixed = design["max"] * models
    text = (f"cost: {trained} runs trained ({looks[-1]['planned']} per model); the fixed "
            f"design of {design['max']} runs per model would train {fixed}")
    jobs_csv = out / "jobs.csv"
    if jobs_csv.exists():
        jobs = pd.read_csv(jobs_csv)
        # a model served from the model cache took no training time: not a measurement
        train = jobs[(jobs["kind"] == "train") & (jobs["status"] == "ok")
                     & (jobs["seconds"] > 0)]
        if train.empty:
            text += " (no train job timed here: the models came from the model cache)"
        else:
            each = float(train["seconds"].mean())
            text += (f" (at the mean train job's {each:.0f} s: {each * trained / 3600:.2f} h "
                     f"here against {each * fixed / 3600:.2f} h)")
    return text + "."
