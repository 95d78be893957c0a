"""The attention part of a run's report: tables, plots and sentences from results.csv.

Explain jobs write every estimate as four rows (:mod:`benchlab.attention`):
``<metric>`` (the mean), ``<metric>.n``, ``<metric>.ci_low`` and ``<metric>.ci_high``.
Here they become one cell each, ``value [low, high]``, beside their n. With one
run per model the interval is the bootstrap interval over images; with several,
the runs' means are averaged and the interval is the Student t interval over runs
(n then counts the images of all runs together).

A sentence states a change only where its interval excludes zero *and* it
survives Holm's correction over every change the section's sentences test (the
family: background share and intensity against the clean maps at the largest ε,
and flipped against held similarity at the largest ε where both groups are large
enough, per model, attack and explainer), and
always with its size, interval, n and Holm-adjusted p; otherwise it says that no
change was resolved. The p-values are read off the intervals
(:func:`benchlab.stats.p_from_interval`). Flipped and held predictions are
compared only when each group has at least :data:`MIN_GROUP` images: a percentile
bootstrap interval of a handful of values is far too narrow.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from benchlab import stats

_NAME = re.compile(r"^(?P<base>[a-z_]+)(?:\[(?P<qualifier>[^\]]+)\])?"
                   r"(?:\.(?P<stat>n|ci_low|ci_high))?$")
_KEYS = ["model", "attack", "explainer", "eps", "base", "qualifier"]
CONTROLS = ("random",)  # explainers drawn dashed: what the others are read against
MIN_GROUP = 10  # images in each of the flipped and held groups before they are compared
ALPHA = 0.05


def estimates(results: pd.DataFrame) -> pd.DataFrame:
    """One row per estimate: the keys, then value, low, high, n and runs.

    ``qualifier`` is "" for the plain metric, e.g. "flipped" or "layer=relu2"
    otherwise. Runs are combined as the module docstring says.
    """
    rows = results[results["explainer"].notna()]
    parsed = rows["metric"].str.extract(_NAME)
    rows = rows.assign(base=parsed["base"], qualifier=parsed["qualifier"].fillna(""),
                       stat=parsed["stat"].fillna("value"),
                       attack=rows["attack"].fillna("clean"))
    rows = rows[rows["base"].notna() & rows["eps"].notna()]
    if rows.empty:
        return pd.DataFrame(columns=[*_KEYS, "value", "low", "high", "n", "runs"])
    wide = rows.pivot_table(index=[*_KEYS, "run"], columns="stat", values="value",
                            aggfunc="first", dropna=False).reset_index()
    for stat in ("value", "n", "ci_low", "ci_high"):
        if stat not in wide.columns:
            wide[stat] = math.nan
    wide = wide[wide["value"].notna() | wide["n"].notna()]
    out = []
    for key, group in wide.groupby(_KEYS, sort=False):
        runs = len(group)
        n = int(group["n"].fillna(0).sum())
        if runs == 1:
            r = group.iloc[0]
            value, low, high = r["value"], r["ci_low"], r["ci_high"]
        else:
            s = stats.summarize(group["value"].tolist())
            value, low, high = s.mean, s.mean - s.ci95, s.mean + s.ci95
        out.append(dict(zip(_KEYS, key), value=value, low=low, high=high, n=n, runs=runs))
    return pd.DataFrame(out)


def _cell(est: pd.Series | None, digits: int = 3, percent: bool = False) -> str:
    if est is None or est["n"] == 0 or pd.isna(est["value"]):
        return "–"
    scale, unit = (100.0, "%") if percent else (1.0, "")
    digits = 1 if percent else digits
    text = f"{est['value'] * scale:.{digits}f}{unit}"
    if not (pd.isna(est["low"]) or pd.isna(est["high"])):
        text += f" [{est['low'] * scale:.{digits}f}, {est['high'] * scale:.{digits}f}]"
    return text


class _Lookup:
    def __init__(self, table: pd.DataFrame):
        self.index = {tuple(r[k] for k in _KEYS): r for _, r in table.iterrows()}

    def __call__(self, model: str, attack: str, explainer: str, eps: float, base: str,
                 qualifier: str = "") -> pd.Series | None:
        return self.index.get((model, attack, explainer, eps, base, qualifier))


def _n(est: pd.Series | None) -> str:
    return "–" if est is None else f"{int(est['n'])}"


def _resolved(est: pd.Series | None) -> int:
    """+1 / -1 when the interval lies above / below zero, 0 when it includes zero."""
    if est is None or pd.isna(est["low"]) or pd.isna(est["high"]):
        return 0
    return 1 if est["low"] > 0 else -1 if est["high"] < 0 else 0


class _Family:
    """The changes the sentences test, with Holm-adjusted p-values over all of them."""

    def __init__(self, claims: list[pd.Series]):
        raw = [stats.p_from_interval(c["value"], c["low"], c["high"]) for c in claims]
        self.adjusted = {id(c): p for c, p in zip(claims, stats.holm(raw))}
        self.size = sum(not math.isnan(p) for p in raw)

    def p(self, est: pd.Series) -> float:
        return self.adjusted.get(id(est), math.nan)

    def sign(self, est: pd.Series) -> int:
        """The direction of a change that is resolved after the correction, else 0."""
        p = self.p(est)
        return _resolved(est) if not math.isnan(p) and p < ALPHA else 0


def _p_text(p: float) -> str:
    return "–" if math.isnan(p) else f"{p:.2g}" if p >= 0.001 else f"{p:.0e}"


def _change(est: pd.Series | None, up: str, down: str, family: _Family) -> str:
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


def _split_eps(get: _Lookup, model: str, attack: str, explainer: str, eps: list[float]
               ) -> float | None:
    """The largest ε > 0 at which flipped and held predictions can be compared."""
    for e in sorted(eps, reverse=True):
        if e > 0 and _comparable(get(model, attack, explainer, e, "cam_similarity", "flipped"),
                                 get(model, attack, explainer, e, "cam_similarity", "held")):
            return e
    return None


def _claims(get: _Lookup, model: str, attack: str, explainer: str, eps: list[float]
            ) -> list[pd.Series]:
    """The estimates :func:`_sentence` states a change for, when they exist."""
    hi = eps[-1]
    found = [get(model, attack, explainer, hi, "cam_background_share", "change"),
             get(model, attack, explainer, hi, "cam_intensity", "change")]
    split = _split_eps(get, model, attack, explainer, eps)
    if split is not None:
        found.append(get(model, attack, explainer, split, "cam_similarity", "flipped-held"))
    return [c for c in found if c is not None and c["n"] > 0]


def _sentence(get: _Lookup, model: str, attack: str, explainer: str, eps: list[float],
              layer: str | None, family: _Family) -> str:
    lo, hi = eps[0], eps[-1]
    at = f" at `{layer}`" if layer else ""
    empty0, empty1 = get(model, attack, explainer, lo, "cam_empty_share"), \
        get(model, attack, explainer, hi, "cam_empty_share")
    sim = get(model, attack, explainer, hi, "cam_similarity")
    text = (f"- **{model} · {attack} · {explainer}{at}:** empty maps "
            f"{_cell(empty0, percent=True)} of {_n(empty0)} clean images, "
            f"{_cell(empty1, percent=True)} at ε = {hi:g}. ")
    if sim is None or sim["n"] == 0:
        return text + ("No image has a non-empty map at every ε, so attention shifts are "
                       "not measured.")
    text += (f"On the {int(sim['n'])} images with a non-empty map at every ε, the map's "
             f"correlation with the clean one is {_cell(sim)} at ε = {hi:g}; its background "
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
                 f"{_cell(flipped)} (n = {int(flipped['n'])}) against {_cell(held)} "
                 f"(n = {int(held['n'])}), difference {_cell(diff)}, Holm p = "
                 f"{_p_text(family.p(diff))}: {verdict}.")
    else:
        flipped = get(model, attack, explainer, hi, "cam_similarity", "flipped")
        held = get(model, attack, explainer, hi, "cam_similarity", "held")
        if flipped is not None or held is not None:
            text += (f" At ε = {hi:g} the prediction flipped for {_n(flipped)} and held for "
                     f"{_n(held)} of them, and no ε has at least {MIN_GROUP} of each: too few "
                     "to compare flipped with held predictions.")
    return text


def _plot(table: pd.DataFrame, groups: list[tuple[str, str, str]], panels: list[tuple[str, str]],
          path: Path, title: str) -> None:
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.6 * rows), squeeze=False)
    for ax, (metric, label) in zip(axes.flat, panels):
        base, _, qualifier = metric.partition("|")
        for model, attack, explainer in groups:
            sub = table[(table["model"] == model) & (table["attack"] == attack)
                        & (table["explainer"] == explainer) & (table["base"] == base)
                        & (table["qualifier"] == qualifier)].sort_values("eps")
            if sub.empty:
                continue
            low = (sub["value"] - sub["low"]).clip(lower=0).fillna(0)
            high = (sub["high"] - sub["value"]).clip(lower=0).fillna(0)
            ax.errorbar(sub["eps"], sub["value"], yerr=[low, high], marker="o", ms=3,
                        capsize=2, label=f"{model} · {attack} · {explainer}",
                        linestyle="--" if explainer in CONTROLS else "-",
                        alpha=0.6 if explainer in CONTROLS else 1.0)
        ax.set_xlabel("ε")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_sanity(table: pd.DataFrame, path: Path) -> bool:
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
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def section(results: pd.DataFrame, out: Path, md_table: Callable[[pd.DataFrame], str]
            ) -> list[str]:
    """The '## Attention under attack' part of summary.md, its CSV tables and plots."""
    table = estimates(results)
    if table.empty:
        return []
    table.to_csv(out / "attention_estimates.csv", index=False)
    get = _Lookup(table)
    groups = list(dict.fromkeys(zip(table["model"], table["attack"], table["explainer"])))
    runs = int(table["runs"].max())
    layers = _explained_layers(results)

    main, outcome, layer_rows, sanity = [], [], [], []
    checked: set[tuple[str, str]] = set()
    for model, attack, explainer in groups:
        sub = table[(table["model"] == model) & (table["attack"] == attack)
                    & (table["explainer"] == explainer)]
        for eps in sorted(set(sub["eps"])):
            def g(base: str, qualifier: str = "", e: float = eps,
                  key: tuple[str, str, str] = (model, attack, explainer)) -> pd.Series | None:
                return get(*key, e, base, qualifier)

            empty = g("cam_empty_share")
            main.append({"model": model, "attack": attack, "explainer": explainer,
                         "eps": f"{eps:g}", "images": _n(empty),
                         "empty maps": _cell(empty, percent=True),
                         "common n": _n(g("cam_similarity")),
                         "similarity to clean": _cell(g("cam_similarity")),
                         "background share": _cell(g("cam_background_share")),
                         "mean intensity": _cell(g("cam_intensity")),
                         "deletion AUC ↓": _cell(g("deletion_auc")),
                         "insertion AUC ↑": _cell(g("insertion_auc"))})
            if eps > 0:
                outcome.append({
                    "model": model, "attack": attack, "explainer": explainer,
                    "eps": f"{eps:g}", "n flipped": _n(g("cam_similarity", "flipped")),
                    "n held": _n(g("cam_similarity", "held")),
                    "similarity, flipped": _cell(g("cam_similarity", "flipped")),
                    "similarity, held": _cell(g("cam_similarity", "held")),
                    "similarity difference": _cell(g("cam_similarity", "flipped-held")),
                    "background share, flipped": _cell(g("cam_background_share", "flipped")),
                    "background share, held": _cell(g("cam_background_share", "held")),
                    "background difference": _cell(g("cam_background_share",
                                                     "flipped-held"))})
        san = get(model, attack, explainer, 0.0, "sanity_rank_correlation")
        if san is not None and (model, explainer) not in checked:  # same for every attack
            checked.add((model, explainer))
            sanity.append({"model": model, "explainer": explainer, "n": _n(san),
                           "rank correlation, trained vs randomised weights": _cell(san)})
        for qualifier in [q for q in dict.fromkeys(sub["qualifier"]) if q.startswith("layer=")]:
            name = qualifier.removeprefix("layer=")
            cells = {f"ε = {e:g}": _cell(get(model, attack, explainer, e, "cam_empty_share",
                                             qualifier), percent=True)
                     for e in sorted(set(sub["eps"]))}
            used = layers.get((model, explainer)) == name
            layer_rows.append({"model": model, "attack": attack, "explainer": explainer,
                               "layer": f"**{name}** (used)" if used else name,
                               "images": _n(get(model, attack, explainer, 0.0,
                                                "cam_empty_share", qualifier)), **cells})

    _plot(table, groups, [("cam_empty_share", "share of empty maps"),
                          ("cam_similarity", "similarity to the clean map (Pearson r)"),
                          ("cam_background_share", "share of the map on background"),
                          ("cam_intensity", "mean map intensity"),
                          ("deletion_auc", "deletion AUC (lower: more faithful)"),
                          ("insertion_auc", "insertion AUC (higher: more faithful)")],
          out / "attention.png", "Attention under attack; bars: 95% confidence intervals")
    _plot(table, groups, [("cam_similarity|flipped", "similarity, prediction flipped"),
                          ("cam_similarity|held", "similarity, prediction held"),
                          ("cam_similarity|flipped-held", "similarity: flipped − held")],
          out / "attention_outcome.png",
          "Attention shift by outcome of the attack; bars: 95% confidence intervals")

    described = []
    for model, attack, explainer in groups:
        if attack == "clean":
            continue
        eps = sorted(set(table[(table["model"] == model) & (table["attack"] == attack)
                               & (table["explainer"] == explainer)]["eps"]))
        if len(eps) >= 2:
            described.append((model, attack, explainer, eps))
    family = _Family([claim for model, attack, explainer, eps in described
                      for claim in _claims(get, model, attack, explainer, eps)])
    sentences = [_sentence(get, model, attack, explainer, eps, layers.get((model, explainer)),
                           family) for model, attack, explainer, eps in described]
    if sentences:
        sentences.insert(0, f"A change is stated where its 95% interval excludes 0 and its "
                            f"p-value, read off the interval, stays below {ALPHA:g} after "
                            f"Holm's correction over the {family.size} changes these "
                            f"sentences test; flipped and held predictions are compared "
                            f"where each group has at least {MIN_GROUP} images.\n")
    interval = ("95% bootstrap intervals over images" if runs == 1 else
                f"means over {runs} runs with 95% t intervals over runs; n counts the images "
                "of all runs")
    md = ["## Attention under attack", "",
          f"Every value: mean [{interval}]. **Empty maps**: share of the explained images "
          "whose map is all zero (Wilson interval). **Similarity, background share, "
          "intensity** are taken over the *common population* (`common n`): the images whose "
          "clean map and whose map at every ε of the attack are non-empty, the same images at "
          "every ε. Similarity: Pearson correlation with the image's clean map; background "
          "share: share of the map's mass where the clean digit is dark; intensity: mean map "
          "value. **Deletion / insertion AUC**: the class's probability as the most attributed "
          "pixels are blacked out / revealed, over all explained images (an empty map ranks "
          "pixels at random). The `random` explainer (noise maps) is the control every "
          "row is read against.", ""]
    if layers:
        md += ["Layers used: " + ", ".join(f"`{layer}` for {model} · {explainer}"
                                            for (model, explainer), layer in layers.items())
               + ".", ""]
    md += ["![attention](attention.png)", "", md_table(pd.DataFrame(main)), *sentences, ""]
    if outcome:
        md += ["### Attention shift by outcome", "",
               "The common population at each ε split by whether the attack changed the "
               "model's prediction (flipped) or not (held); difference: flipped − held, the "
               "two groups resampled separately.", "",
               "![attention by outcome](attention_outcome.png)", "",
               md_table(pd.DataFrame(outcome))]
    if sanity:
        md += ["### Sanity check: model randomisation", "",
               "Spearman correlation between each clean image's map from the trained model and "
               "from the same architecture with freshly drawn weights, each explaining its own "
               "prediction (Adebayo et al., 2018), over the images where both maps are "
               "non-constant (n). Near 0: the maps depend on what the model learnt; near 1: "
               "they would look the same for an untrained model.", ""]
        if _plot_sanity(table, out / "attention_sanity.png"):
            md += ["![model-randomisation check](attention_sanity.png)", ""]
        md += [md_table(pd.DataFrame(sanity))]
    if layer_rows:
        md += ["### Empty maps at every layer offered", "",
               "Share of empty maps if the explainer used each layer it offers instead "
               "(the used layer in bold), clean (ε = 0) and attacked images.", "",
               md_table(pd.DataFrame(layer_rows))]
    return md


def _explained_layers(results: pd.DataFrame) -> dict[tuple[str, str], str]:
    rows = results[results["metric"].astype(str).str.startswith("explained_layer[")]
    return {(r["model"], r["explainer"]): r["metric"][len("explained_layer["):-1]
            for _, r in rows.iterrows()}
