"""The sentences of the attention section: one per model, attack and explainer, on
how its maps change from the clean images to the largest ε.

A sentence states a change only where its interval excludes zero *and* it
survives Holm's correction over every change the section's sentences test (the
family: background share and intensity against the clean maps at the largest ε,
and flipped against held similarity at the largest ε where both groups are large
enough, per model, attack and explainer), and always with its size, interval, n
and Holm-adjusted p; otherwise it says that no change was resolved. The p-values
are read off the intervals (:func:`benchlab.stats.p_from_interval`: a t interval over
runs with its runs - 1 degrees of freedom, a bootstrap interval as normal). Flipped and
held predictions are compared only when each group has at least :data:`MIN_GROUP`
images: a percentile bootstrap interval of a handful of values is far too narrow.
"""

from __future__ import annotations

import math

import pandas as pd

from benchlab import stats
from benchlab.report.attention_estimates import Lookup, cell, count
from benchlab.report.markdown import DASH

__all__ = ["MIN_GROUP", "Family", "claims", "sentence"]

MIN_GROUP = 10  # images in each of the flipped and held groups before they are compared


def _resolved(est: pd.Series | None) -> int:
    """+1 / -1 when the interval lies above / below zero, 0 when it includes zero."""
    if est is None or pd.isna(est["low"]) or pd.isna(est["high"]):
        return 0
    return 1 if est["low"] > 0 else -1 if est["high"] < 0 else 0


class Family:
    """The changes the sentences test, with Holm-adjusted p-values over all of them."""

    def __init__(self, tested: list[pd.Series], alpha: float):
        raw = [stats.p_from_interval(c["value"], c["low"], c["high"], df=c.get("df"))
               for c in tested]
        self.adjusted = {id(c): p for c, p in zip(tested, stats.holm(raw))}
        self.size = sum(not math.isnan(p) for p in raw)
        self.alpha = alpha

    def p(self, est: pd.Series) -> float:
        return self.adjusted.get(id(est), math.nan)

    def sign(self, est: pd.Series) -> int:
        """The direction of a change that is resolved after the correction, else 0."""
        p = self.p(est)
        return _resolved(est) if not math.isnan(p) and p < self.alpha else 0


def _p_text(p: float) -> str:
    return DASH if math.isnan(p) else f"{p:.2g}" if p >= 0.001 else f"{p:.0e}"


def _change(est: pd.Series | None, up: str, down: str, family: Family) -> str:
    if est is None or est["n"] == 0:
        return "could not be measured (no image in the population)"
    size = (f"{est['value']:+.3f} [{est['low']:.3f}, {est['high']:.3f}], n = {int(est['n'])}, "
            f"Holm p = {_p_text(family.p(est))}")
    sign = family.sign(est)
    if sign == 0:
        return f"shows no resolved change ({size})"
    return f"{up if sign > 0 else down} ({size})"


def _comparable(flipped: pd.Series | None, held: pd.Series | None) -> bool:
    return (flipped is not None and held is not None
            and flipped["n"] >= MIN_GROUP and held["n"] >= MIN_GROUP)


def _split_eps(get: Lookup, model: str, attack: str, explainer: str, eps: list[float]
               ) -> float | None:
    """The largest ε > 0 at which flipped and held predictions can be compared."""
    for e in sorted(eps, reverse=True):
        if e > 0 and _comparable(get(model, attack, explainer, e, "cam_similarity", "flipped"),
                                 get(model, attack, explainer, e, "cam_similarity", "held")):
            return e
    return None


def claims(get: Lookup, model: str, attack: str, explainer: str, eps: list[float]
           ) -> list[pd.Series]:
    """The estimates :func:`sentence` states a change for, when they exist."""
    hi = eps[-1]
    found = [get(model, attack, explainer, hi, "cam_background_share", "change"),
             get(model, attack, explainer, hi, "cam_intensity", "change")]
    split = _split_eps(get, model, attack, explainer, eps)
    if split is not None:
        found.append(get(model, attack, explainer, split, "cam_similarity", "flipped-held"))
    return [c for c in found if c is not None and c["n"] > 0]


def sentence(get: Lookup, model: str, attack: str, explainer: str, eps: list[float],
             layer: str | None, family: Family) -> str:
    """One bullet: empty maps, similarity to the clean maps, background share and
    intensity at the largest ε, and flipped against held predictions."""
    lo, hi = eps[0], eps[-1]
    at = f" at `{layer}`" if layer else ""
    empty0, empty1 = get(model, attack, explainer, lo, "cam_empty_share"), \
        get(model, attack, explainer, hi, "cam_empty_share")
    sim = get(model, attack, explainer, hi, "cam_similarity")
    text = (f"- **{model} · {attack} · {explainer}{at}:** empty maps "
            f"{cell(empty0, percent=True)} of {count(empty0)} clean images, "
            f"{cell(empty1, percent=True)} at ε = {hi:g}. ")
    if sim is None or sim["n"] == 0:
        return text + ("No image has a non-empty map at every ε, so attention shifts are "
                       "not measured.")
    text += (f"On the {int(sim['n'])} images with a non-empty map at every ε, the map's "
             f"correlation with the clean one is {cell(sim)} at ε = {hi:g}; its background "
             "share " + _change(get(model, attack, explainer, hi, "cam_background_share",
                                    "change"), "rises", "falls", family)
             + "; its mean intensity " + _change(get(model, attack, explainer, hi,
                                                       "cam_intensity", "change"),
                                                   "rises", "falls", family) + ".")
    split = _split_eps(get, model, attack, explainer, eps)
    diff = None if split is None else \
        get(model, attack, explainer, split, "cam_similarity", "flipped-held")
    if split is not None and diff is not None:
        flipped = get(model, attack, explainer, split, "cam_similarity", "flipped")
        held = get(model, attack, explainer, split, "cam_similarity", "held")
        assert flipped is not None and held is not None
        sign = family.sign(diff)
        verdict = ("attention moves more where the attack succeeds" if sign < 0 else
                   "attention moves less where the attack succeeds" if sign > 0 else
                   "no difference between flipped and held predictions is resolved")
        where = f"ε = {split:g}" + ("" if split == hi else
                                    f" (the largest ε with at least {MIN_GROUP} of each)")
        text += (f" Flipped against held predictions at {where}: similarity "
                 f"{cell(flipped)} (n = {int(flipped['n'])}) against {cell(held)} "
                 f"(n = {int(held['n'])}), difference {cell(diff)}, Holm p = "
                 f"{_p_text(family.p(diff))}: {verdict}.")
    else:
        flipped = get(model, attack, explainer, hi, "cam_similarity", "flipped")
        held = get(model, attack, explainer, hi, "cam_similarity", "held")
        if flipped is not None or held is not None:
            text += (f" At ε = {hi:g} the prediction flipped for {count(flipped)} and held for "
                     f"{count(held)} of them, and no ε has at least {MIN_GROUP} of each: too "
                     "few to compare flipped with held predictions.")
    return text
