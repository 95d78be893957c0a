"""Catastrophic overfitting made visible: the learning curve of an adversarially trained
run also records its accuracy under a short PGD, and the report says which runs
collapsed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from benchlab import training
from benchlab.components import DatasetSplit
from benchlab.execute.train import bind_procedure
from benchlab.plugins import default_registry
from benchlab.report import render
from benchlab.report.overfitting import outcomes
from benchlab.testing import tiny_cnn
from benchlab.training.run import CURVE_PGD_STEPS, robust_accuracy


def _split(n: int, seed: int) -> DatasetSplit:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 16, 16), generator=generator, dtype=torch.uint8)
    return DatasetSplit(images, torch.randint(0, 10, (n,), generator=generator))


def test_the_curve_attack_is_torchattacks_pgd_without_a_random_start():
    torchattacks = pytest.importorskip("torchattacks")
    model, split = tiny_cnn(), _split(64, 3)
    eps = 0.1
    mine = robust_accuracy(model, split, eps, batch_size=32)
    attack = torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / CURVE_PGD_STEPS,
                              steps=CURVE_PGD_STEPS, random_start=False)
    images = split.images.float() / 255
    adversarial = attack(images, split.labels)
    with torch.no_grad():
        theirs = (model(adversarial).argmax(1) == split.labels).float().mean().item()
    assert mine == pytest.approx(theirs, abs=1 / 64 + 1e-9)  # one image of float rounding
    clean = training.evaluate(model, split, 32)[1]
    assert mine <= clean
    assert all(p.grad is None for p in model.parameters())
    assert not model.training


def test_an_adversarial_run_records_pgd_accuracy_on_its_curve_and_a_standard_one_does_not():
    registry = default_registry()
    component = registry.get("procedure", "fgsm_at")
    params = component.validate_params({"eps": 0.2})
    procedure = bind_procedure(component, params)
    config = training.TrainConfig(epochs=1, batch_size=16, eval_every=2)
    train, test = _split(64, 0), _split(32, 1)
    (adversarial,) = training.train_runs(lambda: tiny_cnn(), train, test, config, [1],
                                         threads=1, procedure=procedure, curve_eps=0.2)
    assert [s.step for s in adversarial.steps] == [0, 2, 4]
    assert all(0 <= s.robust_acc <= 1 for s in adversarial.steps)
    (plain,) = training.train_runs(lambda: tiny_cnn(), train, test, config, [1], threads=1)
    assert all(s.robust_acc is None for s in plain.steps)


def _curve(model: str, run: int, values) -> list[dict]:
    return [{"job": f"train-{model}-r{run:02d}", "model": model, "dataset": "mnist", "run": run,
             "seed": run + 1, "epoch": step / 100, "step": step, "attack": None, "eps": None,
             "explainer": None, "metric": "step_pgd_acc", "value": v}
            for step, v in zip(range(0, 100 * len(values), 100), values)]


def test_collapsed_never_robust_and_held_runs_are_told_apart(tmp_path):
    rows = (_curve("cnn-at", 0, [0.0, 0.3, 0.45, 0.05, 0.01])
            + _curve("cnn-at", 1, [0.0, 0.02, 0.04, 0.03])
            + _curve("cnn-at", 2, [0.0, 0.3, 0.5, 0.55]))
    frame = pd.DataFrame(rows)
    per_run = outcomes(frame)
    assert per_run["outcome"].tolist() == ["collapsed", "never robust", "held"]
    assert per_run.loc[0, ["peak", "peak_step", "final"]].tolist() == [0.45, 200, 0.01]
    frame.to_csv(tmp_path / "results.csv", index=False)
    at = {"name": "fgsm_at", "label": None, "eps": 0.3, "alpha": None, "craft_mode": "train"}
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(
        {"name": "co", "models": [{"name": "cnn", "label": "cnn-at", "procedure": at}],
         "train": {"eval_size": 200}}, sort_keys=False))
    summary = render(tmp_path).read_text()
    assert ("- **Catastrophic overfitting, cnn-at** (fgsm_at, eps 0.3, craft_mode train): "
            "of 3 run(s), 1 collapsed, 1 never robust, 1 held; PGD accuracy on the first 200 "
            "test images peaked at 4.0–55.0% and ended at 1.0–55.0%.") in summary
    assert (tmp_path / "robust_accuracy_steps.png").stat().st_size > 0
    assert "nan" not in summary
    assert np.allclose(pd.read_csv(tmp_path / "overfitting.csv")["final"], [0.01, 0.03, 0.55])
