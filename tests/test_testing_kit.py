"""The conformance kit passes the built-in components and catches broken ones.

Each broken component below breaks one rule on purpose; the tests pin the exact
set of checks that fail for it, so a check that stops catching its violation,
or starts blaming the wrong thing, fails here.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

import benchlab
from benchlab.components import (
    Component,
    DatasetInfo,
    DatasetSplit,
    FileStatus,
    NoParams,
    Provenance,
)
from benchlab.plugins import build_registry, default_registry
from benchlab.testing import (
    Check,
    CheckFailure,
    check_attack,
    check_dataset,
    check_explainer,
    check_model,
    parametrize_with_checks,
    resolve,
    run_checks,
    synthetic_batch,
    tiny_cnn,
)

PROVENANCE = Provenance("kit-tests", "benchlab-tests", "0")


def component(kind, name, obj, params=NoParams, **extra) -> Component:
    return Component(kind=kind, name=name, obj=obj, params=params, provenance=PROVENANCE,
                     extra=extra)


def case_id(value) -> str:
    """'broken_thing' for a component, 'check_a+check_b' for the checks expected to fail."""
    return "+".join(sorted(value)) if isinstance(value, set) else value.__name__


def failing(results) -> set[str]:
    return {r.name for r in results if r.failed}


def skipped(results) -> set[str]:
    return {r.name for r in results if r.skipped}


# -- reference components that follow every rule ---------------------------------------

def input_gradient(model, images, labels):
    x = images.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), labels, reduction="sum")
        return torch.autograd.grad(loss, x)[0]


def good_attack(model, images, labels, eps, params):
    """One signed gradient step per eps, clamped: FGSM written out."""
    step = input_gradient(model, images, labels).sign()
    return torch.stack([(images + e * step).clamp(0, 1) for e in eps])


def random_attack(model, images, labels, eps, params):
    """FGSM from a uniform random start in the half ball, the start drawn from the
    global generator: valid but randomised."""
    out = []
    for e in eps:
        start = (images + 0.5 * e * torch.empty(images.shape).uniform_(-1, 1)).clamp(0, 1)
        moved = start + 0.5 * e * input_gradient(model, start, labels).sign()
        out.append((images + (moved - images).clamp(-e, e)).clamp(0, 1))
    return torch.stack(out)


def good_explainer(model, images, params):
    """Input-gradient saliency, normalised per image."""
    labels = model(images).argmax(dim=1)
    saliency = input_gradient(model, images, labels).abs().amax(dim=1)
    peak = saliency.amax(dim=(1, 2), keepdim=True)
    return torch.where(peak > 0, saliency / peak.clamp_min(1e-12), torch.zeros_like(saliency))


class GoodNet(nn.Module):
    def __init__(self, info: DatasetInfo) -> None:
        super().__init__()
        channels, height, width = info.shape
        self.register_buffer("mean", torch.tensor(info.mean).view(1, -1, 1, 1), persistent=False)
        self.conv = nn.Conv2d(channels, 3, 3, padding=1)
        self.fc = nn.Linear(3 * height * width, info.num_classes)

    def forward(self, images):
        return self.fc(F.relu(self.conv(images - self.mean)).flatten(1))


def good_model(info, params):
    return GoodNet(info)


class MemoryDataset:
    """A dataset held in memory: no files to fetch."""

    def __init__(self, info: DatasetInfo, labels_offset: int = 0) -> None:
        self.info = info
        self.labels_offset = labels_offset

    def load(self, split, root: Path) -> DatasetSplit:
        generator = torch.Generator().manual_seed(0)
        n = 512
        images = torch.randint(0, 256, (n, *self.info.shape), dtype=torch.uint8,
                               generator=generator)
        labels = torch.arange(n) % self.info.num_classes + self.labels_offset
        return DatasetSplit(images, labels)

    def fetch(self, root: Path) -> None:
        return None

    def files(self, root: Path) -> list[FileStatus]:
        return []


class AbsentFilesDataset(MemoryDataset):
    def files(self, root: Path) -> list[FileStatus]:
        return [FileStatus(Path(root) / "images.bin", present=False, verified=False)]

    def load(self, split, root: Path) -> DatasetSplit:
        raise AssertionError("the kit must not load (and so download) absent files")


# Uniform uint8 pixels / 255: mean 0.5, std sqrt((256**2 - 1) / 12) / 255 = 0.2898.
UNIFORM_INFO = DatasetInfo(name="uniform", num_classes=4, shape=(2, 6, 6),
                           mean=(0.5, 0.5), std=(0.29, 0.29))


# -- the kit passes what follows the rules ---------------------------------------------

@pytest.mark.parametrize("good", [
    component("attack", "good", good_attack),
    component("explainer", "good", good_explainer),
    component("model", "good", good_model),
    component("dataset", "good", MemoryDataset(UNIFORM_INFO)),
], ids=lambda c: c.kind)
def test_reference_components_pass_every_check(good, tmp_path):
    results = run_checks(good, data_root=tmp_path)
    assert [r for r in results if not r.passed and not r.skipped] == []
    assert skipped(results) == ({"named_layers"} if good.kind == "model" else set())


def test_a_randomised_attack_skips_only_the_batch_split_check():
    results = run_checks(component("attack", "random", random_attack))
    assert failing(results) == set()
    assert skipped(results) == {"batch_halves"}
    reason = next(r.message for r in results if r.name == "batch_halves")
    assert "depends on the random seed" in reason


# The decorator at work inside pytest: one test per check, skips reported as skips.
@parametrize_with_checks([component("attack", "good", good_attack),
                          component("attack", "random", random_attack)])
def test_parametrize_with_checks_runs_inside_pytest(component, check):
    check(component)


# -- built-in components -----------------------------------------------------------------

BUILT_IN = [
    ("attack", "fgsm", None),
    ("attack", "ifgsm", {"steps": 5}),  # the default 100 steps only cost time here
    ("explainer", "gradcam", None),
    ("model", "cnn", None),
    ("model", "cnn_bn", None),
    ("model", "fast_at_net", None),
    ("dataset", "mnist", None),
    ("dataset", "fashion-mnist", None),
    ("procedure", "standard", None),
    ("procedure", "fgsm_at", None),
    ("procedure", "pgd_at", {"steps": 3}),  # 40 steps only cost time here
    ("procedure", "trades", {"steps": 3}),
]


@pytest.mark.parametrize(("kind", "name", "params"), BUILT_IN,
                         ids=[name for _, name, _ in BUILT_IN])
def test_built_in_components_pass(kind, name, params):
    registry = default_registry()
    if name not in registry.names(kind):
        pytest.skip(f"{kind} '{name}' is not registered")
    results = run_checks(registry.get(kind, name), params=params)
    assert [(r.name, r.message) for r in results if r.failed] == []


# -- broken attacks ----------------------------------------------------------------------

def leaves_the_ball(model, images, labels, eps, params):
    return good_attack(model, images, labels, [2 * e for e in eps], params)


def does_not_clamp(model, images, labels, eps, params):
    step = input_gradient(model, images, labels).sign()
    return torch.stack([images + e * step for e in eps])


def modifies_input(model, images, labels, eps, params):
    out = good_attack(model, images, labels, eps, params)
    images.mul_(0.5)
    return out


def returns_nan(model, images, labels, eps, params):
    out = good_attack(model, images, labels, eps, params)
    out[:, 0, 0, 5, 5] = float("nan")
    return out


def leaves_train_mode(model, images, labels, eps, params):
    model.train()
    return good_attack(model, images, labels, eps, params)


def unfreezes_parameters(model, images, labels, eps, params):
    model.requires_grad_(True)
    return good_attack(model, images, labels, eps, params)


def leaves_gradients(model, images, labels, eps, params):
    x = images.detach().requires_grad_(True)
    F.cross_entropy(model(x), labels, reduction="sum").backward()
    return torch.stack([(images + e * x.grad.sign()).clamp(0, 1) for e in eps])


def moves_at_eps_zero(model, images, labels, eps, params):
    return good_attack(model, images, labels, [max(e, 0.01) for e in eps], params)


def depends_on_the_batch(model, images, labels, eps, params):
    direction = (images - images.mean(dim=0)).sign()
    return torch.stack([(images + e * direction).clamp(0, 1) for e in eps])


UNSEEDED_CALLS = itertools.count()


def unseeded(model, images, labels, eps, params):
    generator = torch.Generator().manual_seed(next(UNSEEDED_CALLS))
    noise = torch.empty((len(eps), *images.shape)).uniform_(-1, 1, generator=generator)
    radius = torch.tensor(list(eps)).view(-1, *[1] * images.dim())
    return (images + radius * noise).clamp(0, 1)


def forgets_the_eps_axis(model, images, labels, eps, params):
    return good_attack(model, images, labels, eps[:1], params)[0]


def returns_float64(model, images, labels, eps, params):
    return good_attack(model, images, labels, eps, params).double()


def crashes(model, images, labels, eps, params):
    raise RuntimeError("CUDA out of memory (simulated)")


def identity(model, images, labels, eps, params):
    """Returns its input at every ε: inside every ball, and no attack at all."""
    return images.unsqueeze(0).repeat(len(eps), 1, 1, 1, 1)


def noise_of_no_consequence(model, images, labels, eps, params):
    """Moves every pixel by 1e-9: no prediction changes and the loss does not rise."""
    return (images + 1e-9).clamp(0, 1).unsqueeze(0).repeat(len(eps), 1, 1, 1, 1)


@pytest.mark.parametrize(("attack", "expected"), [
    (leaves_the_ball, {"eps_ball"}),
    (does_not_clamp, {"eps_ball"}),
    (modifies_input, {"input_unchanged"}),
    (returns_nan, {"finite", "eps_ball", "eps_zero", "batch_halves"}),
    # ...and in train mode BatchNorm uses batch statistics: the batch matters too.
    (leaves_train_mode, {"model_restored", "batch_halves"}),
    (unfreezes_parameters, {"model_restored"}),
    (leaves_gradients, {"model_restored"}),
    (moves_at_eps_zero, {"eps_zero"}),
    (depends_on_the_batch, {"batch_halves"}),
    (unseeded, {"seeded"}),
    (forgets_the_eps_axis, {"output_shape", "eps_ball", "eps_zero", "batch_halves", "seeded",
                            "attacks"}),
    (returns_float64, {"output_shape", "eps_ball", "eps_zero", "batch_halves", "seeded",
                       "attacks"}),
    (crashes, {"output_shape", "finite", "eps_ball", "input_unchanged", "model_restored",
               "eps_zero", "batch_halves", "seeded", "attacks"}),
    (identity, {"attacks"}),
    (noise_of_no_consequence, {"attacks"}),
], ids=case_id)
def test_broken_attacks_fail_the_right_checks(attack, expected):
    results = run_checks(component("attack", attack.__name__, attack))
    assert failing(results) == expected, [(r.name, r.message) for r in results]


@pytest.mark.parametrize(("attack", "check", "words"), [
    (leaves_the_ball, "eps_ball", "for ε = 0.3 (eps[2]), over by 0.3"),
    (does_not_clamp, "eps_ball", "outside [0, 1]"),
    (modifies_input, "input_unchanged", "modified its input in place: images"),
    (returns_nan, "finite", "3 non-finite values (3 NaN, 0 Inf)"),
    (leaves_train_mode, "model_restored", "train/eval mode changed on <root>, bn, conv"),
    (unfreezes_parameters, "model_restored",
     "with parameters frozen: requires_grad changed on bn.bias"),
    (leaves_gradients, "model_restored", ".grad left on bn.bias"),
    (depends_on_the_batch, "batch_halves", "two halves changes the result"),
    (unseeded, "seeded", "torch.manual_seed(0) differ"),
    (forgets_the_eps_axis, "output_shape", "shape (8, 1, 16, 16), expected (3, 8, 1, 16, 16)"),
    (crashes, "finite", "raised RuntimeError: CUDA out of memory (simulated)"),
    (identity, "attacks", "does not attack: at ε = 0.3 (L∞ ball) the kit's MLP keeps 100% "
     "accuracy and its loss does not rise"),
], ids=lambda value: value.__name__ if callable(value) else None)
def test_failures_say_what_is_wrong(attack, check, words):
    results = {r.name: r for r in run_checks(component("attack", attack.__name__, attack))}
    assert words in results[check].message


MINIMUM_L2 = benchlab.ThreatModel("l2", minimum_norm=True)


def minimum_norm_identity(model, images, labels, eps, params):
    return images.clone()


def stops_short_of_the_boundary(model, images, labels, eps, params):
    """Half of a gradient step toward the boundary, as a minimum-norm attack that
    returns images it has moved but not flipped."""
    return (images + 1e-3 * input_gradient(model, images, labels).sign()).clamp(0, 1)


def minimum_norm_pgd(model, images, labels, eps, params):
    """Flips what it can within L2 3, returns the rest unchanged."""
    with torch.no_grad():
        before = model(images).argmax(dim=1)
    x = images.clone()
    for _ in range(20):
        step = input_gradient(model, x, labels)
        step = step / step.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        x = (x + 0.15 * step).clamp(0, 1)
    with torch.no_grad():
        flipped = model(x).argmax(dim=1) != before
    return torch.where(flipped.view(-1, 1, 1, 1), x, images)


@pytest.mark.parametrize(("attack", "words"), [
    (minimum_norm_identity, "does not attack: returned all 8 images unchanged"),
    (stops_short_of_the_boundary, "does not attack: of the 8 images it returned changed, 8 "
     "keep the model's prediction"),
], ids=lambda value: value.__name__ if callable(value) else None)
def test_a_minimum_norm_attack_that_flips_nothing_fails(attack, words):
    results = run_checks(component("attack", attack.__name__, attack, threat=MINIMUM_L2))
    assert failing(results) == {"attacks"}, [(r.name, r.message) for r in results]
    assert words in next(r.message for r in results if r.name == "attacks")


def test_a_minimum_norm_attack_that_flips_passes():
    results = run_checks(component("attack", "mn", minimum_norm_pgd, threat=MINIMUM_L2))
    assert [(r.name, r.message) for r in results if r.failed] == []


def test_an_attack_that_declares_it_may_have_no_effect_skips_the_check_with_its_reason():
    reason = "probes a defence: it only attacks a model that randomises its input"
    declared = component("attack", "probe", identity, no_effect=reason)
    results = {r.name: r for r in run_checks(declared)}
    assert failing(results.values()) == set()
    assert results["attacks"].skipped and reason in results["attacks"].message
    # a function of the parameters: None means the check applies
    per_params = component("attack", "probe", identity, no_effect=lambda params: None)
    assert failing(run_checks(per_params)) == {"attacks"}


def test_the_no_effect_keyword_is_checked_at_registration():
    from benchlab.registration import keyword_problem

    assert keyword_problem("attack", {"no_effect": "targeted"}) is None
    assert "keyword 'no_effect': expected a reason" in keyword_problem(
        "attack", {"no_effect": 3})
    assert "unknown keyword 'no_effect'" in keyword_problem("explainer", {"no_effect": "x"})


# -- broken explainers -------------------------------------------------------------------

def returns_nan_maps(model, images, params):
    maps = good_explainer(model, images, params)
    maps[0, 0, 0] = float("nan")
    return maps


def unnormalised(model, images, params):
    return good_explainer(model, images, params) * 3


def keeps_channel_axis(model, images, params):
    return good_explainer(model, images, params).unsqueeze(1)


def leaves_a_hook(model, images, params):
    model.conv.register_forward_hook(lambda module, inputs, output: None)
    return good_explainer(model, images, params)


def leaves_a_tensor_hook(model, images, params):
    if model.fc.weight.requires_grad:
        model.fc.weight.register_hook(lambda grad: grad)
    return good_explainer(model, images, params)


def explainer_leaves_train_mode(model, images, params):
    maps = good_explainer(model, images, params)
    model.train()
    return maps


def normalises_input_in_place(model, images, params):
    maps = good_explainer(model, images, params)
    images.sub_(0.5)
    return maps


@pytest.mark.parametrize(("explainer", "expected"), [
    (returns_nan_maps, {"finite", "in_range"}),
    (unnormalised, {"in_range"}),
    (keeps_channel_axis, {"output_shape", "in_range"}),
    (leaves_a_hook, {"no_hooks_left"}),
    (leaves_a_tensor_hook, {"no_hooks_left"}),
    (explainer_leaves_train_mode, {"model_restored"}),
    (normalises_input_in_place, {"input_unchanged"}),
], ids=case_id)
def test_broken_explainers_fail_the_right_checks(explainer, expected):
    results = run_checks(component("explainer", explainer.__name__, explainer))
    assert failing(results) == expected, [(r.name, r.message) for r in results]


def test_a_hook_left_behind_is_named():
    results = {r.name: r for r in run_checks(component("explainer", "hook", leaves_a_hook))}
    assert "1 forward hooks" in results["no_hooks_left"].message


# -- broken models -----------------------------------------------------------------------

class InPlaceNormalising(GoodNet):
    def forward(self, images):
        return super().forward(images.sub_(0.1) + 0.1)


class DropoutInEval(GoodNet):
    def forward(self, images):
        return F.dropout(super().forward(images), 0.5, training=True)


class HiddenState(GoodNet):
    def __init__(self, info: DatasetInfo) -> None:
        super().__init__(info)
        self.shift = torch.randn(info.num_classes)  # not a buffer: lost by state_dict

    def forward(self, images):
        return super().forward(images) + self.shift


class TenClassesAlways(GoodNet):
    def __init__(self, info: DatasetInfo) -> None:
        super().__init__(DatasetInfo(info.name, 10, info.shape, info.mean, info.std))


class NoParameters(nn.Module):
    def __init__(self, info: DatasetInfo) -> None:
        super().__init__()
        self.num_classes = info.num_classes

    def forward(self, images):
        return images.flatten(1)[:, : self.num_classes]


@pytest.mark.parametrize(("model", "expected"), [
    (InPlaceNormalising, {"input_unchanged"}),
    (DropoutInEval, {"eval_deterministic"}),
    (HiddenState, {"state_dict_roundtrip"}),
    (TenClassesAlways, {"logits"}),
    (NoParameters, {"trainable"}),
], ids=case_id)
def test_broken_models_fail_the_right_checks(model, expected):
    results = run_checks(component("model", model.__name__, lambda info, params: model(info)))
    assert failing(results) == expected, [(r.name, r.message) for r in results]


def test_declared_layers_are_checked():
    declared = component("model", "good", good_model, layers=["conv", "fc", "head"])
    results = {r.name: r for r in run_checks(declared)}
    assert results["named_layers"].failed
    assert "missing from named_modules(): head; the model has: conv, fc" in (
        results["named_layers"].message)
    present = component("model", "good", good_model, layers=["conv"])
    assert {r.name: r for r in run_checks(present)}["named_layers"].passed


def test_logits_failure_names_the_dataset_shape():
    broken = component("model", "ten", lambda info, params: TenClassesAlways(info))
    results = {r.name: r for r in run_checks(broken)}
    assert results["logits"].message == (
        "for 5 classes of shape (3, 32, 32): logits: shape (4, 10), expected (4, 5) "
        "(images, classes)")


# -- datasets ----------------------------------------------------------------------------

def test_absent_files_skip_the_data_checks_without_loading(tmp_path):
    results = run_checks(component("dataset", "absent", AbsentFilesDataset(UNIFORM_INFO)),
                         data_root=tmp_path)
    assert failing(results) == set()
    assert skipped(results) == {"test_split", "mean_std"}
    reason = next(r.message for r in results if r.name == "test_split")
    assert str(tmp_path) in reason and "benchlab data fetch absent" in reason


@pytest.mark.parametrize(("info", "words"), [
    (DatasetInfo("one", 1, (2, 6, 6), (0.5, 0.5), (0.29, 0.29)), "num_classes is 1"),
    (DatasetInfo("flat", 4, (36,), (0.5,), (0.29,)), "expected three positive ints"),
    (DatasetInfo("mean", 4, (2, 6, 6), (0.5,), (0.29, 0.29)), "mean has 1 values, expected"),
    (DatasetInfo("scale", 4, (2, 6, 6), (127.5, 127.5), (74.0, 74.0)), "[0, 1] pixel scale"),
    (DatasetInfo("zero", 4, (2, 6, 6), (0.5, 0.5), (0.29, 0.0)), "has a value <= 0"),
    (DatasetInfo("names", 4, (2, 6, 6), (0.5, 0.5), (0.29, 0.29), ("a", "b")),
     "2 class names for 4 classes"),
])
def test_bad_info_is_reported(info, words, tmp_path):
    results = {r.name: r for r in run_checks(component("dataset", "d", MemoryDataset(info)),
                                             data_root=tmp_path)}
    assert results["info"].failed and words in results["info"].message


def test_declared_mean_and_std_are_compared_with_the_data(tmp_path):
    wrong = DatasetInfo("uniform", 4, (2, 6, 6), mean=(0.1307, 0.5), std=(0.29, 0.29))
    results = {r.name: r for r in run_checks(component("dataset", "d", MemoryDataset(wrong)),
                                             data_root=tmp_path)}
    assert failing(results.values()) == {"mean_std"}
    assert "declared mean (0.1307, 0.5) but the test split has (0." in (
        results["mean_std"].message)


def test_labels_out_of_range_fail(tmp_path):
    shifted = component("dataset", "d", MemoryDataset(UNIFORM_INFO, labels_offset=1))
    results = {r.name: r for r in run_checks(shifted, data_root=tmp_path)}
    assert results["test_split"].message == "labels span [1, 4], outside [0, 4)"


# -- the kit's machinery -----------------------------------------------------------------

class StepParams(benchlab.Params):
    step: float = Field(gt=0)  # required: no default


def needs_params(model, images, labels, eps, params):
    return good_attack(model, images, labels, eps, params)


def test_required_params_must_be_given():
    needy = component("attack", "needy", needs_params, params=StepParams)
    results = run_checks(needy)
    assert failing(results) == {r.name for r in results}
    assert "(no default for step: pass params)" in results[0].message
    assert failing(run_checks(needy, params={"step": 0.5})) == set()
    assert run_checks(needy, params={"step": -1.0})[0].message == (
        "invalid parameters {'step': -1.0} for attack 'needy': "
        "step: Input should be greater than 0")


def test_check_raises_assertion_errors_and_pytest_skips():
    broken = component("attack", "ball", leaves_the_ball)
    checks = {check.name: check for check in check_attack(broken)}
    checks["output_shape"](broken)
    with pytest.raises(CheckFailure, match="outside the L∞ ε-ball"):
        checks["eps_ball"](broken)
    assert issubclass(CheckFailure, AssertionError)
    randomised = component("attack", "random", random_attack)
    with pytest.raises(pytest.skip.Exception, match="depends on the random seed"):
        checks["batch_halves"](randomised)


def test_a_check_refuses_a_component_of_another_kind():
    check = next(iter(check_attack(component("attack", "good", good_attack))))
    with pytest.raises(TypeError, match="is for kind 'attack'"):
        check(component("model", "good", good_model))
    with pytest.raises(TypeError, match="of kind 'model', not 'attack'"):
        check_attack(component("model", "good", good_model))


def test_check_names_per_kind():
    good = {kind: component(kind, "good", obj) for kind, obj in [
        ("attack", good_attack), ("explainer", good_explainer), ("model", good_model),
        ("dataset", MemoryDataset(UNIFORM_INFO))]}
    names = {kind: [c.name for c in fn(good[kind])] for kind, fn in [
        ("attack", check_attack), ("explainer", check_explainer), ("model", check_model),
        ("dataset", check_dataset)]}
    assert names == {
        "attack": ["output_shape", "finite", "eps_ball", "input_unchanged", "model_restored",
                   "eps_zero", "batch_halves", "seeded", "attacks"],
        "explainer": ["output_shape", "finite", "in_range", "no_hooks_left", "model_restored",
                      "input_unchanged"],
        "model": ["logits", "trainable", "named_layers", "eval_deterministic",
                  "state_dict_roundtrip", "input_unchanged"],
        "dataset": ["info", "files", "test_split", "mean_std"],
    }
    assert all(isinstance(c, Check) and c.description for c in check_attack(good["attack"]))


def test_checks_leave_the_global_random_state_and_threads_alone():
    torch.manual_seed(1234)
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    run_checks(component("attack", "random", random_attack))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.get_num_threads() == threads


def test_the_kit_model_and_batch_are_deterministic():
    images, labels = synthetic_batch()
    again, labels_again = synthetic_batch()
    assert torch.equal(images, again) and torch.equal(labels, labels_again)
    assert images.min() == 0 and images.max() == 1 and labels.dtype == torch.int64
    with torch.no_grad():
        assert torch.equal(tiny_cnn()(images), tiny_cnn()(images))
        assert not torch.equal(tiny_cnn()(images), tiny_cnn(seed=1)(images))
    assert not tiny_cnn().training


# -- names -------------------------------------------------------------------------------

def plugin_module():
    import types

    module = types.ModuleType("kit_plugin")

    @benchlab.hookimpl
    def register_attacks(register):
        register("fgsm_like", good_attack)
        register("shared", good_attack)

    @benchlab.hookimpl
    def register_models(register):
        register("shared", good_model)

    module.register_attacks = register_attacks
    module.register_models = register_models
    return module


@pytest.fixture
def registry():
    return build_registry([("kit", plugin_module(), PROVENANCE)], entry_points=False)


def test_resolve_finds_by_name_and_kind(registry):
    assert resolve(registry, "fgsm_like").kind == "attack"
    assert resolve(registry, "shared", "model").kind == "model"


def test_resolve_suggests_the_closest_name(registry):
    with pytest.raises(LookupError, match="did you mean 'fgsm_like'"):
        resolve(registry, "fgsm_lik")
    with pytest.raises(LookupError, match="unknown attack 'shraed'; did you mean 'shared'"):
        resolve(registry, "shraed", "attack")


def test_an_unknown_name_fails_when_the_checks_are_asked_for(registry):
    with pytest.raises(LookupError, match="did you mean 'fgsm_like'"):
        check_attack("fgsm_lik", registry=registry)


def test_resolve_asks_for_the_kind_when_ambiguous(registry):
    with pytest.raises(LookupError, match="several components \\(model, attack\\)"):
        resolve(registry, "shared")


def test_parametrize_ids_name_component_params_and_check(registry):
    needy = component("attack", "needy", needs_params, params=StepParams)
    mark = parametrize_with_checks(["fgsm_like", (needy, {"step": 0.5}),
                                    component("explainer", "saliency", good_explainer)],
                                   registry=registry)
    assert mark.args[0] == ("component", "check")
    ids = mark.kwargs["ids"]
    assert ids[:2] == ["fgsm_like-output_shape", "fgsm_like-finite"]
    assert "needy(step=0.5)-eps_ball" in ids
    assert "saliency-no_hooks_left" in ids
    assert len(ids) == len(set(ids)) == len(mark.args[1])


# -- expected failures -------------------------------------------------------------------

def test_an_expected_failure_that_fails_is_reported_as_such():
    results = {r.name: r for r in run_checks(
        component("attack", "unseeded", unseeded),
        expected_failures={"seeded": "draws from its own generator by design"})}
    assert failing(results.values()) == set()
    seeded = results["seeded"]
    assert seeded.xfailed and not seeded.failed and seeded.outcome == "xfailed"
    assert seeded.message.startswith("expected to fail (draws from its own generator by "
                                     "design): two calls after torch.manual_seed(0) differ")
    assert results["output_shape"].outcome == "passed"


def test_an_expected_failure_that_passes_is_an_unexpected_pass():
    results = {r.name: r for r in run_checks(component("attack", "good", good_attack),
                                             expected_failures={"eps_zero": "stale"})}
    assert failing(results.values()) == {"eps_zero"}
    assert results["eps_zero"].message == (
        "unexpected pass: expected to fail (stale), but it passed; remove 'eps_zero' "
        "from expected_failures")


def test_a_called_expected_failure_xfails_with_the_reason_and_a_pass_fails():
    checks = {c.name: c for c in check_attack(component("attack", "u", unseeded),
                                              expected_failures={"seeded": "known limit",
                                                                 "finite": "stale"})}
    with pytest.raises(pytest.xfail.Exception, match="known limit"):
        checks["seeded"](component("attack", "u", unseeded))
    with pytest.raises(CheckFailure, match="unexpected pass: expected to fail \\(stale\\)"):
        checks["finite"](component("attack", "u", unseeded))
    assert checks["seeded"].expected_failure == "known limit"
    assert checks["output_shape"].expected_failure is None


def test_an_expected_failure_must_name_a_check_of_the_kind():
    good = component("attack", "good", good_attack)
    with pytest.raises(LookupError, match="unknown attack check 'seeds'; did you mean "
                                          "'seeded'\\? \\(known: output_shape, finite, "):
        check_attack(good, expected_failures={"seeds": "typo"})
    with pytest.raises(LookupError, match="unknown model check 'seeded'"):
        run_checks(component("model", "good", good_model),
                   expected_failures={"seeded": "not a model check"})
    with pytest.raises(ValueError, match="expected failure 'seeded' needs a reason"):
        check_attack(good, expected_failures={"seeded": ""})
    with pytest.raises(LookupError, match="unknown attack check"):
        parametrize_with_checks([good], expected_failures={"check_deterministic": "x"})


# The decorator with expected failures inside pytest: `seeded` is reported as xfailed.
@parametrize_with_checks([component("attack", "unseeded", unseeded)],
                         expected_failures={"seeded": "draws from its own generator"})
def test_parametrize_with_checks_reports_expected_failures(component, check):
    check(component)


def test_parametrize_takes_expected_failures_per_component(registry):
    def expected(target):
        return {"seeded": "randomised"} if target.kind == "attack" else None

    mark = parametrize_with_checks(["fgsm_like", component("model", "good", good_model)],
                                   registry=registry, expected_failures=expected)
    checks = {id_: value.values[1] if hasattr(value, "marks") else value[1]
              for id_, value in zip(mark.kwargs["ids"], mark.args[1], strict=True)}
    assert checks["fgsm_like-seeded"].expected_failure == "randomised"
    assert checks["good-logits"].expected_failure is None


# -- checks selected by declared capabilities ----------------------------------------------

CALLS = itertools.count()


def counted_random_attack(model, images, labels, eps, params):
    next(CALLS)
    return random_attack(model, images, labels, eps, params)


class RandomStartParams(benchlab.Params):
    random_start: bool = True


def maybe_random(model, images, labels, eps, params):
    attack = random_attack if params.random_start else good_attack
    return attack(model, images, labels, eps, params)


def test_a_declared_randomised_attack_has_the_batch_split_check_left_out():
    declared = component("attack", "random", counted_random_attack, randomised=True)
    (check,) = [c for c in check_attack(declared) if c.name == "batch_halves"]
    assert "declared randomised (register(..., randomised=...))" in (
        check.left_out_reason(declared))
    before = next(CALLS)
    result = check.run(declared)
    assert result.skipped and result.message.startswith("not applicable: the attack is "
                                                        "declared randomised")
    assert next(CALLS) == before + 1  # the attack was never called for a left-out check
    results = run_checks(declared)
    assert failing(results) == set() and skipped(results) == {"batch_halves"}


def test_randomised_may_be_a_function_of_the_parameters():
    declared = component("attack", "maybe", maybe_random, params=RandomStartParams,
                         randomised=lambda params: params.random_start)
    assert skipped(run_checks(declared)) == {"batch_halves"}
    deterministic = run_checks(declared, params={"random_start": False})
    assert all(r.passed for r in deterministic), deterministic


def test_an_attack_declared_deterministic_is_not_probed_and_a_false_claim_fails():
    lying = component("attack", "random", random_attack, randomised=False)
    results = {r.name: r for r in run_checks(lying)}
    assert results["batch_halves"].failed
    assert "two halves changes the result" in results["batch_halves"].message
    honest = component("attack", "good", good_attack, randomised=False)
    assert all(r.passed for r in run_checks(honest))


def test_parametrize_marks_the_checks_left_out_as_skipped():
    mark = parametrize_with_checks([component("model", "good", good_model),
                                    component("attack", "random", random_attack,
                                              randomised=True)])
    left_out = {id_: value.marks for id_, value in zip(mark.kwargs["ids"], mark.args[1],
                                                         strict=True) if hasattr(value, "marks")}
    assert set(left_out) == {"good-named_layers", "random-batch_halves"}
    (skip,) = left_out["good-named_layers"]
    assert skip.name == "skip" and "declares no layers" in skip.args[0]
    (skip,) = left_out["random-batch_halves"]
    assert skip.name == "skip" and "declared randomised" in skip.args[0]


def test_invalid_params_leave_the_check_in_to_report_them():
    needy = component("attack", "needy", needs_params, params=StepParams,
                      randomised=lambda params: True)
    results = {r.name: r for r in run_checks(needy)}
    assert results["batch_halves"].failed
    assert "no default for step" in results["batch_halves"].message


# -- broken training procedures ------------------------------------------------------

class BallParams(benchlab.Params):
    eps: float = 0.1


def _crafted_loss(perturb):
    def procedure(model, images, labels, generator, params):
        logits = model(perturb(model, images, labels, generator, params))
        return F.cross_entropy(logits, labels), logits

    return procedure


def good_perturb(model, images, labels, generator, params):
    noise = torch.empty_like(images).uniform_(-params.eps, params.eps, generator=generator)
    return (images + noise).clamp(0, 1)


def beyond_the_ball(model, images, labels, generator, params):
    return (images + 2 * params.eps).clamp(0, 1)


def global_noise(model, images, labels, generator, params):
    return (images + params.eps * torch.rand_like(images).sign()).clamp(0, 1)


def updates_statistics(model, images, labels, generator, params):
    model(images)  # a crafting pass in train mode that updates BatchNorm's estimates
    return good_perturb(model, images, labels, generator, params)


def leaves_a_grad(model, images, labels, generator, params):
    F.cross_entropy(model(images), labels).backward()  # gradients on the parameters
    return good_perturb(model, images, labels, generator, params)


def test_a_good_procedure_passes_every_check():
    good = component("procedure", "noisy", _crafted_loss(good_perturb), BallParams,
                     perturb=good_perturb)
    assert [(r.name, r.message) for r in run_checks(good) if r.failed] == []


@pytest.mark.parametrize(("perturb", "expected"), [
    (beyond_the_ball, {"eps_ball"}),
    (global_noise, {"generator_only"}),
    (updates_statistics, {"running_stats_kept"}),
    (leaves_a_grad, {"no_grad_left"}),
], ids=lambda v: case_id(v))
def test_a_broken_procedure_fails_its_check(perturb, expected):
    broken = component("procedure", perturb.__name__, _crafted_loss(perturb), BallParams,
                       perturb=perturb)
    assert expected <= failing(run_checks(broken))


def test_a_procedure_without_crafted_inputs_skips_their_checks():
    plain = component("procedure", "plain", lambda m, x, y, g, p: (
        F.cross_entropy(m(x), y), m(x)))
    assert skipped(run_checks(plain)) == {"eps_ball", "running_stats_kept"}
