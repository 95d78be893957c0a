"""Threat models: L2 balls checked by the guard, minimum-norm attacks turned into accuracy
at every eps from the norm each image needed, in the kit and in a run."""

from __future__ import annotations

import math
import types

import pandas as pd
import pytest
import torch
from conftest import TOY_PROVENANCE, toy_plugin

import benchlab
from benchlab import guards, runner
from benchlab.cache import ModelCache
from benchlab.components import Provenance, ThreatModel
from benchlab.plugins import build_registry
from benchlab.suite import validate_suite
from benchlab.testing import run_checks
from benchlab.threat import perturbation_norms, within_budget


def test_within_budget_keeps_an_adversarial_only_inside_each_eps():
    images = torch.zeros(3, 1, 2, 2)
    found = images.clone()
    found[0, 0, 0, 0] = 0.1
    found[1, 0, 0, 0] = 0.25
    found[2, 0, 0, 0] = 0.5
    norms = perturbation_norms(images, found, "linf")
    assert torch.allclose(norms, torch.tensor([0.1, 0.25, 0.5]))
    stack = within_budget(images, found, norms, [0.1, 0.3])
    assert torch.equal(stack[0], torch.stack([found[0], images[1], images[2]]))
    assert torch.equal(stack[1], torch.stack([found[0], found[1], images[2]]))


def test_norms_l2_l1_l0():
    images = torch.zeros(1, 2, 2, 2)
    adv = images.clone()
    adv[0, :, 0, 0] = 0.3  # one pixel position, both channels
    adv[0, 0, 1, 1] = 0.4
    assert perturbation_norms(images, adv, "l2").item() == pytest.approx(math.sqrt(0.34))
    assert perturbation_norms(images, adv, "l1").item() == pytest.approx(1.0)
    assert perturbation_norms(images, adv, "l0").item() == 2


def test_the_guard_checks_the_ball_of_the_attacks_norm():
    images = torch.zeros(2, 1, 4, 4)
    adv = images.clone().unsqueeze(0)
    adv[0, :, :, 0, :] = 0.2  # L∞ 0.2, L2 0.4 per image
    guards.check_adversarial(images, adv, [0.25], norm="linf")
    with pytest.raises(guards.ComponentError, match="outside the L2 ε-ball.*0.4"):
        guards.check_adversarial(images, adv, [0.25], norm="l2")
    guards.check_adversarial(images, adv, [0.4], norm="l2")


def invert(model, images, labels, eps, params):
    """A minimum-L∞ stand-in: the inverted image (norm = the largest pixel change)."""
    return 1.0 - images


def _minimum_norm_plugin() -> types.ModuleType:
    @benchlab.hookimpl
    def register_attacks(register):
        register("invert", invert, threat=ThreatModel("linf", minimum_norm=True))

    module = types.ModuleType("invert_plugin")
    module.register_attacks = register_attacks
    return module


@pytest.fixture
def registry():
    return build_registry([("toy", toy_plugin(), TOY_PROVENANCE),
                           ("invert", _minimum_norm_plugin(), Provenance("invert", "t", "0"))],
                          entry_points=False)


def test_the_kit_checks_a_minimum_norm_attack_through_its_batches_per_eps(registry):
    results = run_checks(registry.get("attack", "invert"))
    assert [r.name for r in results if r.failed] == []


def test_a_run_derives_accuracy_at_every_eps_from_the_norms(tmp_path, registry):
    suite = validate_suite({
        "name": "minimum-norm", "dataset": {"name": "toy", "train_size": 128, "test_size": 64},
        "models": [{"name": "tiny"}], "train": {"epochs": 1, "batch_size": 32},
        "attacks": [{"name": "invert", "eps": [0.5, 0.99, 1.0]}, {"name": "noise", "eps": [0.1]}],
        "evaluate": {"test_size": 64},
    }, registry)
    out = tmp_path / "run"
    outcome = runner.run_suite(suite, registry, out, device="cpu",
                               cache=ModelCache(tmp_path / "cache"), log=lambda s: None)
    assert not outcome.failed, outcome.failed
    rows = pd.read_csv(out / "results.csv")
    inv = rows[rows["attack"] == "invert"].set_index(["metric", "eps"])["value"]
    clean = inv[("accuracy", 0.0)]
    # Inverting moves some pixel of every image by more than 0.5 and by at most 1.
    # No image is broken within 0.5: no perturbation to average (not 0 for each image).
    assert inv[("accuracy", 0.5)] == clean and math.isnan(inv[("linf", 0.5)])
    assert inv[("linf.n", 0.5)] == 0.0
    # At ε = 1 the mean is over the correctly classified images the attack broke.
    broken = inv[("linf.n", 1.0)]
    assert broken == round(inv[("success_rate", 1.0)] * inv[("success_rate.n", 1.0)])
    assert (0.5 < inv[("linf", 1.0)] <= 1.0) if broken else math.isnan(inv[("linf", 1.0)])
    assert inv[("l2.n", 1.0)] == broken
    assert inv[("accuracy", 1.0)] <= clean
    assert rows[(rows["attack"] == "invert") & (rows["metric"] == "minimum_norm")]["value"].item() == 1
    assert rows[(rows["attack"] == "noise") & (rows["metric"] == "minimum_norm")]["value"].item() == 0
    assert math.isinf(rows[(rows["attack"] == "noise") & (rows["metric"] == "norm_p")]["value"].item())
    median = rows[(rows["attack"] == "invert") & (rows["metric"] == "median_norm")]["value"].item()
    assert 0.5 < median <= 1.0 or math.isnan(median)
    found = rows[(rows["attack"] == "invert") & (rows["metric"] == "found_rate")]["value"].item()
    assert 0.0 <= found <= 1.0
    norms = torch.load(out / "artifacts" / "attack-tiny-r00-invert.pt", weights_only=True)["norms"]
    assert norms.shape == (64,) and bool((norms > 0.5).all())


def test_the_report_sets_both_kinds_side_by_side_and_names_each_explainer(tmp_path, registry):
    from benchlab.report import render
    from benchlab.report.robustness import _rate

    suite = validate_suite({
        "name": "zoo", "dataset": {"name": "toy", "train_size": 128, "test_size": 64},
        "models": [{"name": "tiny"}], "train": {"epochs": 1, "batch_size": 32},
        "attacks": [{"name": "invert", "eps": [0.5, 1.0]}, {"name": "noise", "eps": [0.1]}],
        "explainers": [{"name": "intensity"}, {"name": "intensity", "label": "second"}],
        "evaluate": {"test_size": 64, "explain_size": 8, "count": 4},
    }, registry)
    out = tmp_path / "run"
    runner.run_suite(suite, registry, out, device="cpu", cache=ModelCache(tmp_path / "cache"),
                     log=lambda s: None)
    summary = render(out).read_text()
    robustness = pd.read_csv(out / "robustness.csv")
    assert set(robustness["threat"]) == {"minimum L∞", "L∞ ball"}
    assert "### Minimum-norm attacks" in summary
    # the minimum-norm attack's norms are over the images it broke, with their n
    invert = robustness[robustness["attack"] == "invert"].set_index("eps")
    assert invert.loc[0.5, "mean L∞"] == "– (none broken, n = 0)"
    assert invert.loc[1.0, "mean L∞"].endswith(")") and "(n = " in invert.loc[1.0, "mean L∞"]
    assert "(n = " not in robustness[robustness["attack"] == "noise"]["mean L∞"].iloc[0]
    found = pd.read_csv(out / "results.csv").set_index(["attack", "metric"])["value"]
    assert f"| {found[('invert', 'not_flipped')]:.0f} of " \
           f"{found[('invert', 'not_flipped.n')]:.0f} |" in summary
    assert "## Explanation grids (run 0)" in summary and "Grad-CAM grids" not in summary
    assert "### intensity" in summary and "### second" in summary
    assert (out / "grid_tiny-invert-second.png").is_file()
    assert _rate(pd.Series([0.42])) == "0.42" and _rate(pd.Series([3.14])) == "3.1"
    assert _rate(pd.Series([1234.5])) == "1234" and _rate(pd.Series([], dtype=float)) == "–"


def test_grid_takes_one_true_label_per_column(tmp_path):
    from benchlab.report.grid import draw_grid

    images, preds = torch.rand(2, 3, 8, 8), torch.zeros(2, 3, dtype=torch.long)
    draw_grid(images, None, preds, torch.ones(2, 3), ["clean", "ε = 0.1"], "t",
              tmp_path / "ok.png", labels=torch.tensor([0, 1, 2]))
    assert (tmp_path / "ok.png").is_file()
    with pytest.raises(ValueError, match="labels must have 3 entries"):
        draw_grid(images, None, preds, torch.ones(2, 3), ["clean", "ε = 0.1"], "t",
                  tmp_path / "bad.png", labels=torch.tensor([0, 1]))
