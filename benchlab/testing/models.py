"""The model checks: logits for two dataset shapes, trainability, declared layers,
determinism in eval mode, the state dict round trip and the input left alone."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchlab import guards
from benchlab.components import Component, DatasetInfo
from benchlab.messages import describe
from benchlab.plugins import Registry
from benchlab.testing.expect import REPEAT_ATOL, expect_unchanged, max_gap
from benchlab.testing.fixtures import KIT_SEED, MNIST_SHAPED_INFO, SYNTHETIC_INFO, synthetic_batch
from benchlab.testing.kit import Check, CheckFailure, CheckSpec, Requirement, Setup, select_checks

__all__ = ["CHECKS", "check_model"]


def _build(component: Component, setup: Setup, info: DatasetInfo,
           seed: int = KIT_SEED) -> nn.Module:
    params = setup.validated_params(component)
    torch.manual_seed(seed)
    model = component.obj(info, params)
    if not isinstance(model, nn.Module):
        raise CheckFailure(f"build returned {type(model).__name__}, expected a torch.nn.Module")
    return model.to(setup.device).eval()


def _images(info: DatasetInfo, setup: Setup, n: int = 4) -> torch.Tensor:
    return synthetic_batch(n, info.shape, info.num_classes, device=setup.device)[0]


def _declared_layers(component: Component) -> list[str]:
    return list(component.extra.get("layers", ()))


def _no_layers_declared(component: Component, setup: Setup) -> str | None:
    if not _declared_layers(component):
        return "the component declares no layers (register(..., layers=[...]))"
    return None


DECLARES_LAYERS = Requirement("declared layers", _no_layers_declared)


def _logits(component: Component, setup: Setup) -> None:
    """Logits of shape (N, num_classes), finite, for a 3x32x32 and a 1x28x28 dataset."""
    for info in (SYNTHETIC_INFO, MNIST_SHAPED_INFO):
        where = f"for {info.num_classes} classes of shape {info.shape}"
        try:
            model = _build(component, setup, info)
            images = _images(info, setup)
            with torch.no_grad():
                logits = model(images)
        except CheckFailure:
            raise
        except Exception as exc:
            raise CheckFailure(f"{where}: raised {describe(exc)}") from exc
        try:
            guards.check_logits(logits, images.shape[0], info.num_classes)
        except guards.ComponentError as exc:
            raise CheckFailure(f"{where}: {exc}") from None


def _trainable(component: Component, setup: Setup) -> None:
    """The model has parameters that require grad, and the loss's gradient reaches them."""
    model = _build(component, setup, MNIST_SHAPED_INFO).train()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise CheckFailure("the model has no parameters that require grad")
    images, labels = synthetic_batch(4, MNIST_SHAPED_INFO.shape, 10, device=setup.device)
    loss = F.cross_entropy(model(images), labels)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    if all(g is None or not bool(g.any()) for g in grads):
        raise CheckFailure("the loss's gradient is zero for every parameter")


def _named_layers(component: Component, setup: Setup) -> None:
    """The layers the component declares (register(..., layers=[...])) exist by name."""
    names = {name for name, _ in _build(component, setup, MNIST_SHAPED_INFO).named_modules()}
    missing = [name for name in _declared_layers(component) if name not in names]
    if missing:
        known = ", ".join(sorted(n for n in names if n)) or "none"
        raise CheckFailure(f"declared layers missing from named_modules(): "
                           f"{', '.join(missing)}; the model has: {known}")


def _eval_deterministic(component: Component, setup: Setup) -> None:
    """In eval mode, the same input gives the same logits twice."""
    model = _build(component, setup, MNIST_SHAPED_INFO)
    images = _images(MNIST_SHAPED_INFO, setup)
    with torch.no_grad():
        gap = max_gap(model(images.clone()), model(images.clone()))
    if not gap <= REPEAT_ATOL:
        raise CheckFailure(f"two forward passes in eval mode differ by up to {gap:.3g} "
                           "(is dropout or noise active in eval mode?)")


def _state_dict_roundtrip(component: Component, setup: Setup) -> None:
    """A model built with another seed, loaded with this one's state_dict, gives the same logits."""
    source = _build(component, setup, MNIST_SHAPED_INFO, seed=KIT_SEED)
    target = _build(component, setup, MNIST_SHAPED_INFO, seed=KIT_SEED + 1)
    target.load_state_dict(source.state_dict())
    images = _images(MNIST_SHAPED_INFO, setup)
    outputs = []
    for model in (source, target):
        torch.manual_seed(KIT_SEED)  # only the state may differ, not the random numbers
        with torch.no_grad():
            outputs.append(model(images.clone()))
    gap = max_gap(*outputs)
    if not gap <= REPEAT_ATOL:
        raise CheckFailure(f"after load_state_dict the logits differ by up to {gap:.3g}: some "
                           "state that affects the output is not in state_dict()")


def _input_unchanged(component: Component, setup: Setup) -> None:
    """The forward pass does not modify its input (normalise out of place)."""
    model = _build(component, setup, MNIST_SHAPED_INFO)
    images = _images(MNIST_SHAPED_INFO, setup)
    before = images.clone()
    with torch.no_grad():
        model(images)
    expect_unchanged((before,), (images,), ("images",))


CHECKS = (
    CheckSpec("logits", _logits),
    CheckSpec("trainable", _trainable),
    CheckSpec("named_layers", _named_layers, needs=(DECLARES_LAYERS,)),
    CheckSpec("eval_deterministic", _eval_deterministic),
    CheckSpec("state_dict_roundtrip", _state_dict_roundtrip),
    CheckSpec("input_unchanged", _input_unchanged),
)


def check_model(component: Component | str, *, params: Mapping[str, Any] | None = None,
                device: torch.device | str = "cpu", registry: Registry | None = None,
                expected_failures: Mapping[str, str] | None = None) -> Iterator[Check]:
    """The checks for a model builder; run each as ``check(component)``."""
    return select_checks("model", CHECKS, component, params=params, device=device,
                         registry=registry, expected_failures=expected_failures)
