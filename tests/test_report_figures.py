"""The report's figures: distinct lines past ten, ε of each norm on its own axis, and
titles that say how many runs they summarise."""

from __future__ import annotations

import pandas as pd

from benchlab.report.plots import _over_runs, line_styles, plot_attention


def test_lines_stay_distinct_past_ten():
    groups = [(model, attack, explainer) for model in ("cnn", "cnn_bn")
              for attack in ("fgsm", "PGD", "APGD-CE", "APGD-T", "FAB")
              for explainer in ("gradcam", "IntegratedGradients", "random")]
    styles = line_styles(groups)
    looks = {(tuple(s["color"]), s["linestyle"], s["marker"]) for s in styles.values()}
    assert len(looks) == len(groups) == 30
    # 15 (attack, explainer) pairs: 15 colours, none reused by another pair
    colours = {(a, e): tuple(styles[("cnn", a, e)]["color"]) for _, a, e in groups}
    assert len(set(colours.values())) == 15
    assert styles[("cnn", "PGD", "random")]["alpha"] < 1.0  # the control, faded


def _estimates(attacks: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"model": "cnn", "attack": attack, "explainer": "gradcam",
                          "base": "cam_similarity", "qualifier": "", "eps": e,
                          "value": 1.0 - e / 4, "low": 0.9 - e / 4, "high": 1.0}
                         for attack, eps in attacks.items() for e in eps])


def test_each_norm_gets_its_own_axes(tmp_path):
    table = _estimates({"fgsm": [0.0, 0.1, 0.3], "PGDL2": [0.0, 1.0, 3.0]})
    groups = [("cnn", "fgsm", "gradcam"), ("cnn", "PGDL2", "gradcam")]
    drawn = plot_attention(table, groups, [("cam_similarity", "similarity")],
                           tmp_path / "a.png", "t", {"fgsm": "linf", "PGDL2": "l2"})
    assert drawn == [("similarity, L∞", "ε (L∞)"), ("similarity, L2", "ε (L2)")]
    assert (tmp_path / "a.png").is_file()
    one_norm = plot_attention(table[table["attack"] == "fgsm"], groups[:1],
                              [("cam_similarity", "similarity")], tmp_path / "b.png", "t",
                              {"fgsm": "linf"})
    assert one_norm == [("similarity", "ε (L∞)")]


def test_a_one_run_title_does_not_claim_a_spread():
    assert _over_runs(1) == "one run (one trained model: no spread over runs)"
    assert _over_runs(3) == "mean ± 1 std over 3 runs"
