"""Adapters of torchattacks, Captum and pytorch-grad-cam: registration, parameters derived
from the libraries' signatures, what happens without the library, repairs, conformance."""

from __future__ import annotations

import subprocess
import sys
from typing import Literal

import pytest
import torch

import benchlab
from benchlab.adapters import library_call, params_from_signature
from benchlab.cli import main
from benchlab.plugins import build_registry, default_registry
from benchlab.suite import SuiteError, validate_suite
from benchlab.testing import attackable_mlp, parametrize_with_checks, synthetic_batch, tiny_cnn

torchattacks = pytest.importorskip("torchattacks")
captum_attr = pytest.importorskip("captum.attr")
pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")

from benchlab_plugins import captum_adapter, grad_cam_adapter, torchattacks_adapter  # noqa: E402

SUITE = {"name": "zoo", "dataset": {"name": "mnist"}, "models": [{"name": "cnn"}]}


# -- parameter models from signatures --------------------------------------------------

class _Library:
    def __init__(self, model, eps=8 / 255, steps=10, random_start=True, norm="Linf",
                 callback=print, seed=None):
        pass


def test_params_from_signature_takes_types_and_defaults():
    params = params_from_signature("LibParams", [_Library.__init__], skip=("model", "eps"),
                                   override={"norm": (Literal["Linf", "L2"], "Linf", "norm")})
    assert list(params.model_fields) == ["steps", "random_start", "norm"]
    assert params().steps == 10 and params(steps=3).steps == 3
    with pytest.raises(ValueError, match="steps"):
        params(steps="many")
    with pytest.raises(ValueError, match="norm"):
        params(norm="L1")
    with pytest.raises(ValueError, match="extra"):
        params(stpes=3)  # unknown keys are rejected, as for every component


def test_adapted_parameters_follow_the_library_and_benchlab_conventions():
    registry = default_registry()
    pgd = registry.get("attack", "torchattacks.PGD").params
    assert {"steps", "random_start", "alpha", "batch_size"} <= set(pgd.model_fields)
    assert pgd().alpha is None and pgd().steps == 10  # alpha: 2.5 * eps / steps
    assert "eps" not in pgd.model_fields  # the suite's eps list
    cw = registry.get("attack", "torchattacks.CW").params
    assert cw(c=0.5).c == 0.5  # the library's default is the int 1, meaning a real number
    ig = registry.get("explainer", "captum.IntegratedGradients").params
    assert ig().n_steps == 50 and ig().method == "gausslegendre"
    assert registry.get("explainer", "pytorch_grad_cam.GradCAMPlusPlus").params().layer is None


def test_a_misspelled_parameter_gets_a_did_you_mean():
    suite = {**SUITE, "attacks": [{"name": "torchattacks.PGD", "eps": [0.1], "step": 5}]}
    with pytest.raises(SuiteError) as caught:
        validate_suite(suite, default_registry())
    (problem,) = caught.value.problems
    assert "unknown key 'step'; did you mean 'steps'?" in str(problem)


def test_every_class_is_adapted_or_left_out_with_a_reason():
    registry = default_registry()
    attacks = set(registry.names("attack"))
    for name in torchattacks_adapter.attack_classes():
        key = f"torchattacks.{name}"
        assert (key in attacks) != (key in torchattacks_adapter.LEFT_OUT), key
    explainers = set(registry.names("explainer"))
    for name in captum_adapter.attribution_classes():
        key = f"captum.{name}"
        assert (key in explainers) != (key in captum_adapter.LEFT_OUT), key
    for name in grad_cam_adapter.cam_classes():
        key = f"pytorch_grad_cam.{name}"
        assert (key in explainers) != (key in grad_cam_adapter.LEFT_OUT), key
    assert "torchattacks.AutoAttack" in attacks and "captum.Saliency" in explainers


def test_plugins_lists_the_adapters_with_library_versions(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert f"adapts:      torchattacks {torchattacks.__version__}" in out
    assert "torchattacks.PGD" in out and "pytorch_grad_cam.ScoreCAM" in out
    assert "left out:    torchattacks.VANILA: returns its input" in out


def test_threat_models():
    registry = default_registry()

    def threat(name, **params):
        component = registry.get("attack", name)
        return str(component.threat(component.validate_params(params)))

    assert threat("torchattacks.PGD") == "L∞ ball"
    assert threat("torchattacks.PGDL2") == "L2 ball"
    assert threat("torchattacks.APGD", norm="L2") == "L2 ball"
    assert threat("torchattacks.CW") == "minimum L2"
    assert threat("torchattacks.FAB") == "minimum L∞"
    assert threat("fgsm") == "L∞ ball"


def test_eps_is_bounded_by_the_attacks_norm_on_the_datasets_images():
    """L2 radii beyond 1 are the usual ones on MNIST; the bound is the largest distance
    between two images with values in [0, 1] in the attack's norm (sqrt(784) = 28 for L2)."""
    registry = default_registry()
    attack = {"name": "torchattacks.PGDL2", "eps": [0.5, 1.5, 3.0]}
    suite = validate_suite({**SUITE, "attacks": [attack]}, registry)
    assert suite.attacks[0].eps == [0.5, 1.5, 3.0]
    validate_suite({**SUITE, "attacks": [{"name": "torchattacks.APGD", "norm": "L2",
                                          "eps": [2.0]}]}, registry)
    with pytest.raises(SuiteError) as caught:
        validate_suite({**SUITE, "attacks": [{**attack, "eps": [1.0, 28.5]},
                                             {"name": "torchattacks.PGD", "eps": [1.5]},
                                             {"name": "torchattacks.APGD", "norm": "L2",
                                              "eps": [28.0]}]}, registry)
    assert [str(p) for p in caught.value.problems] == [
        "<suite>: attacks.0.eps.1: expected a value <= 28 for 'torchattacks.PGDL2' (L2 ball): "
        "the largest L2 distance between two 1x28x28 images with values in [0, 1]; got 28.5",
        "<suite>: attacks.1.eps.0: expected a value <= 1 for 'torchattacks.PGD' (L∞ ball): "
        "the largest L∞ distance between two 1x28x28 images with values in [0, 1]; got 1.5"]


# -- without the library ------------------------------------------------------------------

def _without(monkeypatch, library: str, module: str) -> None:
    monkeypatch.setitem(sys.modules, library, None)  # `import library` raises ImportError
    monkeypatch.delitem(sys.modules, module, raising=False)


def test_without_the_library_the_plugin_is_available_and_the_suite_names_the_install(
        monkeypatch):
    _without(monkeypatch, "torchattacks", "benchlab_plugins.torchattacks_adapter")
    registry = build_registry()
    suite = {**SUITE, "attacks": [{"name": "torchattacks.PGD", "eps": [0.1]}]}
    with pytest.raises(SuiteError) as caught:
        validate_suite(suite, registry)
    assert not registry.failures
    (available,) = [a for a in registry.available if a.plugin == "torchattacks"]
    assert available.install == 'pip install "benchlab[torchattacks]"'
    (problem,) = caught.value.problems
    assert str(problem) == ("<suite>: attacks.0.name: attack 'torchattacks.PGD' needs "
                            "torchattacks, which is not installed; install it with: "
                            'pip install "benchlab[torchattacks]"')


def test_without_the_libraries_the_cli_says_how_to_install_them(tmp_path):
    suite = tmp_path / "zoo.yaml"
    suite.write_text("name: zoo\ndataset: {name: mnist}\nmodels: [{name: cnn}]\n"
                     "explainers: [{name: captum.IntegratedGradients}]\n")
    script = ("import sys\n"
              "for name in ('torchattacks', 'captum', 'pytorch_grad_cam'):\n"
              "    sys.modules[name] = None\n"
              "from benchlab.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    listing = subprocess.run([sys.executable, "-c", script, "plugins"], capture_output=True,
                             text=True, check=True).stdout
    assert ("pytorch_grad_cam  (benchlab " in listing
            and 'install with: pip install "benchlab[grad-cam]"' in listing)
    run = subprocess.run([sys.executable, "-c", script, "validate", str(suite)],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"{suite}:4: explainers.0.name: explainer 'captum.IntegratedGradients' needs captum, "
        'which is not installed; install it with: pip install "benchlab[captum]"']


def test_require_library_tells_a_missing_library_from_a_broken_one(tmp_path, monkeypatch):
    from benchlab.plugins import MissingLibrary, require_library

    (tmp_path / "brokenlib").mkdir()
    (tmp_path / "brokenlib" / "__init__.py").write_text("import a_dependency_nobody_has\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingLibrary) as missing:
        require_library("no_such_library.sub", library="no-such-library",
                        prefix="nsl.", install="pip install no-such-library")
    assert (missing.value.library, missing.value.prefix) == ("no-such-library", "nsl.")
    assert str(missing.value) == ("no-such-library is not installed; install it with: "
                                  "pip install no-such-library")
    # Installed but failing on one of its own imports: the real cause, not "not installed".
    with pytest.raises(ModuleNotFoundError) as broken:
        require_library("brokenlib", library="brokenlib", prefix="b.", install="-")
    assert not isinstance(broken.value, MissingLibrary)
    assert broken.value.name == "a_dependency_nobody_has"
    assert require_library("json", library="json", prefix="j.", install="-") is __import__("json")


def test_an_adapter_is_imported_only_when_a_suite_names_one_of_its_components(monkeypatch):
    for module in ("benchlab_plugins.torchattacks_adapter", "benchlab_plugins.captum_adapter"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    registry = build_registry()
    validate_suite({**SUITE, "attacks": [{"name": "fgsm", "eps": [0.1]}]}, registry)
    assert "benchlab_plugins.torchattacks_adapter" not in sys.modules
    validate_suite({**SUITE, "attacks": [{"name": "torchattacks.PGD", "eps": [0.1]}]}, registry)
    assert "benchlab_plugins.torchattacks_adapter" in sys.modules
    assert "benchlab_plugins.captum_adapter" not in sys.modules
    assert "captum.Saliency" in registry.names("explainer")  # listing loads every plugin


# -- repairs -------------------------------------------------------------------------------

def _model_with_grads() -> torch.nn.Module:
    model = tiny_cnn()
    for param in model.parameters():
        param.grad = torch.full_like(param, 0.5)
    return model


def test_cw_leaves_parameter_gradients_and_the_adapter_repairs_it():
    images, labels = synthetic_batch()
    model = tiny_cnn()
    torchattacks.CW(model, steps=2)(images, labels)  # the library alone
    assert any(p.grad is not None for p in model.parameters())

    model = _model_with_grads()
    attack = default_registry().get("attack", "torchattacks.CW")
    attack.obj(model, images, labels, [0.1], attack.validate_params({"steps": 2}))
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in model.parameters())


def test_torchattacks_loses_a_mixed_train_eval_mode_and_the_adapter_restores_it():
    images, labels = synthetic_batch()
    model = tiny_cnn().train()
    model.bn.eval()
    torchattacks.FGSM(model, eps=0.1)(images, labels)
    assert model.bn.training  # the library put every module back in train mode

    model = tiny_cnn().train()
    model.bn.eval()
    attack = default_registry().get("attack", "torchattacks.FGSM")
    attack.obj(model, images, labels, [0.1], attack.validate_params({}))
    assert model.training and not model.bn.training


def test_grad_cam_drops_parameter_gradients_and_the_adapter_repairs_it():
    images, _ = synthetic_batch()
    model = _model_with_grads()
    with pytorch_grad_cam.GradCAM(model, target_layers=[model.conv]) as cam:
        cam(images, None)
    # model.zero_grad() and backward(): the caller's gradients are gone
    assert not any(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in model.parameters())

    model = _model_with_grads()
    explainer = default_registry().get("explainer", "pytorch_grad_cam.GradCAM")
    explainer.obj(model, images, explainer.validate_params({}))
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in model.parameters())


def test_library_call_removes_leftover_hooks_and_restores_the_random_state():
    model = tiny_cnn()
    state = torch.random.get_rng_state()
    with library_call(model):
        model.conv.register_forward_hook(lambda *args: None)
        torch.manual_seed(123)
    assert not model.conv._forward_hooks
    assert torch.equal(torch.random.get_rng_state(), state)


# -- conformance --------------------------------------------------------------------------

@parametrize_with_checks([
    "torchattacks.PGD", "torchattacks.FGSM", "torchattacks.APGD", "torchattacks.PGDL2",
    ("torchattacks.CW", {"steps": 10}), "torchattacks.FAB", ("torchattacks.Square", {"n_queries": 20}),
    "captum.IntegratedGradients", "captum.Saliency", "captum.LayerGradCam", "captum.Occlusion",
    "captum.GuidedBackprop", "pytorch_grad_cam.GradCAMPlusPlus", "pytorch_grad_cam.ScoreCAM",
    "pytorch_grad_cam.HiResCAM",
])
def test_adapters_pass_the_conformance_kit(component, check):
    check(component)


# The library's DeepFool returns images it moved onto the decision boundary without
# crossing it: the kit's check that an attack attacks fails, as it should.
@parametrize_with_checks([("torchattacks.DeepFool", {"steps": 10})], expected_failures={
    "attacks": "torchattacks.DeepFool leaves most moved images on the boundary, unflipped"})
def test_deepfool_passes_the_kit_but_the_attacks_check(component, check):
    check(component)


def test_deepfool_returns_images_it_did_not_flip():
    """What the adapter's documentation states: of the 8 images of the kit's MLP,
    torchattacks.DeepFool moves every one and flips only 3."""
    model = attackable_mlp()
    images, _ = synthetic_batch()
    with torch.no_grad():
        labels = model(images).argmax(dim=1)
    deepfool = default_registry().get("attack", "torchattacks.DeepFool")
    found = deepfool.obj(model, images, labels, [1.0], deepfool.validate_params({"steps": 10}))
    moved = (found - images).flatten(1).abs().amax(dim=1) > 1e-5
    with torch.no_grad():
        flipped = model(found).argmax(dim=1) != labels
    assert int(moved.sum()) == 8 and int(flipped.sum()) == 3


def test_benchlab_check_passes_on_torchattacks_pgd(capsys):
    assert main(["check", "torchattacks.PGD"]) == 0
    assert "0 failed" in capsys.readouterr().out


def test_captum_layer_gradcam_adapter_is_benchlabs_gradcam():
    images, _ = synthetic_batch(n=16)
    registry = default_registry()
    ours = registry.get("explainer", "gradcam")
    theirs = registry.get("explainer", "captum.LayerGradCam")
    a = ours.obj(tiny_cnn(), images, ours.validate_params({}))
    b = theirs.obj(tiny_cnn(), images, theirs.validate_params({}))
    assert torch.allclose(a, b, atol=1e-5)


def test_version_is_recorded_by_the_plugin():
    info = default_registry().plugins["captum"]
    assert info.libraries == [captum_adapter.LIBRARY] and benchlab.__version__ == info.version
