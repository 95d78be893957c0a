"""Robustness over training seeds: per-run accuracies compared with Welch tests,
Holm-corrected per pair of models, TOST with a margin, and the words of the verdict."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import yaml

from benchlab import robust_verdict
from benchlab.report import render
from benchlab.verdict import Settings

RUNS = 5


def _rows(model: str, attack: str, eps: float, accuracies) -> list[dict]:
    return [{"job": f"attack-{model}-r{run:02d}-{attack}", "model": model, "dataset": "mnist",
             "run": run, "seed": run + 1, "epoch": None, "step": None, "attack": attack,
             "eps": eps, "explainer": None, "metric": "accuracy", "value": float(acc)}
            for run, acc in enumerate(accuracies)]


def _study(rng: np.random.Generator) -> pd.DataFrame:
    """cnn_bn 10 points less robust under fgsm at 0.1, the same at 0.3 and under pgd."""
    def noise(mean, sd=0.01):
        return np.clip(mean + sd * rng.standard_normal(RUNS), 0, 1)

    rows = []
    for model, shift in (("cnn", 0.0), ("cnn_bn", -0.10)):
        rows += _rows(model, "fgsm", 0.0, noise(0.99, 0.002))
        rows += _rows(model, "fgsm", 0.1, noise(0.80 + shift))
        rows += _rows(model, "fgsm", 0.3, noise(0.30, 0.05))
        rows += _rows(model, "pgd", 0.1, noise(0.50, 0.05))
    return pd.DataFrame(rows)


def test_each_eps_is_a_welch_test_over_runs_holm_corrected_per_pair():
    rows = _study(np.random.default_rng(0))
    found = robust_verdict.compare(rows, "cnn", "cnn_bn", ["fgsm", "pgd"], Settings())
    assert [(c.attack, c.eps) for c in found] == [("fgsm", 0.1), ("fgsm", 0.3), ("pgd", 0.1)]
    ps = []
    for c in found:
        a = rows[(rows.model == "cnn_bn") & (rows.attack == c.attack) & (rows.eps == c.eps)]
        b = rows[(rows.model == "cnn") & (rows.attack == c.attack) & (rows.eps == c.eps)]
        expected = scipy.stats.ttest_ind(a.value, b.value, equal_var=False)
        assert c.p == pytest.approx(expected.pvalue, rel=1e-9)
        assert c.diff == pytest.approx(a.value.mean() - b.value.mean())
        assert c.n == (RUNS, RUNS)
        ps.append(c.p)
    # Holm by hand: sorted p times (m - i), running maximum, capped at 1
    order = np.argsort(ps)
    adjusted = np.empty(3)
    running = 0.0
    for i, k in enumerate(order):
        running = max(running, min(1.0, (3 - i) * ps[k]))
        adjusted[k] = running
    assert [c.p_holm for c in found] == pytest.approx(adjusted.tolist())
    assert [c.outcome for c in found] == ["less robust", "inconclusive", "inconclusive"]
    assert found[0].ci95[1] < 0 and all(c.runs_needed is None or c.runs_needed >= 2
                                        for c in found[1:])


def test_the_verdict_line_names_what_was_shown_and_what_was_not():
    rows = _study(np.random.default_rng(0))
    found = robust_verdict.compare(rows, "cnn", "cnn_bn", ["fgsm", "pgd"], Settings())
    line = robust_verdict.pair_line(found, "both trained: standard", 0.05)
    assert line.startswith("- **Robustness, cnn_bn against cnn** (both trained: standard): "
                           "less robust in 1 of 3 tests (fgsm at ε = 0.1; the largest gap -")
    assert "inconclusive in 2 (fgsm at ε = 0.3; pgd at ε = 0.1; about " in line
    assert "n = 5 and 5 runs" in line and "Holm-corrected over the 3 (attack, ε)" in line
    assert "nan" not in line


def test_a_margin_makes_a_small_difference_equivalent():
    rng = np.random.default_rng(1)
    rows = pd.DataFrame(_rows("cnn", "fgsm", 0.1, 0.80 + 0.001 * rng.standard_normal(RUNS))
                        + _rows("cnn_bn", "fgsm", 0.1,
                                0.80 + 0.001 * rng.standard_normal(RUNS)))
    (plain,) = robust_verdict.compare(rows, "cnn", "cnn_bn", ["fgsm"], Settings())
    assert plain.outcome == "inconclusive"
    (with_margin,) = robust_verdict.compare(rows, "cnn", "cnn_bn", ["fgsm"],
                                            Settings(margin_pp=1.0))
    assert with_margin.outcome == "equivalent" and with_margin.tost_p_holm < 0.05
    assert "equivalent in 1 of 1 tests" in robust_verdict.pair_line([with_margin], "x", 0.05)


def test_one_run_per_model_is_untestable_in_words():
    rows = pd.DataFrame(_rows("cnn", "fgsm", 0.1, [0.8]) + _rows("cnn_bn", "fgsm", 0.1, [0.7]))
    (c,) = robust_verdict.compare(rows, "cnn", "cnn_bn", ["fgsm"], Settings())
    assert c.outcome == "untestable"
    line = robust_verdict.pair_line([c], "both trained: standard", 0.05)
    assert "untestable: 1 and 1 run(s) attacked; a comparison over training seeds needs " \
           "at least two runs of each model" in line
    # ...and what the one trained model of each showed
    assert "Measured on the one trained model of each: cnn_bn's accuracy under attack is " \
           "below in 1 of 1 (attack, ε) against cnn's; the largest gap: fgsm at ε = 0.1, " \
           "70.00% against 80.00% (-10.00 pp)." in line


def test_the_report_compares_models_trained_the_same_way(tmp_path):
    rng = np.random.default_rng(0)
    study = _study(rng)
    robust = study.copy()  # the same models trained adversarially: all near 0.9
    robust["model"] = robust["model"] + "-at"
    robust["job"] = robust["job"].str.replace("attack-cnn", "attack-cnn-at", regex=False)
    robust["value"] = np.clip(0.9 + 0.01 * rng.standard_normal(len(robust)), 0, 1)
    pd.concat([study, robust]).to_csv(tmp_path / "results.csv", index=False)
    at = {"name": "fgsm_at", "label": None, "eps": 0.3, "alpha": None, "craft_mode": "train"}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump({
        "name": "bn_robustness", "train": {"procedure": None},
        "models": [{"name": "cnn"}, {"name": "cnn_bn"},
                   {"name": "cnn", "label": "cnn-at", "procedure": at},
                   {"name": "cnn_bn", "label": "cnn_bn-at", "procedure": at}]}, sort_keys=False))
    summary = render(tmp_path).read_text()
    verdict = summary.split("## Verdict")[1].split("\n## ")[0]
    assert "**Robustness, cnn_bn against cnn** (both trained: standard): less robust" in verdict
    assert ("**Robustness, cnn_bn-at against cnn-at** (both trained: fgsm_at, eps 0.3, "
            "craft_mode train)") in verdict
    assert "cnn-at against cnn**" not in verdict  # procedures are not compared
    table = pd.read_csv(tmp_path / "robustness_comparisons.csv")
    assert set(zip(table["model"], table["against"])) == {("cnn_bn", "cnn"),
                                                          ("cnn_bn-at", "cnn-at")}
    assert "nan" not in summary.replace("nanny", "")
    assert "| cnn-at | fgsm_at, eps 0.3, craft_mode train | fgsm |" in summary


def test_the_suite_can_name_the_pairs_and_a_pair_must_name_its_models(tmp_path):
    from benchlab.plugins import default_registry
    from benchlab.suite import SuiteError, validate_suite

    study = _study(np.random.default_rng(0))
    batch = study[study["model"] == "cnn_bn"].assign(model="cnn_bn-batch")
    pd.concat([study, batch]).to_csv(tmp_path / "results.csv", index=False)
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump({
        "name": "pairs", "models": [{"name": "cnn"}, {"name": "cnn_bn"},
                                    {"name": "cnn_bn", "label": "cnn_bn-batch"}],
        "report": {"robustness_pairs": [["cnn_bn-batch", "cnn_bn"]]}}, sort_keys=False))
    verdict = render(tmp_path).read_text().split("## Verdict")[1].split("\n## ")[0]
    assert "**Robustness, cnn_bn-batch against cnn_bn** (both trained: standard)" in verdict
    assert "against cnn**" not in verdict  # only the pair named
    data = {"name": "pairs", "dataset": {"name": "mnist"},
            "models": [{"name": "cnn"}, {"name": "cnn_bn"}],
            "report": {"robustness_pairs": [["cnn_bn", "cnn_b"]]}}
    with pytest.raises(SuiteError) as raised:
        validate_suite(data, default_registry())
    assert ("report.robustness_pairs.0.1: expected a model of this suite (cnn, cnn_bn), "
            "got 'cnn_b'") in str(raised.value)


def test_training_comparisons_stay_within_a_procedure():
    from benchlab.report.epochs import same_training_pairs

    procedures = {"cnn-at": "fgsm_at, eps 0.3", "cnn_bn-at": "fgsm_at, eps 0.3"}
    models = ["cnn", "cnn_bn", "cnn-at", "cnn_bn-batch", "cnn_bn-at"]
    assert same_training_pairs(models, procedures) == [
        ("cnn_bn", "cnn"), ("cnn_bn-batch", "cnn"), ("cnn_bn-at", "cnn-at")]
    assert same_training_pairs(["cnn", "cnn_bn"], {}) == [("cnn_bn", "cnn")]


def test_models_broken_in_every_run_are_identical_not_inconclusive():
    rows = pd.DataFrame(_rows("cnn", "pgd", 0.3, [0.0] * 3) + _rows("cnn_bn", "pgd", 0.3, [0.0] * 3)
                        + _rows("cnn", "pgd", 0.1, [0.7, 0.72, 0.71])
                        + _rows("cnn_bn", "pgd", 0.1, [0.70, 0.73, 0.69]))
    found = robust_verdict.compare(rows, "cnn", "cnn_bn", ["pgd"], Settings())
    assert [c.outcome for c in found] == ["inconclusive", "identical"]
    line = robust_verdict.pair_line(found, "both trained: standard", 0.05)
    assert "identical in every run in 1 (pgd at ε = 0.3; both at 0.00%)" in line
    assert "inconclusive in 1 (pgd at ε = 0.1; about " in line
