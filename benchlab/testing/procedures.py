"""The training-procedure checks: what one step returns, that training with it lowers
its loss, determinism for a seed, randomness from the run's generator only, no
``.grad`` left by crafting, bf16 autocast, and, for a procedure that declares how it
crafts its inputs (``perturb=``), the ε-ball, [0, 1] and BatchNorm's running
statistics left alone."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from benchlab.components import Component
from benchlab.plugins import Registry
from benchlab.testing.expect import ATOL, REPEAT_ATOL, expect_finite, expect_tensor, max_gap
from benchlab.testing.fixtures import KIT_SEED, synthetic_batch, tiny_cnn
from benchlab.testing.kit import Check, CheckFailure, CheckSpec, Requirement, Setup, select_checks

__all__ = ["CHECKS", "check_procedure"]

STEPS = 15  # optimisation steps of the loss-decrease check
LR = 0.1


def _inputs(setup: Setup) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    images, labels = synthetic_batch(device=setup.device)
    return tiny_cnn(device=setup.device).train(), images, labels


def _generator(setup: Setup, seed: int = KIT_SEED) -> torch.Generator:
    return torch.Generator(setup.device).manual_seed(seed)


def _step(component: Component, setup: Setup, model: nn.Module, images: torch.Tensor,
          labels: torch.Tensor, seed: int = KIT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    result = component.obj(model, images, labels, _generator(setup, seed),
                           setup.validated_params(component))
    if not (isinstance(result, tuple) and len(result) == 2):
        raise CheckFailure(f"the procedure returned {type(result).__name__}, expected a "
                           "(loss, logits) pair")
    return result


def _declares_perturb(component: Component, setup: Setup) -> str | None:
    if component.extra.get("perturb") is None:
        return "the procedure declares no crafted inputs (register(..., perturb=...))"
    return None


def _has_eps(component: Component, setup: Setup) -> str | None:
    params = setup.validated_params(component)
    if not isinstance(getattr(params, "eps", None), (int, float)):
        return "the procedure's parameters have no 'eps'"
    return None


CRAFTS = Requirement("crafted inputs", _declares_perturb)
BALL = Requirement("an eps parameter", _has_eps)


def _perturb(component: Component, setup: Setup, model: nn.Module, images: torch.Tensor,
             labels: torch.Tensor) -> torch.Tensor:
    return component.extra["perturb"](model, images, labels, _generator(setup),
                                      setup.validated_params(component))


def _returns_loss(component: Component, setup: Setup) -> None:
    """A finite scalar loss that requires grad, and logits (N, classes) of the batch."""
    model, images, labels = _inputs(setup)
    loss, logits = _step(component, setup, model, images, labels)
    expect_tensor(loss, (), images, "the loss", same_dtype=False)
    expect_finite(loss, "the loss")
    if not loss.requires_grad:
        raise CheckFailure("the loss does not require grad: the trainer cannot backpropagate it")
    expect_tensor(logits, (images.shape[0], 10), images, "the logits", same_dtype=False)


def _lowers_its_loss(component: Component, setup: Setup) -> None:
    """A few SGD steps on one batch lower the procedure's loss (same draws before and after)."""
    model, images, labels = _inputs(setup)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    before = _step(component, setup, model, images, labels)[0].item()
    for step in range(STEPS):
        loss, _ = _step(component, setup, model, images, labels, KIT_SEED + 1 + step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    after = _step(component, setup, model, images, labels)[0].item()
    if not after < before:
        raise CheckFailure(f"{STEPS} SGD steps of lr {LR} on one batch took the loss from "
                           f"{before:.4f} to {after:.4f}; expected it lower")


def _deterministic(component: Component, setup: Setup) -> None:
    """The same model, batch and generator seed give the same loss, logits and gradients."""
    outcomes = []
    for _ in range(2):
        model, images, labels = _inputs(setup)
        loss, logits = _step(component, setup, model, images, labels)
        loss.backward()
        outcomes.append((loss.detach(), logits.detach(),
                         [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (loss_a, logits_a, grads_a), (loss_b, logits_b, grads_b) = outcomes
    gaps = [max_gap(loss_a, loss_b), max_gap(logits_a, logits_b),
            *(max_gap(a, b) for a, b in zip(grads_a, grads_b))]
    if len(grads_a) != len(grads_b) or max(gaps) > REPEAT_ATOL:
        raise CheckFailure(f"two steps with generators of one seed differ by up to "
                           f"{max(gaps):.3g}; draw every random number from the generator")


def _generator_only(component: Component, setup: Setup) -> None:
    """The global random number generator is left untouched (runs train side by side)."""
    model, images, labels = _inputs(setup)
    state = torch.random.get_rng_state()
    _step(component, setup, model, images, labels)
    if not torch.equal(state, torch.random.get_rng_state()):
        raise CheckFailure("the procedure drew from the global random number generator; "
                           "draw from the generator it is given")


def _no_grad_left(component: Component, setup: Setup) -> None:
    """Computing the loss leaves no .grad on the parameters and keeps requires_grad."""
    model, images, labels = _inputs(setup)
    _step(component, setup, model, images, labels)
    touched = [n for n, p in model.named_parameters() if p.grad is not None]
    if touched:
        raise CheckFailure(f"parameters with a .grad before the trainer's backward: "
                           f"{', '.join(touched)}; craft with torch.autograd.grad on the "
                           "inputs only")
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    if frozen:
        raise CheckFailure(f"parameters left with requires_grad=False: {', '.join(frozen)}")
    if not model.training:
        raise CheckFailure("the model was left in eval mode; restore train mode")


def _bf16(component: Component, setup: Setup) -> None:
    """Under bfloat16 autocast (training in bf16) the loss is finite and backpropagates."""
    model, images, labels = _inputs(setup)
    with torch.autocast(device_type=setup.device.type, dtype=torch.bfloat16):
        loss, _ = _step(component, setup, model, images, labels)
    expect_finite(loss, "the bf16 loss")
    loss.backward()


def _in_ball(component: Component, setup: Setup) -> None:
    """The crafted inputs lie in the ε-ball around the batch and in [0, 1], same shape."""
    model, images, labels = _inputs(setup)
    eps = float(setup.validated_params(component).eps)
    crafted = _perturb(component, setup, model, images, labels)
    expect_tensor(crafted, tuple(images.shape), images, "the crafted inputs")
    distance = (crafted - images).abs().max().item()
    if distance > eps + ATOL:
        raise CheckFailure(f"crafted inputs lie {distance:.6g} from the batch in L∞, "
                           f"beyond eps = {eps:g}")
    if crafted.min().item() < -ATOL or crafted.max().item() > 1 + ATOL:
        raise CheckFailure("crafted inputs leave [0, 1]")
    if distance == 0.0:
        raise CheckFailure("the crafted inputs equal the batch: nothing was crafted")


def _statistics_kept(component: Component, setup: Setup) -> None:
    """Crafting updates no BatchNorm running statistic and leaves the model in train mode."""
    model, images, labels = _inputs(setup)
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    _perturb(component, setup, model, images, labels)
    changed = [n for n, b in model.named_buffers() if not torch.equal(b, buffers[n])]
    if changed:
        raise CheckFailure(f"crafting changed the buffers {', '.join(changed)}; craft "
                           "without updating BatchNorm's running statistics")
    if not model.training:
        raise CheckFailure("crafting left the model in eval mode; restore train mode")


CHECKS = (
    CheckSpec("returns_loss", _returns_loss),
    CheckSpec("lowers_its_loss", _lowers_its_loss),
    CheckSpec("deterministic", _deterministic),
    CheckSpec("generator_only", _generator_only),
    CheckSpec("no_grad_left", _no_grad_left),
    CheckSpec("bf16", _bf16),
    CheckSpec("eps_ball", _in_ball, needs=(CRAFTS, BALL)),
    CheckSpec("running_stats_kept", _statistics_kept, needs=(CRAFTS,)),
)


def check_procedure(component: Component | str, *, params: Mapping[str, Any] | None = None,
                    device: torch.device | str = "cpu", registry: Registry | None = None,
                    expected_failures: Mapping[str, str] | None = None) -> Iterator[Check]:
    """The checks for a training procedure; run each as ``check(component)``."""
    return select_checks("procedure", CHECKS, component, params=params, device=device,
                         registry=registry, expected_failures=expected_failures)
