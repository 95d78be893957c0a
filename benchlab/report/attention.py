"""The "Attention under attack" section: how explainers' maps change between clean
and attacked images, as tables, plots and sentences from results.csv.

Every value is one estimate with its interval and n
(:mod:`benchlab.report.attention_estimates`); the sentences that state a change
follow the rules of :mod:`benchlab.report.attention_sentences`. Writes
``attention_estimates.csv`` and the attention plots.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from benchlab.report.attention_estimates import Lookup, cell, count, estimates, explained_layers
from benchlab.report.attention_sentences import MIN_GROUP, Family, claims, sentence
from benchlab.report.loading import DEFAULTS
from benchlab.report.markdown import table as markdown_table
from benchlab.report.plots import plot_attention, plot_sanity
from benchlab.report.robustness import threats

# MIN_GROUP and estimates are part of what this section is read with
__all__ = ["MIN_GROUP", "OUTCOME_PANELS", "PANELS", "estimates", "section"]


#: the panels of attention.png: (metric, label); ``base|qualifier`` picks a qualified estimate
PANELS = [("cam_empty_share", "share of empty maps"),
          ("cam_similarity", "similarity to the clean map (Pearson r)"),
          ("cam_background_share", "share of the map on background"),
          ("cam_intensity", "mean map intensity"),
          ("deletion_auc", "deletion AUC (lower: more faithful)"),
          ("insertion_auc", "insertion AUC (higher: more faithful)")]
#: the panels of attention_outcome.png
OUTCOME_PANELS = [("cam_similarity|flipped", "similarity, prediction flipped"),
                  ("cam_similarity|held", "similarity, prediction held"),
                  ("cam_similarity|flipped-held", "similarity: flipped − held")]

def section(results: pd.DataFrame, out: Path,
            md_table: Callable[[pd.DataFrame], str] = markdown_table,
            alpha: float = DEFAULTS.alpha) -> list[str]:
    """The '## Attention under attack' part of summary.md (empty for a run without
    explain jobs), its CSV table and plots; ``alpha``: the suite's significance level,
    below which a Holm-adjusted p states a change."""
    table = estimates(results)
    if table.empty:
        return []
    table.to_csv(out / "attention_estimates.csv", index=False)
    get = Lookup(table)
    groups = list(dict.fromkeys(zip(table["model"], table["attack"], table["explainer"])))
    runs = int(table["runs"].max())
    layers = explained_layers(results)
    attack_rows = results[results["attack"].notna() & results["explainer"].isna()]
    norms = {attack: norm for attack, (norm, _) in threats(attack_rows).items()}

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
                         "eps": f"{eps:g}", "images": count(empty),
                         "empty maps": cell(empty, percent=True),
                         "common n": count(g("cam_similarity")),
                         "similarity to clean": cell(g("cam_similarity")),
                         "background share": cell(g("cam_background_share")),
                         "mean intensity": cell(g("cam_intensity")),
                         "deletion AUC ↓": cell(g("deletion_auc")),
                         "insertion AUC ↑": cell(g("insertion_auc"))})
            if eps > 0:
                outcome.append({
                    "model": model, "attack": attack, "explainer": explainer,
                    "eps": f"{eps:g}", "n flipped": count(g("cam_similarity", "flipped")),
                    "n held": count(g("cam_similarity", "held")),
                    "similarity, flipped": cell(g("cam_similarity", "flipped")),
                    "similarity, held": cell(g("cam_similarity", "held")),
                    "similarity difference": cell(g("cam_similarity", "flipped-held")),
                    "background share, flipped": cell(g("cam_background_share", "flipped")),
                    "background share, held": cell(g("cam_background_share", "held")),
                    "background difference": cell(g("cam_background_share",
                                                     "flipped-held"))})
        san = get(model, attack, explainer, 0.0, "sanity_rank_correlation")
        if san is not None and (model, explainer) not in checked:  # same for every attack
            checked.add((model, explainer))
            sanity.append({"model": model, "explainer": explainer, "n": count(san),
                           "rank correlation, trained vs randomised weights": cell(san)})
        for qualifier in [q for q in dict.fromkeys(sub["qualifier"]) if q.startswith("layer=")]:
            name = qualifier.removeprefix("layer=")
            cells = {f"ε = {e:g}": cell(get(model, attack, explainer, e, "cam_empty_share",
                                            qualifier), percent=True)
                     for e in sorted(set(sub["eps"]))}
            used = layers.get((model, explainer)) == name
            layer_rows.append({"model": model, "attack": attack, "explainer": explainer,
                               "layer": f"**{name}** (used)" if used else name,
                               "images": count(get(model, attack, explainer, 0.0,
                                                   "cam_empty_share", qualifier)), **cells})

    plot_attention(
        table, groups, PANELS, out / "attention.png",
        "Attention under attack; bars: 95% confidence intervals", norms)
    plot_attention(
        table, groups, OUTCOME_PANELS, out / "attention_outcome.png",
        "Attention shift by outcome of the attack; bars: 95% confidence intervals", norms)

    described = []
    for model, attack, explainer in groups:
        if attack == "clean":
            continue
        eps = sorted(set(table[(table["model"] == model) & (table["attack"] == attack)
                               & (table["explainer"] == explainer)]["eps"]))
        if len(eps) >= 2:
            described.append((model, attack, explainer, eps))
    family = Family([claim for model, attack, explainer, eps in described
                     for claim in claims(get, model, attack, explainer, eps)], alpha)
    sentences = [sentence(get, model, attack, explainer, eps, layers.get((model, explainer)),
                          family) for model, attack, explainer, eps in described]
    if sentences:
        sentences.insert(0, f"A change is stated where its 95% interval excludes 0 and its "
                            f"p-value, read off the interval, stays below {alpha:g} after "
                            f"Holm's correction over the {family.size} changes these "
                            f"sentences test; flipped and held predictions are compared "
                            f"where each group has at least {MIN_GROUP} images.\n")
    interval = ("95% bootstrap intervals over images; this rests on one trained model per "
                "model: the intervals say how precisely that model was measured, not what "
                "another training seed would give (`--set train.runs=N`, N ≥ 2, gives "
                "intervals over runs)" if runs == 1 else
                f"means over {runs} runs with 95% t intervals over runs; n counts the images "
                "of all runs")
    share_interval = ("Wilson interval" if runs == 1 else
                      "the t interval over runs, cut to [0, 100%]")
    md = ["## Attention under attack", "",
          f"Every value: mean [{interval}]. **Empty maps**: share of the explained images "
          f"whose map is all zero ({share_interval}). **Similarity, background share, "
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
        if plot_sanity(table, out / "attention_sanity.png"):
            md += ["![model-randomisation check](attention_sanity.png)", ""]
        md += [md_table(pd.DataFrame(sanity))]
    if layer_rows:
        md += ["### Empty maps at every layer offered", "",
               "Share of empty maps if the explainer used each layer it offers instead "
               "(the used layer in bold), clean (ε = 0) and attacked images.", "",
               md_table(pd.DataFrame(layer_rows))]
    return md
