"""The bn_robustness suite end to end on real MNIST, small: two runs of every model, one
epoch on a slice, tables with intervals over runs and a verdict line per pair."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from benchlab import runner
from benchlab.cache import ModelCache
from benchlab.plugins import default_registry
from benchlab.report import render
from benchlab.suite import load_suite

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["train.runs=2", "train.epochs=1", "dataset.train_size=600", "dataset.test_size=100",
         "train.eval_every=3", "train.eval_size=40", "evaluate.test_size=40",
         "attacks.1.steps=3", "attacks.2.steps=3", "attacks.3.steps=2",
         "attacks.3.test_size=20"]


@pytest.mark.slow
def test_bn_robustness_gives_intervals_over_runs_and_a_verdict_per_pair(tmp_path, mnist_root):
    pytest.importorskip("torchattacks")
    suite = load_suite(str(ROOT / "suites" / "bn_robustness.yaml"), default_registry(), SMALL)
    outcome = runner.run_suite(suite, default_registry(), tmp_path / "run", device="cpu",
                               cache=ModelCache(tmp_path / "cache"), log=lambda s: None)
    assert not outcome.failed, outcome.failed
    summary = render(tmp_path / "run").read_text()
    verdict = summary.split("## Verdict")[1].split("\n## ")[0]
    for other, against in (("cnn_bn", "cnn"), ("cnn_bn-batch", "cnn"),
                           ("cnn_bn-batch", "cnn_bn"), ("cnn_bn-fgsm_at", "cnn-fgsm_at")):
        assert f"**Robustness, {other} against {against}**" in verdict
    assert "n = 2 and 2 runs" in verdict
    assert "**Catastrophic overfitting, cnn-fgsm_at**" in verdict
    table = pd.read_csv(tmp_path / "run" / "robustness.csv")
    # every (model, attack, ε > 0) cell: a mean over the 2 runs with its interval
    cells = table[table["eps"] > 0]
    assert set(cells["runs (n)"]) == {2}
    assert cells["accuracy (%)"].str.fullmatch(r"\d+\.\d\d \[\d+\.\d\d, \d+\.\d\d\]").all()
    comparisons = pd.read_csv(tmp_path / "run" / "robustness_comparisons.csv")
    assert len(comparisons) == 4 * 4 * 3  # pairs x attacks x eps
    assert "nan" not in summary
    # the adversarially trained runs were not served the standard models
    jobs = pd.read_csv(tmp_path / "run" / "jobs.csv").set_index("id")
    assert (jobs.loc[[i for i in jobs.index if i.startswith("train-")], "status"] == "ok").all()
    curves = pd.read_csv(tmp_path / "run" / "results.csv")
    pgd = curves[curves["metric"] == "step_pgd_acc"]
    assert set(pgd["model"]) == {"cnn-fgsm_at", "cnn_bn-fgsm_at"}
