"""The "Robustness" section: accuracy and attack success per model, attack and ε,
with the threat each attack bounds (a norm ball, or a minimum-norm search) and, for
minimum-norm attacks, what they found. Writes ``robustness.csv`` and its plot."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from benchlab.messages import NORM_LABELS
from benchlab.metrics import share_ci
from benchlab.report.loading import ordered
from benchlab.report.markdown import DASH, mean_sd, table
from benchlab.report.plots import plot_robustness

__all__ = ["section", "threats"]

_NORM_BY_P = {math.inf: "linf", 2.0: "l2", 1.0: "l1", 0.0: "l0"}


def threats(rows: pd.DataFrame) -> dict[str, tuple[str, bool]]:
    """attack -> (norm, minimum-norm?), from its norm_p and minimum_norm rows; an L∞
    ball for runs recorded before attacks declared what they bound."""
    found = {}
    for attack, sub in rows.groupby("attack"):
        p = sub[sub["metric"] == "norm_p"]["value"]
        minimum = sub[sub["metric"] == "minimum_norm"]["value"]
        norm = _NORM_BY_P.get(float(p.iloc[0]), "linf") if len(p) else "linf"
        found[str(attack)] = (norm, bool(len(minimum) and minimum.iloc[0] > 0))
    return found


def _rate(values: pd.Series) -> str:
    """Images per second, mean over jobs, with enough digits for a slow attack."""
    if not len(values):
        return DASH
    rate = float(values.mean())
    return f"{rate:.0f}" if rate >= 10 else f"{rate:.2g}"


def _values(cell: pd.DataFrame, metric: str) -> list[float]:
    return cell[cell["metric"] == metric]["value"].tolist()


def _share(cell: pd.DataFrame, metric: str) -> str:
    """A share in percent. One run: with its 95% Wilson interval over its n images;
    several (or a run recorded before the counts): mean ± std over runs."""
    values, counts = _values(cell, metric), _values(cell, f"{metric}.n")
    if len(values) != 1 or len(counts) != 1 or math.isnan(values[0]):
        return mean_sd(values, 100, 2)
    n = max(int(counts[0]), 0)
    # the interval of the share as hit counts: round(share * n) of the n images
    ci = share_ci(np.arange(n) < round(values[0] * n))
    return f"{100 * values[0]:.2f} [{100 * ci.low:.2f}, {100 * ci.high:.2f}]"


def section(results: pd.DataFrame, out: Path) -> list[str]:
    """The section, empty for a run without attack jobs."""
    rows = results[results["attack"].notna() & results["explainer"].isna()
                   & results["epoch"].isna()]
    if rows.empty:
        return []
    models, attacks = ordered(rows["model"]), ordered(rows["attack"])
    threat_of = threats(rows)
    per_eps_rows, found = [], []
    for model in models:
        for attack in attacks:
            sub = rows[(rows["model"] == model) & (rows["attack"] == attack)]
            if sub.empty:
                continue
            norm, minimum = threat_of[attack]
            label = NORM_LABELS[norm]
            threat = f"minimum {label}" if minimum else f"{label} ball"
            speed = _rate(sub[sub["metric"] == "images_per_s"]["value"])
            per_eps = sub[sub["eps"].notna()]
            for eps in sorted(set(per_eps["eps"])):
                cell = per_eps[per_eps["eps"] == eps]
                images = cell[cell["metric"] == "accuracy.n"]["value"]
                per_eps_rows.append({
                    "model": model, "attack": attack, "threat": threat, "eps": f"{eps:g}",
                    "images (n)": DASH if images.empty else
                    "/".join(dict.fromkeys(f"{v:.0f}" for v in images)),
                    "accuracy (%)": _share(cell, "accuracy"),
                    "success rate (%)": _share(cell, "success_rate"),
                    "mean L∞": mean_sd(_values(cell, "linf"), 1, 3),
                    "mean L2": mean_sd(_values(cell, "l2"), 1, 3),
                    "attack images/s": speed})
            if minimum:
                found.append(_found_row(sub, model, attack, label))
    frame = pd.DataFrame(per_eps_rows)
    frame.to_csv(out / "robustness.csv", index=False)
    plot_robustness(rows, models, attacks, threat_of, out / "robustness.png")
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
          "![robustness](robustness.png)", "", table(frame)]
    if found:
        md += ["### Minimum-norm attacks", "",
               "Found: share of the correctly classified images for which the attack found "
               "a perturbation that changes the prediction; median norm: over those "
               "perturbations, in the attack's norm (mean ± std over runs).", "",
               table(pd.DataFrame(found))]
    return md


def _found_row(sub: pd.DataFrame, model: str, attack: str, norm_label: str
               ) -> dict[str, str]:
    """One minimum-norm attack's row: how often it found a perturbation, how large."""
    def value(metric: str) -> pd.Series:
        return sub[sub["metric"] == metric]["value"]

    median = value("median_norm")
    return {"model": model, "attack": attack, "norm": norm_label,
            "images attacked (n)": f"{value('attacked').sum():.0f}",
            "found (%)": mean_sd(value("found_rate").tolist(), 100, 1),
            "median norm of successful perturbations":
                "– (none found)" if median.isna().all() else
                mean_sd(median.dropna().tolist(), 1, 3),
            "runs": f"{len(median)}"}
