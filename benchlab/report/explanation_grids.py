"""The "Explanation grids (run 0)" section: one clean-versus-adversarial grid per
explain job of run 0 (:mod:`benchlab.report.grid`), under a heading per explainer."""

from __future__ import annotations

from pathlib import Path

from benchlab.report.grid import draw_grid
from benchlab.report.loading import explain_artifacts

__all__ = ["section"]


def section(out: Path, explainers: list[str]) -> list[str]:
    """Draws ``grid_<model>-<attack>-<explainer>.png`` from each saved artifact and lists
    every grid in ``out``; empty when there is none."""
    for name, data in explain_artifacts(out):
        rows = ["clean"] + [f"ε = {e:g}" for e in data["eps"].tolist()[1:]]
        draw_grid(data["images"], data["maps"], data["preds"], data["confidences"], rows,
                  title=name.replace("-", " · "), path=out / f"grid_{name}.png",
                  labels=data.get("labels"))
    # Grids drawn earlier stay listed when their artifacts are gone (a copied run).
    pngs = sorted(out.glob("grid_*.png"))
    if not pngs:
        return []
    md = ["## Explanation grids (run 0)", "",
          "Each column is one test image: the clean image (top row) and its adversarial "
          "versions at growing ε, under the explainer's map. A caption reads "
          "prediction (confidence); the top caption also gives the true label. Red: the "
          "prediction is wrong.", ""]
    by_explainer: dict[str, list[Path]] = {}
    for png in pngs:
        stem = png.stem.removeprefix("grid_")
        # The longest known explainer key that ends the name (keys may contain '-').
        owner = max((e for e in explainers if stem.endswith(f"-{e}")), key=len, default="")
        by_explainer.setdefault(owner, []).append(png)
    for explainer in [*explainers, ""]:
        if explainer not in by_explainer:
            continue
        md += [f"### {explainer or 'other'}", ""]
        for png in by_explainer[explainer]:
            md += [f"![{png.stem.removeprefix('grid_')}]({png.name})", ""]
    return md
