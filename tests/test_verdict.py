"""The claim's parts, tested on small hand-built results tables."""

from __future__ import annotations

import math
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from benchlab import stats, verdict
from benchlab.report import render
from benchlab.report.convergence import section

SETTINGS = verdict.Settings(alpha=0.05, step_thresholds=(0.97, 0.98), auc_epochs=1.0,
                            margin_pp=0.1)


def curve_frame(curves: dict[str, list[list[float]]], every: int = 100,
                per_epoch: int = 400) -> pd.DataFrame:
    """Rows of step_test_acc: curves[model][run] holds the accuracy at 0, every, ..."""
    rows = []
    for model, runs in curves.items():
        for run, values in enumerate(runs):
            for i, value in enumerate(values):
                step = i * every
                rows.append({"job": f"train-{model}-r{run:02d}", "model": model, "run": run,
                             "seed": run + 1, "epoch": step / per_epoch, "step": step,
                             "metric": "step_test_acc", "value": value})
    return pd.DataFrame(rows)


def test_run_statistics_by_hand():
    frame = curve_frame({"m": [[0.1, 0.96, 0.975, 0.985, 0.99],    # 97% at 200, 98% at 300
                               [0.1, 0.90, 0.95, 0.965, 0.975]]})  # 98% never: counted at 500
    per_run = verdict.run_statistics(frame, SETTINGS)
    assert per_run["steps to 97%"].tolist() == [200.0, 400.0]
    assert per_run["steps to 98%"].tolist() == [300.0, 500.0]
    assert per_run["reached 98%"].tolist() == [True, False]
    # window: the first epoch, steps 0..400 (trapezoids of width 100)
    auc = (0.1 + 0.96) / 2 + (0.96 + 0.975) / 2 + (0.975 + 0.985) / 2 + (0.985 + 0.99) / 2
    assert per_run["auc"].iloc[0] == pytest.approx(auc / 4)
    assert verdict.steps_per_epoch(frame) == 400


def _runs(steps_to_98: list[int], n_points: int = 8) -> list[list[float]]:
    """Curves that reach 97% one evaluation before they reach 98% (at the given step)."""
    out = []
    for s in steps_to_98:
        k = s // 100
        out.append([0.5 if i < k - 1 else 0.975 if i == k - 1 else 0.985
                    for i in range(n_points)])
    return out


def test_convergence_compares_each_statistic_and_holm_corrects_the_family():
    frame = curve_frame({"plain": _runs([500, 600, 500, 600, 700, 600]),
                         "bn": _runs([200, 300, 200, 300, 200, 300])})
    per_run = verdict.run_statistics(frame, SETTINGS)
    comparisons = verdict.convergence(per_run, "plain", "bn", SETTINGS)
    assert [c.statistic for c in comparisons] == ["steps to 97%", "steps to 98%", "auc"]
    c98 = comparisons[1]
    bn = np.array([200, 300, 200, 300, 200, 300.0])
    plain = np.array([500, 600, 500, 600, 700, 600.0])
    assert c98.diff == pytest.approx(bn.mean() - plain.mean())
    assert c98.p == pytest.approx(scipy_stats.ttest_ind(bn, plain, equal_var=False).pvalue)
    assert [c.p_holm for c in comparisons] == pytest.approx(stats.holm([c.p for c in comparisons]))
    assert c98.ci[0] < c98.diff < c98.ci[1] < 0
    assert verdict.convergence_outcome(comparisons, 0.05) == "faster"
    line = verdict.convergence_line(c98, "plain", "bn", SETTINGS, "the first 1000 test images",
                                    400)
    assert "n = 6" in line and "Holm p" in line and "**bn faster**" in line


def test_runs_that_never_converge_are_counted_not_dropped():
    never = [[0.5] * 8] * 3  # counted at step 800: one evaluation past the last (700)
    frame = curve_frame({"plain": never, "bn": _runs([200, 300, 200])})
    per_run = verdict.run_statistics(frame, SETTINGS)
    c98 = verdict.convergence(per_run, "plain", "bn", SETTINGS)[1]
    assert c98.never == (0, 3) and c98.baseline.tolist() == [800.0] * 3
    line = verdict.convergence_line(c98, "plain", "bn", SETTINGS, "x", 400)
    assert "never reached: bn 0/3, plain 3/3" in line


def test_inconclusive_convergence_says_how_many_runs_would_decide_it():
    frame = curve_frame({"plain": _runs([300, 500, 400]), "bn": _runs([200, 500, 400])})
    comparisons = verdict.convergence(verdict.run_statistics(frame, SETTINGS), "plain", "bn",
                                      SETTINGS)
    c98 = comparisons[1]
    assert verdict.convergence_outcome(comparisons, 0.05) == "inconclusive"
    sd = stats.pooled_sd(c98.other, c98.baseline)
    expected = stats.runs_needed(lambda n: stats.t_test_power(c98.diff, sd, n, 0.05 / 3))
    assert c98.runs_needed == expected and expected > 3
    line = verdict.convergence_line(c98, "plain", "bn", SETTINGS, "x", 400)
    assert "**inconclusive**" in line and f"about {expected} runs per model" in line


def final_frame(a: list[float], b: list[float]) -> pd.DataFrame:
    rows = [{"model": m, "run": r, "seed": r + 1, "epoch": 2, "value": v}
            for m, values in (("bn", a), ("plain", b)) for r, v in enumerate(values)]
    rows += [{"model": m, "run": r, "seed": r + 1, "epoch": 1, "value": 0.5}
             for m in ("bn", "plain") for r in range(len(a))]
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("a", "b", "outcome"), [
    ([0.9900, 0.9902, 0.9898, 0.9901], [0.9901, 0.9899, 0.9900, 0.9902], "equivalent"),
    ([0.9950, 0.9952, 0.9948, 0.9951], [0.9901, 0.9899, 0.9900, 0.9902], "different"),
    ([0.9900, 0.9930, 0.9870, 0.9905], [0.9890, 0.9920, 0.9880, 0.9900], "inconclusive"),
])
def test_equivalence_tells_three_outcomes_apart(a, b, outcome):
    result = verdict.equivalence(final_frame(a, b), "plain", "bn", SETTINGS)
    assert result.epoch == 2 and result.outcome == outcome
    assert result.tost.p == pytest.approx(stats.tost(a, b, 0.001).p)
    line = verdict.equivalence_line(result, "plain", "bn", SETTINGS)
    assert "n = 4" in line and "TOST p" in line and "±0.1 pp" in line
    if outcome == "inconclusive":
        sd = stats.pooled_sd(a, b)
        assert result.runs_needed == stats.runs_needed(lambda n: stats.tost_power(sd, 0.001, n))
        assert f"about {result.runs_needed} runs per model" in line


def test_no_margin_no_equivalence_test():
    settings = verdict.Settings(margin_pp=None)
    assert verdict.equivalence(final_frame([0.9, 0.91], [0.9, 0.92]), "plain", "bn",
                               settings) is None


def test_per_epoch_table_holds_holm_corrected_p_values():
    frame = final_frame([0.9900, 0.9930, 0.9870, 0.9905], [0.9890, 0.9920, 0.9880, 0.9900])
    frame.loc[frame["epoch"] == 1, "value"] = [0.95, 0.951, 0.949, 0.95, 0.90, 0.901, 0.899, 0.9]
    table = verdict.per_epoch(frame, "plain", "bn")
    assert table["p_holm"].tolist() == pytest.approx(stats.holm(table["p"].tolist()))
    assert table["p_holm"].iloc[0] < 0.05 < table["p_holm"].iloc[1]


def test_summary_opens_with_the_verdict(tmp_path):
    rng = np.random.default_rng(0)
    curves = curve_frame({"plain": _runs([500, 600, 500, 600]),
                          "bn": _runs([200, 300, 200, 300])})
    curves["job"] = curves["job"]
    epochs = []
    for model, base in (("plain", 0.990), ("bn", 0.990)):
        for run in range(4):
            for epoch in (1, 2):
                for metric, value in (("test_acc", base + rng.normal(0, 2e-4)),
                                      ("train_acc", 0.98), ("epoch_time_s", 10.0)):
                    epochs.append({"job": f"train-{model}-r{run:02d}", "model": model,
                                   "run": run, "seed": run + 1, "epoch": epoch, "step": math.nan,
                                   "metric": metric, "value": value})
            curves.loc[(curves["model"] == model) & (curves["run"] == run), "job"] = \
                f"train-{model}-r{run:02d}"
    timing = curves.assign(metric="step_eval_time_s", value=0.05)
    frame = pd.concat([pd.DataFrame(epochs), curves, timing], ignore_index=True)
    for column in ("dataset", "attack", "eps", "explainer"):
        frame[column] = math.nan
    frame["dataset"] = "toy"
    frame.to_csv(tmp_path / "results.csv", index=False)
    (tmp_path / "suite.yaml").write_text(
        "name: toy\ndescription: a claim\ndataset: {name: toy, test_size: 500}\n"
        "train: {eval_every: 100, eval_size: 1000}\n"
        "report: {alpha: 0.05, equivalence_margin: 0.1}\n")
    summary = render(tmp_path).read_text()
    head = summary.split("## Training")[0]
    assert head.index("## Verdict") < head.index("Faster convergence") \
        < head.index("Same final accuracy") < head.index("Per-epoch test accuracy")
    assert "the first 500 test images" in head and "**bn faster**" in head
    assert "equivalent within ±0.1 pp" in head
    assert "p (Holm)" in summary and "Cost of the curves" in summary
    assert "bn 2.0% (± 0.0, n = 4 runs; 50 ms per evaluation)" in summary
    assert (tmp_path / "test_accuracy_steps.png").stat().st_size > 1000
    assert (tmp_path / "convergence.csv").exists()


def test_a_threshold_no_run_reached_says_so():
    never = [[0.5] * 8] * 3
    frame = curve_frame({"plain": never, "bn": never})
    c98 = verdict.convergence(verdict.run_statistics(frame, SETTINGS), "plain", "bn",
                              SETTINGS)[1]
    line = verdict.convergence_line(c98, "plain", "bn", SETTINGS, "x", 400)
    assert "no run of either model reached it" in line


def test_an_early_window_the_curves_do_not_reach_is_said_in_words():
    """One epoch of 400 steps with a curve point every 150: the last point (300) is
    before the end of the window (400), so the mean over it is undefined for every run."""
    curves = {m: [[0.1, 0.9, 0.97], [0.1, 0.91, 0.975]] for m in ("a", "b")}
    frame = curve_frame(curves, every=150)
    per_run = verdict.run_statistics(frame, SETTINGS)
    assert per_run["auc"].isna().all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "Mean of empty slice" would be one
        [*_, auc] = verdict.convergence(per_run, "a", "b", SETTINGS)
    line = verdict.convergence_line(auc, "a", "b", SETTINGS, "the test split", 400)
    assert "nan" not in line.lower()
    assert line.startswith("mean accuracy over the first 1 epoch(s) (steps 0–400, area under "
                           "the curve) on the test split: not tested (undefined for 2 of 2 runs"
                           " of b and 2 of 2 of a: their learning curves end before step 400")
    assert verdict.convergence_outcome([auc], 0.05) == "inconclusive"


def test_one_run_per_model_gives_means_without_a_spread():
    frame = curve_frame({"a": [[0.1, 0.96, 0.975, 0.985, 0.99]],
                         "b": [[0.1, 0.90, 0.95, 0.965, 0.975]]})
    per_run = verdict.run_statistics(frame, SETTINGS)
    for c in verdict.convergence(per_run, "a", "b", SETTINGS):
        line = verdict.convergence_line(c, "a", "b", SETTINGS, "the test split", 400)
        assert "nan" not in line.lower() and "fewer than two runs per model: b 1, a 1" in line


def test_the_convergence_table_of_one_run_per_model_has_no_nan():
    frame = curve_frame({"a": [[0.1, 0.96, 0.975, 0.985, 0.99]],
                         "b": [[0.1, 0.90, 0.95, 0.965, 0.975]]})
    for column in ("dataset", "attack", "eps", "explainer"):
        frame[column] = math.nan
    with tempfile.TemporaryDirectory() as out:
        _, md = section(frame, Path(out), ["a", "b"], SETTINGS, "the test split")
    text = "\n".join(md)
    assert "nan" not in text.lower()
    assert "no interval or test can be computed: those cells are dashes" in text
    rows = [line for line in text.splitlines() if line.startswith("| steps to 97%")]
    assert len(rows) == 1 and rows[0].split("|")[6].strip() == "–"  # the bootstrap CI


def test_a_curve_of_step_0_alone_says_so_without_a_step_count():
    frame = curve_frame({m: [[0.1], [0.12]] for m in ("a", "b")}, every=150)
    per_run = verdict.run_statistics(frame, SETTINGS)
    [*_, auc] = verdict.convergence(per_run, "a", "b", SETTINGS)
    line = verdict.convergence_line(auc, "a", "b", SETTINGS, "the test split",
                                    verdict.steps_per_epoch(frame))
    assert "nan" not in line.lower()
    assert "(area under the curve) on the test split: not tested" in line
    assert "their learning curves hold no point after step 0" in line


def test_lead_step_says_when_an_early_window_difference_was_made():
    steps = [0, 100, 200, 300, 400]
    # a constant difference: the area grows linearly, 90% of it by step 360 -> first
    # evaluated step at or past it: 400
    assert stats.lead_step(steps, [0.01] * 5, 400) == 400
    # all of the difference in the first 100 steps (then none): made by step 100
    assert stats.lead_step(steps, [0.04, 0.0, 0.0, 0.0, 0.0], 400) == 100
    # a negative difference reads the same way (share of the area, in its sign)
    assert stats.lead_step(steps, [-0.04, 0.0, 0.0, 0.0, 0.0], 400) == 100
    assert math.isnan(stats.lead_step(steps, [0.0] * 5, 400))   # no difference to place
    assert math.isnan(stats.lead_step(steps, [0.01] * 5, 500))  # window not covered


def _front_loaded(lead: float, runs: int = 6) -> list[list[float]]:
    """Curves ahead by ``lead`` at step 100 only, equal from step 200 on (every 100
    steps, 400 per epoch), with run-to-run noise that keeps the steps-to-threshold tied."""
    rng = np.random.default_rng(3)
    return [[0.1, 0.9 + lead + rng.normal(0, 0.002), 0.975, 0.985, 0.99, 0.99, 0.99, 0.99]
            for _ in range(runs)]


def test_the_headline_names_the_statistic_that_showed_a_difference_and_the_others():
    frame = curve_frame({"plain": _front_loaded(0.0), "bn": _front_loaded(0.05)})
    for column in ("dataset", "attack", "eps", "explainer"):
        frame[column] = math.nan
    with tempfile.TemporaryDirectory() as out:
        lines, _ = section(frame, Path(out), ["plain", "bn"], SETTINGS, "the test split")
    head = lines[0]
    assert "converges faster" not in head
    assert "shown by 1 of 3 statistics" in head
    assert "**bn has higher test accuracy than plain early in training**" in head
    assert "90% of it made by step 200 of 400" in head
    assert "not shown (inconclusive): steps to 97%, steps to 98%" in head
    assert lines[-1].endswith("→ **bn higher**")


def test_the_one_sided_readings_of_the_final_accuracy_are_the_halves_of_tost():
    rng = np.random.default_rng(0)
    bn = 0.9855 + rng.normal(0, 0.0016, 24)   # 0.07 pp below, as in the 24-run study
    plain = 0.9862 + rng.normal(0, 0.0008, 24)
    rows = [{"model": m, "run": r, "seed": r + 1, "epoch": 2, "value": v}
            for m, values in (("bn", bn), ("plain", plain)) for r, v in enumerate(values)]
    claim = verdict.equivalence(pd.DataFrame(rows), "plain", "bn", SETTINGS)
    up, down = verdict.one_sided_lines(claim, "plain", "bn", SETTINGS)
    # non-superiority: H0 diff >= +margin, Welch's one-sided test by hand
    se = math.sqrt(bn.var(ddof=1) / 24 + plain.var(ddof=1) / 24)
    df = se**4 / ((bn.var(ddof=1) / 24) ** 2 / 23 + (plain.var(ddof=1) / 24) ** 2 / 23)
    p_up = scipy_stats.t.cdf((bn.mean() - plain.mean() - 0.001) / se, df)
    assert claim.tost.p_upper == pytest.approx(p_up)
    assert f"p = {verdict.fmt_p(p_up)}" in up and "non-superiority" in up
    assert up.endswith("**shown**") == (p_up < 0.05)
    assert "non-inferiority" in down
    assert down.endswith("**shown**") == (claim.tost.p_lower < 0.05)
    assert max(claim.tost.p_upper, claim.tost.p_lower) == claim.tost.p
