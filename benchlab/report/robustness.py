"""The "Robustness" section: accuracy and attack success per model, attack and ε,
with the threat each attack bounds (a norm ball, or a minimum-norm search) and, for
minimum-norm attacks, what they found. Writes ``robustness.csv`` and its plot."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from benchlab import robust_verdict, stats
from benchlab.messages import NORM_LABELS
from benchlab.metrics import share_ci
from benchlab.report.epochs import same_training_pairs
from benchlab.report.loading import ordered
from benchlab.report.markdown import DASH, interval, mean_sd, number, table
from benchlab.report.plots import plot_robustness
from benchlab.verdict import Settings, fmt_p

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
    several: the mean over runs with its 95% t interval (n = runs); a run recorded
    before the counts: its value alone."""
    values, counts = _values(cell, metric), _values(cell, f"{metric}.n")
    if len(values) > 1:
        s = stats.summarize(values)
        if s.n < 2:
            return mean_sd(values, 100, 2)
        # a share lies in [0, 1]: cutting the interval there loses none of its coverage
        low, high = max(0.0, s.mean - s.ci95), min(1.0, s.mean + s.ci95)
        return f"{100 * s.mean:.2f} [{100 * low:.2f}, {100 * high:.2f}]"
    if len(counts) != 1 or not values or math.isnan(values[0]):
        return mean_sd(values, 100, 2)
    n = max(int(counts[0]), 0)
    # the interval of the share as hit counts: round(share * n) of the n images
    ci = share_ci(np.arange(n) < round(values[0] * n))
    return f"{100 * values[0]:.2f} [{100 * ci.low:.2f}, {100 * ci.high:.2f}]"


def _norm(cell: pd.DataFrame, metric: str, minimum: bool) -> str:
    """Mean perturbation norm at one ε: over every image for an attack bounded by a
    ball; for a minimum-norm attack over the images it broke within ε, with their
    number (a run recorded before the counts: over every image, as it was)."""
    values, counts = _values(cell, metric), _values(cell, f"{metric}.n")
    if not minimum or not counts:
        return mean_sd(values, 1, 3)
    kept = [v for v in values if not math.isnan(v)]
    n = f"n = {sum(counts):.0f}"
    return f"{mean_sd(kept, 1, 3)} ({n})" if kept else f"– (none broken, {n})"


def section(results: pd.DataFrame, out: Path, settings: Settings | None = None,
            procedures: dict[str, str] | None = None,
            pairs: list[tuple[str, str]] | None = None) -> tuple[list[str], list[str]]:
    """The section and its verdict lines (both empty for a run without attack jobs).

    ``procedures``: each model's training procedure in words; models trained the same
    way are compared with the first of them, over runs (:mod:`benchlab.robust_verdict`),
    or, with ``pairs`` (``report.robustness_pairs``), exactly those (model, against).
    """
    settings = settings or Settings()
    procedures = procedures or {}
    rows = results[results["attack"].notna() & results["explainer"].isna()
                   & results["epoch"].isna()]
    if rows.empty:
        return [], []
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
                    "model": model, "training": procedures.get(model, "standard"),
                    "attack": attack, "threat": threat, "eps": f"{eps:g}",
                    "runs (n)": f"{len(_values(cell, 'accuracy'))}",
                    "images (n)": DASH if images.empty else
                    "/".join(dict.fromkeys(f"{v:.0f}" for v in images)),
                    "accuracy (%)": _share(cell, "accuracy"),
                    "success rate (%)": _share(cell, "success_rate"),
                    "mean L∞": _norm(cell, "linf", minimum),
                    "mean L2": _norm(cell, "l2", minimum),
                    "attack images/s": speed})
            if minimum:
                found.append(_found_row(sub, model, attack, label))
    frame = pd.DataFrame(per_eps_rows)
    frame.to_csv(out / "robustness.csv", index=False)
    plot_robustness(rows, models, attacks, threat_of, out / "robustness.png")
    n = int(rows["job"].nunique())
    runs = rows.groupby("model")["run"].nunique() if "run" in rows else pd.Series(dtype=int)
    md = ["## Robustness", "",
          "Accuracy on the attacked test images (ε = 0: clean images): for one run, over "
          "its n images with a 95% Wilson interval; for several, the mean over runs with "
          "a 95% t interval over runs (n = runs: the unit is the trained model). Success "
          "rate: share of the correctly classified images that the attack makes wrong "
          "(same intervals); L∞/L2: mean "
          "perturbation size per image (for a minimum-norm attack, over the n images it "
          "broke within ε: the others are left clean at that ε); attack images/s: "
          "adversarial images made per second "
          "(for an attack bounded by a ball every image at every ε counts once; a "
          "minimum-norm attack makes one per image). An attack bounded by a ball is run "
          "at each ε; for a minimum-norm attack an image counts as broken at ε when the "
          "perturbation it found has norm ≤ ε, so its curve is derived from one run. "
          f"{n} attack job(s).", ""]
    single = [m for m in models if int(runs.get(m, 1)) < 2]
    if single:
        md += [f"One trained model of {', '.join(single)}: its intervals are over the test "
               "images of that one model and say nothing of another training seed; "
               "comparisons over seeds need at least two runs per model.", ""]
    md += ["![robustness](robustness.png)", "", table(frame)]
    comparisons_md, claims = _comparisons(rows, models, attacks, settings, procedures, out,
                                          pairs)
    md += comparisons_md
    if found:
        md += ["### Minimum-norm attacks", "",
               "Found: share of the correctly classified images for which the attack found "
               "a perturbation that changes the prediction (benchlab predicts on each "
               "returned image: an image counts as broken only where the prediction "
               "differs from its label); returned, not flipped: of the correctly "
               "classified images the attack returned changed, those whose prediction "
               "did not change (they count as not broken at every ε); median norm: over "
               "the successful perturbations, in the attack's norm (mean ± std over runs).",
               "",
               table(pd.DataFrame(found))]
    return md, claims


def _trained(other: str, baseline: str, procedures: dict[str, str]) -> str:
    mine, theirs = procedures.get(other, "standard"), procedures.get(baseline, "standard")
    return (f"both trained: {mine}" if mine == theirs
            else f"trained: {other} {mine}, {baseline} {theirs}")


def _comparisons(rows: pd.DataFrame, models: list[str], attacks: list[str],
                 settings: Settings, procedures: dict[str, str], out: Path,
                 pairs: list[tuple[str, str]] | None = None) -> tuple[list[str], list[str]]:
    """Each pair (model, against), over runs: the table (also
    ``robustness_comparisons.csv``) and one verdict line per pair."""
    table_rows, claims = [], []
    for other, baseline in pairs or same_training_pairs(models, procedures):
        if other not in models or baseline not in models:
            continue  # a model without attack jobs (yet)
        found = robust_verdict.compare(rows, baseline, other, attacks, settings)
        if not found:
            continue
        trained = _trained(other, baseline, procedures)
        claims.append(robust_verdict.pair_line(found, trained, settings.alpha))
        for c in found:
            low, high = c.ci95
            table_rows.append({
                "model": c.other, "against": c.baseline,
                "training": trained.removeprefix("both trained: "),
                "attack": c.attack, "eps": f"{c.eps:g}", "runs (n)": f"{c.n[0]}/{c.n[1]}",
                "difference (pp)": number(100 * c.diff, "+.2f"),
                "95% CI (pp)": interval(100 * low, 100 * high),
                "p (Welch)": fmt_p(c.p), "p (Holm)": fmt_p(c.p_holm),
                **({"TOST p (Holm)": fmt_p(c.tost_p_holm)}
                   if settings.margin_pp is not None else {}),
                "outcome": c.outcome + (f" (about {c.runs_needed} runs per model would "
                                        "decide it)" if c.outcome == "inconclusive"
                                        and c.runs_needed else "")})
    if not table_rows:
        return [], claims
    frame = pd.DataFrame(table_rows)
    frame.to_csv(out / "robustness_comparisons.csv", index=False)
    margin = ("" if settings.margin_pp is None else
              f" TOST: equivalence within ±{settings.margin_pp:g} pp "
              "(report.equivalence_margin), Holm-corrected over the same tests.")
    which = ("The pairs the suite names (report.robustness_pairs)" if pairs else
             "Each model against the first model of the suite trained the same way")
    md = ["### Robustness over runs", "",
          f"{which}: the "
          "difference of mean accuracy under attack (pp), with its Welch 95% interval "
          "over runs; p (Holm): corrected over every (attack, ε) of the pair." + margin,
          "", table(frame)]
    return md, claims


def _found_row(sub: pd.DataFrame, model: str, attack: str, norm_label: str
               ) -> dict[str, str]:
    """One minimum-norm attack's row: how often it found a perturbation, how large."""
    def value(metric: str) -> pd.Series:
        return sub[sub["metric"] == metric]["value"]

    median = value("median_norm")
    return {"model": model, "attack": attack, "norm": norm_label,
            "images attacked (n)": f"{value('attacked').sum():.0f}",
            "found (%)": mean_sd(value("found_rate").tolist(), 100, 1),
            "returned, not flipped (n)": DASH if value("not_flipped").empty else
                f"{value('not_flipped').sum():.0f} of {value('not_flipped.n').sum():.0f}",
            "median norm of successful perturbations":
                "– (none found)" if median.isna().all() else
                mean_sd(median.dropna().tolist(), 1, 3),
            "runs": f"{len(median)}"}
