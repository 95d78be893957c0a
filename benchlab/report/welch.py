"""The per-epoch Welch t-tests of one model against the baseline: their table, with
p-values Holm-corrected over the epochs, and the plain-language verdict sentence."""

from __future__ import annotations

import math

import pandas as pd

from benchlab import verdict
from benchlab.report.markdown import number, percent, table

__all__ = ["section", "sentence"]


def section(test: pd.DataFrame, baseline: str, other: str, alpha: float
            ) -> tuple[list[str], str]:
    """The per-epoch Welch table of ``test`` (test-accuracy rows) with its verdict
    sentence below it, and the sentence alone."""
    frame = verdict.per_epoch(test, baseline, other)
    rows, significant, better = [], [], []
    for r in frame.itertuples():
        sig = not math.isnan(r.p_holm) and r.p_holm < alpha
        if sig:
            significant.append(r.epoch)
            better.append(r.diff > 0)
        rows.append({"epoch": r.epoch, f"{other} (%)": percent(r.other),
                     f"{baseline} (%)": percent(r.baseline),
                     "difference (pp)": number(r.diff * 100, "+.2f"),
                     "t": number(r.t), "p": number(r.p, ".3g"),
                     "p (Holm)": number(r.p_holm, ".3g"),
                     f"p (Holm) < {alpha:g}": "yes" if sig else "no"})
    epochs = frame["epoch"].tolist()
    text = sentence(other, baseline, epochs, significant, better, alpha,
                    all(math.isnan(r.t) for r in frame.itertuples()))
    md = [f"### Welch t-test per epoch: {other} against {baseline} (test accuracy)", "",
          f"n = {int(frame['n_other'].max())} and {int(frame['n_baseline'].max())} runs. "
          f"p (Holm): corrected for the {len(epochs)} tests of this table.", "",
          table(pd.DataFrame(rows)), text, ""]
    return md, text


def span(epochs: list[int]) -> str:
    """Epochs as runs of consecutive ones: [1, 2, 3, 5] -> "1–3, 5"."""
    if not epochs:
        return "none"
    parts, start, prev = [], epochs[0], epochs[0]
    for e in epochs[1:] + [None]:
        if e is not None and e == prev + 1:
            prev = e
            continue
        parts.append(f"{start}" if start == prev else f"{start}–{prev}")
        if e is not None:
            start = prev = e
    return ", ".join(parts)


def sentence(other: str, baseline: str, epochs: list[int], significant: list[int],
             better: list[bool], alpha: float, untestable: bool) -> str:
    """What the table shows, in words: where ``other`` is significantly ahead of or
    behind ``baseline``, and what that says (and does not say) about the final epoch."""
    if untestable:
        return (f"**Verdict:** a t-test needs at least two runs per model; rerun with "
                f"`--set train.runs=N` (N ≥ 2) to compare {other} with {baseline}.")
    last = epochs[-1]
    ahead = [e for e, b in zip(significant, better) if b]
    behind = [e for e, b in zip(significant, better) if not b]
    of = f"epoch {last}, the only one" if len(epochs) == 1 else \
        f"epochs {epochs[0]}–{last}"
    if not significant:
        where = f"at {of}" if len(epochs) == 1 else f"at any of {of}"
        return (f"**Verdict:** {other} does not differ significantly from {baseline} "
                f"(Holm-corrected p < {alpha:g}) {where}. No "
                "significant difference is not evidence of equal accuracy: that takes the "
                "equivalence test.")
    if len(epochs) == 1:
        text = (f"**Verdict:** {other} is {'ahead of' if ahead else 'behind'} {baseline} at "
                f"{of} (Holm-corrected p < {alpha:g}). ")
    else:
        text = (f"**Verdict:** {other} differs significantly from {baseline} (Holm-corrected "
                f"p < {alpha:g}) at epoch(s) {span(significant)} of {epochs[0]}–{last}")
        if ahead:
            text += f"; it is ahead at {span(ahead)}"
        if behind:
            text += f"; behind at {span(behind)}"
        text += ". "
    final_sig = last in significant
    early_ahead = bool(ahead) and min(ahead) < last
    if early_ahead and not final_sig:
        text += (f"{other} leads early; the final-epoch difference is not significant (which "
                 "alone does not show equal accuracy: see the equivalence test).")
    elif final_sig:
        text += ("The final accuracies differ significantly, so the data do not support "
                 "\"same final accuracy\".")
    else:
        text += "The final-epoch difference is not significant."
    return text
