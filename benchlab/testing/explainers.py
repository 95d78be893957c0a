"""The explainer checks: shape, finiteness, range, hooks removed, model and input
left alone, on the kit's tiny CNN and synthetic batch."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from benchlab import guards
from benchlab.components import Component
from benchlab.plugins import Registry
from benchlab.testing.expect import (
    ATOL,
    ModelState,
    expect_finite,
    expect_tensor,
    expect_unchanged,
    guard,
)
from benchlab.testing.fixtures import KIT_SEED, clean_images, fresh_inputs
from benchlab.testing.kit import Check, CheckFailure, CheckSpec, Setup, select_checks

__all__ = ["CHECKS", "check_explainer"]

_MODULE_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                 "_backward_pre_hooks")


def _explain(component: Component, setup: Setup,
             inputs: tuple[nn.Module, torch.Tensor] | None = None) -> torch.Tensor:
    """The explainer's maps for ``inputs`` (default: a fresh model and batch)."""
    params = setup.validated_params(component)
    model, images = inputs if inputs is not None else fresh_inputs(setup.device)[:2]
    torch.manual_seed(KIT_SEED)
    return component.obj(model, images, params)


def _hook_counts(model: nn.Module) -> dict[str, int]:
    """Hooks registered on ``model``'s modules and parameters, and global module hooks."""
    counts: dict[str, int] = {}
    for attribute in _MODULE_HOOKS:
        label = attribute.strip("_").replace("_", " ")
        counts[label] = sum(len(getattr(m, attribute, None) or {}) for m in model.modules())
        global_hooks = getattr(nn.modules.module, "_global" + attribute, None) or {}
        counts[f"global {label}"] = len(global_hooks)
    counts["parameter hooks"] = sum(len(p._backward_hooks or {}) for p in model.parameters())
    return counts


def _output_shape(component: Component, setup: Setup) -> None:
    """The maps have shape (N, H, W), a floating-point dtype and the input's device."""
    images = clean_images(setup.device)
    maps = _explain(component, setup)
    n, _, height, width = images.shape
    expect_tensor(maps, (n, height, width), images, "explanation maps", same_dtype=False)
    if not maps.is_floating_point():
        raise CheckFailure(f"explanation maps have dtype {maps.dtype}, expected floating point")


def _finite(component: Component, setup: Setup) -> None:
    """The maps have no NaN or Inf."""
    expect_finite(_explain(component, setup), "explanation maps")


def _in_range(component: Component, setup: Setup) -> None:
    """The maps lie in [0, 1] (the run-time guard)."""
    guard(guards.check_explanation, clean_images(setup.device), _explain(component, setup),
          atol=ATOL)


def _no_hooks_left(component: Component, setup: Setup) -> None:
    """No forward, forward-pre or backward hook is left on any module or parameter."""
    model, images, _ = fresh_inputs(setup.device)
    before = _hook_counts(model)
    _explain(component, setup, (model, images))
    after = _hook_counts(model)
    left = {where: after[where] - before.get(where, 0) for where in after
            if after[where] > before.get(where, 0)}
    if left:
        listing = ", ".join(f"{n} {where}" for where, n in sorted(left.items()))
        raise CheckFailure(f"hooks left behind: {listing}; remove each handle when done "
                           "(handle.remove() in a finally block)")


def _model_restored(component: Component, setup: Setup) -> None:
    """Module modes, requires_grad, .grad, parameters and buffers are as they were."""
    for frozen in (False, True):
        model, images, _ = fresh_inputs(setup.device)
        model.requires_grad_(not frozen)
        before = ModelState.of(model)
        _explain(component, setup, (model, images))
        before.expect_same(model, "with parameters " + ("frozen" if frozen else "trainable"))


def _input_unchanged(component: Component, setup: Setup) -> None:
    """The images passed in are not modified in place."""
    model, images, _ = fresh_inputs(setup.device)
    before = images.clone()
    _explain(component, setup, (model, images))
    expect_unchanged((before,), (images,), ("images",))


CHECKS = (
    CheckSpec("output_shape", _output_shape),
    CheckSpec("finite", _finite),
    CheckSpec("in_range", _in_range),
    CheckSpec("no_hooks_left", _no_hooks_left),
    CheckSpec("model_restored", _model_restored),
    CheckSpec("input_unchanged", _input_unchanged),
)


def check_explainer(component: Component | str, *, params: Mapping[str, Any] | None = None,
                    device: torch.device | str = "cpu", registry: Registry | None = None,
                    expected_failures: Mapping[str, str] | None = None) -> Iterator[Check]:
    """The checks for an explainer; run each as ``check(component)``."""
    return select_checks("explainer", CHECKS, component, params=params, device=device,
                         registry=registry, expected_failures=expected_failures)
