"""The attack checks: shape, finiteness, the ε-ball, inputs and model left alone,
ε = 0, batch independence, seeding, and that the attack attacks, on the kit's tiny
CNN and synthetic batch.

A minimum-norm attack returns one batch with no ε to respect; the checks see it
as the batches per ε derived from it, as the runner does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from benchlab import guards
from benchlab.components import Component
from benchlab.plugins import Registry
from benchlab.testing.expect import (
    ATOL,
    REPEAT_ATOL,
    ModelState,
    expect_finite,
    expect_tensor,
    expect_unchanged,
    guard,
    max_gap,
)
from benchlab.testing.fixtures import (
    KIT_SEED,
    Inputs,
    attackable_mlp,
    clean_images,
    fresh_inputs,
    synthetic_batch,
)
from benchlab.testing.kit import (
    Check,
    CheckFailure,
    CheckSpec,
    Requirement,
    Setup,
    SkipCheck,
    select_checks,
)
from benchlab.threat import perturbation_norms, within_budget

__all__ = ["ATTACK_EPS", "CHECKS", "EFFECT_EPS", "check_attack", "declared_no_effect",
           "declared_randomised"]

ATTACK_EPS = (0.03, 0.1, 0.3)
#: the largest ε of each norm, at which an attack must lower the accuracy or raise the
#: loss of the kit's model (its images have 1x16x16 = 256 pixels)
EFFECT_EPS = {"linf": 0.3, "l2": 3.0, "l1": 30.0, "l0": 32.0}


def _attack(component: Component, setup: Setup, eps: Sequence[float] = ATTACK_EPS, *,
            inputs: Inputs | None = None, part: slice = slice(None),
            seed: int = KIT_SEED) -> torch.Tensor:
    """The attack's output on ``inputs`` (default: fresh ones) after torch.manual_seed(seed)."""
    params = setup.validated_params(component)
    model, images, labels = inputs if inputs is not None else fresh_inputs(setup.device, part)
    torch.manual_seed(seed)
    output = component.obj(model, images, labels, list(eps), params)
    threat = component.threat(params)
    if not threat.minimum_norm:
        return output
    # One batch with no ε to respect: checked as the batches per ε derived from it.
    expect_tensor(output, tuple(images.shape), images, "minimum-norm attack output")
    expect_finite(output, "minimum-norm attack output")
    clean = synthetic_batch(device=setup.device)[0][part]
    return within_budget(clean, output, perturbation_norms(clean, output, threat.norm), eps)


# -- what an attack declares -----------------------------------------------------------

def declared_randomised(component: Component, setup: Setup) -> bool | None:
    """What the attack declares with ``register(..., randomised=...)`` (a bool, or a
    function of its validated parameters); None when it declares nothing."""
    declared = component.extra.get("randomised")
    if callable(declared):
        declared = declared(setup.validated_params(component))
    return None if declared is None else bool(declared)


def _not_declared_randomised(component: Component, setup: Setup) -> str | None:
    if declared_randomised(component, setup):
        return ("not applicable: the attack is declared randomised (register(..., "
                "randomised=...)), and a randomised attack's result for an image depends "
                "on the rest of its batch")
    return None


DETERMINISTIC = Requirement("deterministic", _not_declared_randomised)


def declared_no_effect(component: Component, setup: Setup) -> str | None:
    """Why the attack may leave an undefended model as accurate as it was, as declared
    with ``register(..., no_effect=...)`` (text, or a function of its validated
    parameters giving text or None); None when it declares nothing."""
    declared = component.extra.get("no_effect")
    if callable(declared):
        declared = declared(setup.validated_params(component))
    return str(declared) if declared else None


def _declared_no_effect(component: Component, setup: Setup) -> str | None:
    reason = declared_no_effect(component, setup)
    if reason:
        return f"not applicable: the attack declares it may leave the model as it was " \
               f"(register(..., no_effect=...)): {reason}"
    return None


MAY_HAVE_NO_EFFECT = Requirement("attacks", _declared_no_effect)


# -- checks --------------------------------------------------------------------------

def _output_shape(component: Component, setup: Setup) -> None:
    """The output has shape (len(eps), *images.shape) and the input's dtype and device."""
    images = clean_images(setup.device)
    expect_tensor(_attack(component, setup), (len(ATTACK_EPS), *images.shape), images,
                  "attack output")


def _finite(component: Component, setup: Setup) -> None:
    """The output has no NaN or Inf."""
    expect_finite(_attack(component, setup), "attack output")


def _eps_ball(component: Component, setup: Setup) -> None:
    """Each eps's batch lies in [0, 1] and in the ball of radius eps of the attack's
    norm (the run-time guard); a minimum-norm attack's batch lies in [0, 1]."""
    norm = component.threat(setup.validated_params(component)).norm
    guard(guards.check_adversarial, clean_images(setup.device), _attack(component, setup),
          ATTACK_EPS, atol=ATOL, norm=norm)


def _input_unchanged(component: Component, setup: Setup) -> None:
    """The images and labels passed in are not modified in place."""
    inputs = fresh_inputs(setup.device)
    before = inputs[1].clone(), inputs[2].clone()
    _attack(component, setup, inputs=inputs)
    expect_unchanged(before, inputs[1:], ("images", "labels"))


def _model_restored(component: Component, setup: Setup) -> None:
    """Module modes, requires_grad, .grad, parameters and buffers are as they were."""
    for frozen in (False, True):
        inputs = fresh_inputs(setup.device)
        inputs[0].requires_grad_(not frozen)
        before = ModelState.of(inputs[0])
        _attack(component, setup, inputs=inputs)
        before.expect_same(inputs[0], "with parameters " + ("frozen" if frozen else "trainable"))


def _eps_zero(component: Component, setup: Setup) -> None:
    """eps = 0 returns the input unchanged."""
    images = clean_images(setup.device)
    adv = _attack(component, setup, (0.0, ATTACK_EPS[-1]))
    expect_tensor(adv, (2, *images.shape), images, "attack output")
    gap = max_gap(adv[0], images)
    if not gap <= REPEAT_ATOL:
        raise CheckFailure(f"with eps = 0 the output differs from the input by up to {gap:.3g}")


def _batch_halves(component: Component, setup: Setup) -> None:
    """A batch gives the same result as its two halves attacked separately."""
    images = clean_images(setup.device)
    whole = _attack(component, setup)
    expect_tensor(whole, (len(ATTACK_EPS), *images.shape), images, "attack output")
    if declared_randomised(component, setup) is None:
        # Nothing declared: probe whether the output depends on the seed.
        seed_gap = max_gap(whole, _attack(component, setup, seed=KIT_SEED + 1))
        if seed_gap > REPEAT_ATOL:
            raise SkipCheck(f"not applicable: the output depends on the random seed (seeds "
                            f"{KIT_SEED} and {KIT_SEED + 1} differ by up to {seed_gap:.3g}), "
                            "and a randomised attack's result for an image depends on the "
                            "rest of its batch")
    half = images.shape[0] // 2
    parts = [_attack(component, setup, part=part)
             for part in (slice(0, half), slice(half, None))]
    for part in parts:
        expect_tensor(part, (len(ATTACK_EPS), half, *images.shape[1:]), images,
                      "attack output of a half batch")
    gap = max_gap(whole, torch.cat(parts, dim=1))
    if not gap <= REPEAT_ATOL:
        raise CheckFailure(f"attacking the batch in two halves changes the result by up to "
                           f"{gap:.3g}: an image's result must not depend on the rest of "
                           "its batch")


def _seeded(component: Component, setup: Setup) -> None:
    """Two calls after torch.manual_seed(0) give the same result."""
    images = clean_images(setup.device)
    first, second = _attack(component, setup), _attack(component, setup)
    expect_tensor(first, (len(ATTACK_EPS), *images.shape), images, "attack output")
    gap = max_gap(first, second)
    if not gap <= REPEAT_ATOL:
        raise CheckFailure(f"two calls after torch.manual_seed({KIT_SEED}) differ by up to "
                           f"{gap:.3g}: draw random numbers from torch's global generator "
                           "or from a seeded torch.Generator")


def _loss_and_accuracy(model: torch.nn.Module, images: torch.Tensor,
                       labels: torch.Tensor) -> tuple[float, float]:
    with torch.no_grad():
        logits = model(images)
    loss = torch.nn.functional.cross_entropy(logits.double(), labels)
    return float(loss), float((logits.argmax(dim=1) == labels).double().mean())


def _attacks(component: Component, setup: Setup) -> None:
    """At the largest ε of its norm the attack lowers the accuracy or raises the loss
    of an undefended model (the kit's MLP, labelled with its own predictions, so every
    image starts correct); a minimum-norm attack flips most images it returns changed."""
    params = setup.validated_params(component)
    threat = component.threat(params)
    eps = EFFECT_EPS[threat.norm]
    images = clean_images(setup.device)
    model = attackable_mlp(device=setup.device)
    with torch.no_grad():
        labels = model(images).argmax(dim=1)
    torch.manual_seed(KIT_SEED)
    output = component.obj(model, images.clone(), labels.clone(), [eps], params)
    where = f"at ε = {eps:g} ({threat})"
    if threat.minimum_norm:
        expect_tensor(output, tuple(images.shape), images, "minimum-norm attack output")
        changed = max_gap_per_image(output, images) > ATOL
        if not bool(changed.any()):
            raise CheckFailure(f"does not attack: returned all {len(images)} images "
                               "unchanged on the kit's MLP (an image it fails on is "
                               "returned as it was)")
        with torch.no_grad():
            flipped = model(output).argmax(dim=1) != labels
        kept = int((changed & ~flipped).sum())
        if 2 * kept >= int(changed.sum()):
            raise CheckFailure(f"does not attack: of the {int(changed.sum())} images it "
                               f"returned changed, {kept} keep the model's prediction "
                               "(a minimum-norm attack must flip most images it returns "
                               "changed; return an image it fails on unchanged)")
        return
    expect_tensor(output, (1, *images.shape), images, "attack output")
    clean_loss, clean_accuracy = _loss_and_accuracy(model, images, labels)
    loss, accuracy = _loss_and_accuracy(model, output[0], labels)
    if accuracy < clean_accuracy or loss > clean_loss + 1e-6 * max(1.0, clean_loss):
        return
    raise CheckFailure(
        f"does not attack: {where} the kit's MLP keeps {100 * accuracy:.0f}% accuracy "
        f"and its loss does not rise ({clean_loss:.4g} on the clean images, {loss:.4g} "
        "attacked); an attack that may leave a model as it was says why with "
        "register(..., no_effect=\"...\")")


def max_gap_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Largest absolute difference per image: (N, ...) -> (N,)."""
    return (a.double() - b.double()).abs().flatten(1).amax(dim=1)


CHECKS = (
    CheckSpec("output_shape", _output_shape),
    CheckSpec("finite", _finite),
    CheckSpec("eps_ball", _eps_ball),
    CheckSpec("input_unchanged", _input_unchanged),
    CheckSpec("model_restored", _model_restored),
    CheckSpec("eps_zero", _eps_zero),
    CheckSpec("batch_halves", _batch_halves, needs=(DETERMINISTIC,)),
    CheckSpec("seeded", _seeded),
    CheckSpec("attacks", _attacks, needs=(MAY_HAVE_NO_EFFECT,)),
)


def check_attack(component: Component | str, *, params: Mapping[str, Any] | None = None,
                 device: torch.device | str = "cpu", registry: Registry | None = None,
                 expected_failures: Mapping[str, str] | None = None) -> Iterator[Check]:
    """The checks for an attack; run each as ``check(component)``.

    ``params`` are the values to validate with the component's parameter model
    (needed only when some field has no default). ``expected_failures`` maps the
    name of a check the attack is known to fail to the reason.
    """
    return select_checks("attack", CHECKS, component, params=params, device=device,
                         registry=registry, expected_failures=expected_failures)
