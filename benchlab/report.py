"""Tables and plots, drawn from a run's ``results.csv`` (and its saved artifacts) alone.

``benchlab report DIR`` calls :func:`render` and can therefore redraw everything of
a finished or interrupted run without running any job.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from benchlab import stats  # noqa: E402
from benchlab.store import atomic_write_text, read_results  # noqa: E402

DEFAULT_THRESHOLDS = (0.98, 0.99)


def _ordered(values: pd.Series) -> list[str]:
    return list(dict.fromkeys(v for v in values if isinstance(v, str)))


def _md_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_no data_\n"
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(_md_cell(v) for v in row.tolist()) + " |")
    return "\n".join(lines) + "\n"


def _md_cell(value: object) -> str:
    """A table cell: a '|' or a line break in a message would end the cell or the row."""
    return " ".join(str(value).split("\n")).replace("|", "\\|")


def epoch_statistics(results: pd.DataFrame) -> pd.DataFrame:
    """Mean, std, 95% CI and n of every per-epoch metric, per model and epoch."""
    rows = results[results["epoch"].notna()]
    out = []
    for (model, metric, epoch), group in rows.groupby(["model", "metric", "epoch"], sort=False):
        s = stats.summarize(group["value"].tolist())
        out.append({"model": model, "metric": metric, "epoch": int(epoch), "mean": s.mean,
                    "std": s.std, "ci95": s.ci95, "n": s.n})
    return pd.DataFrame(out, columns=["model", "metric", "epoch", "mean", "std", "ci95", "n"])


# --------------------------------------------------------------------------- training


def _plot_curves(table: pd.DataFrame, metric: str, models: list[str], runs: int, title: str,
                 path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model in models:
        t = table[(table["model"] == model) & (table["metric"] == metric)].sort_values("epoch")
        if t.empty:
            continue
        mean = t["mean"] * 100
        std = t["std"].fillna(0) * 100
        line, = ax.plot(t["epoch"], mean, marker="o", ms=3, label=model)
        ax.fill_between(t["epoch"], mean - std, mean + std, alpha=0.2, color=line.get_color())
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"{title.lower()} (%)")
    ax.set_title(f"{title}: mean ± 1 std over {runs} run{'s' if runs != 1 else ''}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _training_section(results: pd.DataFrame, out: Path, thresholds: tuple[float, ...],
                      alpha: float) -> list[str]:
    rows = results[results["epoch"].notna()].copy()
    if rows.empty:
        return []
    rows["epoch"] = rows["epoch"].astype(int)
    models = _ordered(rows["model"])
    table = epoch_statistics(rows)
    runs = int(rows.groupby("model")["run"].nunique().min())
    _plot_curves(table, "test_acc", models, runs, "Test accuracy", out / "test_accuracy.png")
    _plot_curves(table, "train_acc", models, runs, "Training accuracy",
                 out / "train_accuracy.png")
    table.to_csv(out / "epoch_statistics.csv", index=False)

    md = ["## Training", "",
          f"{runs} run(s) per model. Accuracy curves: mean ± 1 standard deviation. Training "
          "images/s counts all the runs that were trained at the same time (runs of one "
          "model train side by side, one per core).", "",
          "![test accuracy](test_accuracy.png)", "", "![training accuracy](train_accuracy.png)",
          ""]

    test = rows[rows["metric"] == "test_acc"]
    last_epoch = int(test["epoch"].max())
    final_rows = []
    for model in models:
        mt = test[test["model"] == model]
        final = stats.summarize(mt[mt["epoch"] == mt["epoch"].max()]["value"].tolist())
        means = mt.groupby("epoch")["value"].mean()
        best_epoch = int(means.idxmax())
        row = {"model": model, "runs": final.n,
               "final test acc. (%)": stats.format_mean_std(final, 100),
               "95% CI (±)": "–" if math.isnan(final.ci95) else f"{final.ci95 * 100:.2f}",
               "best epoch": best_epoch, "best mean test acc. (%)": f"{means.max() * 100:.2f}"}
        for thr in thresholds:
            reached = [stats.first_epoch_reaching(g["epoch"].tolist(), g["value"].tolist(), thr)
                       for _, g in mt.groupby("run")]
            hits = [e for e in reached if e is not None]
            mean = f"{sum(hits) / len(hits):.2f}" if hits else "never"
            row[f"epochs to {thr * 100:g}%"] = f"{mean} ({len(hits)}/{len(reached)} runs)"
        speed = rows[(rows["model"] == model) & (rows["metric"] == "images_per_s")]["value"]
        row["training images/s"] = f"{speed.mean():.0f}" if len(speed) else "–"
        final_rows.append(row)
    md += [f"### Final test accuracy (epoch {last_epoch})", "", _md_table(pd.DataFrame(final_rows))]

    stat_rows = table[table["metric"] == "test_acc"].copy()
    for column in ("mean", "std", "ci95"):
        stat_rows[column] = [_pct(v) for v in stat_rows[column]]
    md += ["### Test accuracy per epoch (%)", "",
           _md_table(stat_rows[["model", "epoch", "mean", "std", "ci95", "n"]])]

    if len(models) >= 2:
        baseline = models[0]
        for other in models[1:]:
            md += _welch_section(test, baseline, other, alpha)
    return md


def _welch_section(test: pd.DataFrame, baseline: str, other: str, alpha: float) -> list[str]:
    rows, significant, better = [], [], []
    epochs = sorted(set(test["epoch"]))
    for epoch in epochs:
        a = test[(test["model"] == other) & (test["epoch"] == epoch)]["value"].tolist()
        b = test[(test["model"] == baseline) & (test["epoch"] == epoch)]["value"].tolist()
        w = stats.welch(a, b)
        diff = (sum(a) / len(a) - sum(b) / len(b)) * 100 if a and b else math.nan
        sig = not math.isnan(w.p) and w.p < alpha
        if sig:
            significant.append(epoch)
            better.append(diff > 0)
        rows.append({"epoch": epoch, f"{other} (%)": f"{sum(a) / len(a) * 100:.2f}" if a else "–",
                     f"{baseline} (%)": f"{sum(b) / len(b) * 100:.2f}" if b else "–",
                     "difference (pp)": f"{diff:+.2f}",
                     "t": "–" if math.isnan(w.t) else f"{w.t:.2f}",
                     "p": "–" if math.isnan(w.p) else f"{w.p:.3g}",
                     f"p < {alpha:g}": "yes" if sig else "no"})
    md = [f"### Welch t-test: {other} against {baseline} (test accuracy)", "",
          _md_table(pd.DataFrame(rows))]
    md += [_welch_sentence(other, baseline, epochs, significant, better, alpha,
                           all(r["t"] == "–" for r in rows)), ""]
    return md


def _pct(value: float) -> str:
    return "–" if math.isnan(value) else f"{value * 100:.2f}"


def _span(epochs: list[int]) -> str:
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


def _welch_sentence(other: str, baseline: str, epochs: list[int], significant: list[int],
                    better: list[bool], alpha: float, untestable: bool) -> str:
    if untestable:
        return (f"**Verdict:** a t-test needs at least two runs per model; rerun with "
                f"`--set train.runs=N` (N ≥ 2) to compare {other} with {baseline}.")
    last = epochs[-1]
    ahead = [e for e, b in zip(significant, better) if b]
    behind = [e for e, b in zip(significant, better) if not b]
    if not significant:
        return (f"**Verdict:** {other} does not differ significantly from {baseline} "
                f"(p < {alpha:g}) at any of epochs {epochs[0]}–{last}: with these runs the data "
                "show neither faster convergence nor a different final accuracy.")
    text = (f"**Verdict:** {other} differs significantly from {baseline} (p < {alpha:g}) at "
            f"epoch(s) {_span(significant)} of {epochs[0]}–{last}")
    if ahead:
        text += f"; it is ahead at {_span(ahead)}"
    if behind:
        text += f"; behind at {_span(behind)}"
    text += ". "
    final_sig = last in significant
    early_ahead = bool(ahead) and min(ahead) < last
    if early_ahead and not final_sig:
        text += (f"The data support \"faster convergence, same final accuracy\": {other} "
                 f"leads early, and the final-epoch difference is not significant.")
    elif final_sig:
        text += ("The final accuracies differ significantly, so the data do not support "
                 "\"same final accuracy\".")
    else:
        text += "The final-epoch difference is not significant."
    return text


# --------------------------------------------------------------------------- robustness


def _robustness_section(results: pd.DataFrame, out: Path) -> list[str]:
    rows = results[results["attack"].notna() & results["explainer"].isna()
                   & results["epoch"].isna()]
    if rows.empty:
        return []
    models, attacks = _ordered(rows["model"]), _ordered(rows["attack"])
    table = []
    for model in models:
        for attack in attacks:
            sub = rows[(rows["model"] == model) & (rows["attack"] == attack)]
            per_eps = sub[sub["eps"].notna()]
            speed = sub[sub["metric"] == "images_per_s"]["value"]
            for eps in sorted(set(per_eps["eps"])):
                cell = per_eps[per_eps["eps"] == eps]

                def fmt(metric: str, scale: float = 1.0, digits: int = 2,
                        cell: pd.DataFrame = cell) -> str:
                    values = cell[cell["metric"] == metric]["value"].tolist()
                    return stats.format_mean_std(stats.summarize(values), scale, digits) \
                        if values else "–"

                table.append({"model": model, "attack": attack, "eps": f"{eps:g}",
                              "accuracy (%)": fmt("accuracy", 100),
                              "success rate (%)": fmt("success_rate", 100),
                              "mean L∞": fmt("linf", 1, 3), "mean L2": fmt("l2", 1, 3),
                              "attack images/s": f"{speed.mean():.0f}" if len(speed) else "–"})
    frame = pd.DataFrame(table)
    frame.to_csv(out / "robustness.csv", index=False)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    acc = rows[rows["metric"] == "accuracy"]
    for model in models:
        for attack in attacks:
            sub = acc[(acc["model"] == model) & (acc["attack"] == attack)]
            if sub.empty:
                continue
            g = sub.groupby("eps")["value"]
            mean, std = g.mean() * 100, g.std().fillna(0) * 100
            line, = ax.plot(mean.index, mean.values, marker="o", label=f"{model} · {attack}")
            ax.fill_between(mean.index, mean - std, mean + std, alpha=0.15,
                            color=line.get_color())
    ax.set_xlabel("ε (L∞, [0, 1] pixel scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy under attack")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "robustness.png", dpi=120)
    plt.close(fig)
    n = int(rows["job"].nunique())
    return ["## Robustness", "",
            "Accuracy on the attacked test images (ε = 0: clean images); success rate: share "
            "of the correctly classified images that the attack makes wrong; L∞/L2: mean "
            "perturbation size per image; attack images/s: adversarial images made per second "
            f"(every image at every ε counts once). {n} attack job(s).", "",
            "![robustness](robustness.png)", "", _md_table(frame)]


# --------------------------------------------------------------------------- attention


def _attention_section(results: pd.DataFrame, out: Path) -> list[str]:
    rows = results[results["explainer"].notna()]
    if rows.empty:
        return []
    models, explainers = _ordered(rows["model"]), _ordered(rows["explainer"])
    rows = rows.assign(attack=rows["attack"].fillna("clean"))
    attacks = _ordered(rows["attack"])
    table, lines = [], []
    for model in models:
        for attack in attacks:
            for explainer in explainers:
                sub = rows[(rows["model"] == model) & (rows["attack"] == attack)
                           & (rows["explainer"] == explainer) & rows["eps"].notna()]
                if sub.empty:
                    continue
                means = sub.groupby(["eps", "metric"])["value"].mean().unstack()
                for eps, r in means.iterrows():
                    table.append({"model": model, "attack": attack, "explainer": explainer,
                                  "eps": f"{eps:g}",
                                  "similarity to clean (Pearson)": f"{r.get('cam_similarity'):.3f}",
                                  "background share": f"{r.get('cam_background_share'):.3f}",
                                  "mean intensity": f"{r.get('cam_intensity'):.3f}"})
                lines.append(_attention_sentence(model, attack, explainer, means))
    frame = pd.DataFrame(table)
    frame.to_csv(out / "attention.csv", index=False)

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for (metric, label), ax in zip(
            [("cam_similarity", "similarity to clean map (Pearson r)"),
             ("cam_background_share", "share of map on background"),
             ("cam_intensity", "mean map intensity")], axes):
        for model in models:
            for attack in attacks:
                for explainer in explainers:
                    sub = rows[(rows["model"] == model) & (rows["attack"] == attack)
                               & (rows["explainer"] == explainer) & (rows["metric"] == metric)]
                    if sub.empty:
                        continue
                    g = sub.groupby("eps")["value"].mean()
                    ax.plot(g.index, g.values, marker="o", label=f"{model} · {attack}")
        ax.set_xlabel("ε")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "attention.png", dpi=120)
    plt.close(fig)
    return ["## Attention under attack", "",
            "Similarity: Pearson correlation between the clean and the adversarial map of each "
            "image; background share: share of the map's mass on pixels where the clean digit "
            "is dark; intensity: mean map value (a fading map gets darker).", "",
            "![attention](attention.png)", "", _md_table(frame), *lines, ""]


def _attention_sentence(model: str, attack: str, explainer: str, means: pd.DataFrame) -> str:
    eps = sorted(means.index)
    if len(eps) < 2:
        return f"- {model} · {attack}: only clean images were explained."
    lo, hi = eps[0], eps[-1]
    sim = means.loc[hi, "cam_similarity"]
    bg0, bg1 = means.loc[lo, "cam_background_share"], means.loc[hi, "cam_background_share"]
    i0, i1 = means.loc[lo, "cam_intensity"], means.loc[hi, "cam_intensity"]
    drift = "drifts to the background" if bg1 > bg0 + 0.02 else \
        "moves onto the strokes" if bg1 < bg0 - 0.02 else "keeps its background share"
    fade = "fades" if i1 < 0.8 * i0 else "grows stronger" if i1 > 1.2 * i0 else "keeps its strength"
    return (f"- **{model} · {attack} · {explainer}:** from ε = {lo:g} to ε = {hi:g} attention "
            f"{drift} ({bg0:.2f} → {bg1:.2f} of the map on background) and {fade} (mean "
            f"intensity {i0:.3f} → {i1:.3f}); its correlation with the clean map is {sim:.2f} "
            f"at ε = {hi:g}.")


def _grids(out: Path) -> list[str]:
    from benchlab.grid import draw_grid

    md = []
    for path in sorted((out / "artifacts").glob("explain-*-r00-*.pt")):
        data = torch.load(path, map_location="cpu", weights_only=True)
        name = path.stem.removeprefix("explain-").replace("-r00", "")
        rows = ["clean"] + [f"ε = {e:g}" for e in data["eps"].tolist()[1:]]
        png = out / f"grid_{name}.png"
        draw_grid(data["images"], data["maps"], data["preds"], data["confidences"], rows,
                  title=name.replace("-", " · "), path=png)
    # Grids drawn earlier stay listed when their artifacts are gone (a copied run).
    for png in sorted(out.glob("grid_*.png")):
        md += [f"![{png.stem.removeprefix('grid_')}]({png.name})", ""]
    return ["## Grad-CAM grids (run 0)", "", *md] if md else []


def _failures(out: Path) -> list[str]:
    path = out / "jobs.csv"
    if not path.exists():
        return []
    jobs = pd.read_csv(path)
    failed = jobs[jobs["status"] == "failed"]
    if failed.empty:
        return []
    return ["## Failures", "", f"{len(failed)} of {len(jobs)} job(s) failed; every other job "
            "kept its results.", "",
            _md_table(failed[["id", "message"]].rename(columns={"id": "job"}))]


def render(out: Path) -> Path:
    """Write summary.md and the plots of the run in ``out``; return the summary's path."""
    out = Path(out)
    results = read_results(out)
    thresholds, alpha, title, description = DEFAULT_THRESHOLDS, 0.05, out.name, ""
    suite_file = out / "suite.yaml"
    if suite_file.exists():
        suite = yaml.safe_load(suite_file.read_text()) or {}
        report = suite.get("report") or {}
        thresholds = tuple(report.get("thresholds", thresholds))
        alpha = float(report.get("alpha", alpha))
        title, description = suite.get("name", title), suite.get("description", "")
    md = [f"# {title}", ""]
    if description:
        md += [description.strip(), ""]
    md += _failures(out)
    md += _training_section(results, out, thresholds, alpha)
    md += _robustness_section(results, out)
    md += _attention_section(results, out)
    md += _grids(out)
    if len(md) <= 3:
        md += ["_No finished jobs yet._", ""]
    path = out / "summary.md"
    atomic_write_text(path, "\n".join(md).rstrip() + "\n")
    return path
