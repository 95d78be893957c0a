"""Run-time checks on what components return: benchlab trusts no plugin.

The runner passes every attack's, explainer's and model's output through one of
these functions before using it. A violation raises :class:`ComponentError`
with a one-line message that says what was violated and by how much; the runner
records it against the jobs that used the component and carries on with the rest.

The checks run on every batch, so each one is a few vectorised reductions
whose results reach the host in a single transfer; counting NaN and Inf, the
one extra pass, happens only when there is something to report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from benchlab.messages import NORM_LABELS

__all__ = ["ComponentError", "check_adversarial", "check_explainer_input", "check_explanation",
           "check_found", "check_logits", "delta_norms"]


class ComponentError(Exception):
    """A component returned something that breaks its contract."""


def check_adversarial(images: torch.Tensor, adv: object, eps: Sequence[float], *,
                      atol: float = 1e-5, norm: str = "linf") -> None:
    """Check an attack's output ``adv`` for the clean ``images`` and radii ``eps``.

    ``adv`` must be a tensor of shape ``(len(eps), *images.shape)`` with the dtype
    and device of ``images``, finite, inside [0, 1] and, for every ``i``, inside
    the ``norm`` ball (``linf``, ``l2``, ``l1`` or ``l0``) of radius ``eps[i]``
    around ``images``; the last two within ``atol`` (relative to ε for L2 and L1,
    exact for the L0 count).
    """
    eps = [float(e) for e in eps]
    _check_tensor("adversarial batch", adv, (len(eps), *images.shape), images)
    assert isinstance(adv, torch.Tensor)
    if adv.numel() == 0:
        return
    distance = delta_norms(adv - images, norm, atol).view(len(eps), -1).amax(dim=1)
    low, high, *dist = _host(*torch.aminmax(adv), distance)
    _raise_if_nonfinite("adversarial batch", adv, low, high)
    _raise_if_outside_unit_range("adversarial batch", low, high, atol)
    tolerance = [_tolerance(norm, e, atol) for e in eps]
    excess = [d - e - t for d, e, t in zip(dist, eps, tolerance, strict=True)]
    worst = max(range(len(eps)), key=excess.__getitem__)
    if excess[worst] > 0:
        name = NORM_LABELS.get(norm, norm)
        bars = ("|", "|") if norm == "linf" else ("‖", "‖")
        raise ComponentError(
            f"adversarial batch: outside the {name} ε-ball: max {bars[0]}adv - x{bars[1]} = "
            f"{dist[worst]:.6g} "
            f"for ε = {eps[worst]:.6g} (eps[{worst}]), over by {dist[worst] - eps[worst]:.3g} "
            f"(tolerance {tolerance[worst]:g})")


def _tolerance(norm: str, eps: float, atol: float) -> float:
    """How far past ε a norm may be from rounding alone: ``atol`` per pixel for L∞,
    relative for the sums (L2, L1), none for a count (L0)."""
    if norm == "linf":
        return atol
    if norm == "l0":
        return 0.0
    return atol * max(1.0, eps)


def check_found(images: torch.Tensor, adv: object, *, atol: float = 1e-5) -> None:
    """Check a minimum-norm attack's output: one batch shaped like ``images``, with
    their dtype and device, finite and inside [0, 1] within ``atol``."""
    _check_tensor("adversarial batch", adv, tuple(images.shape), images)
    assert isinstance(adv, torch.Tensor)
    if adv.numel() == 0:
        return
    low, high = _host(*torch.aminmax(adv))
    _raise_if_nonfinite("adversarial batch", adv, low, high)
    _raise_if_outside_unit_range("adversarial batch", low, high, atol)


def delta_norms(delta: torch.Tensor, norm: str, atol: float) -> torch.Tensor:
    """Per-image norms of ``delta`` (..., C, H, W) -> (...). L0 counts pixel
    positions where any channel moved by more than ``atol``."""
    flat = delta.flatten(-3)
    if norm == "linf":
        return flat.abs().amax(dim=-1)
    if norm == "l2":
        return flat.float().norm(dim=-1)
    if norm == "l1":
        return flat.abs().sum(dim=-1)
    if norm == "l0":
        return (delta.abs() > atol).any(dim=-3).flatten(-2).sum(dim=-1).to(delta.dtype)
    raise ValueError(f"unknown norm {norm!r}; expected linf, l2, l1 or l0")


def check_explainer_input(images: torch.Tensor) -> None:
    """What an explainer receives: a float tensor (N, C, H, W); ValueError otherwise."""
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"images must be a float tensor (N, C, H, W), got "
                         f"{images.dtype} {tuple(images.shape)}")


def check_explanation(images: torch.Tensor, maps: object, *, atol: float = 1e-5) -> None:
    """Check an explainer's output ``maps`` for ``images`` of shape (N, C, H, W).

    ``maps`` must be a floating-point tensor of shape (N, H, W) on the device of
    ``images``, finite and inside [0, 1] within ``atol``.
    """
    n, _, height, width = images.shape
    _check_tensor("explanation maps", maps, (n, height, width), images, same_dtype=False)
    assert isinstance(maps, torch.Tensor)
    if not maps.is_floating_point():
        raise ComponentError(f"explanation maps: dtype {maps.dtype}, expected a "
                             "floating-point dtype")
    if maps.numel() == 0:
        return
    low, high = _host(*torch.aminmax(maps))
    _raise_if_nonfinite("explanation maps", maps, low, high)
    _raise_if_outside_unit_range("explanation maps", low, high, atol)


def check_logits(logits: object, n: int, num_classes: int) -> None:
    """Check a model's output: floating-point logits of shape (n, num_classes), finite."""
    if not isinstance(logits, torch.Tensor):
        raise ComponentError(f"model returned {type(logits).__name__}, expected a torch.Tensor "
                             f"of logits of shape ({n}, {num_classes})")
    if tuple(logits.shape) != (n, num_classes):
        raise ComponentError(f"logits: shape {_shape(logits.shape)}, expected "
                             f"({n}, {num_classes}) (images, classes)")
    if not logits.is_floating_point():
        raise ComponentError(f"logits: dtype {logits.dtype}, expected a floating-point dtype")
    if logits.numel():
        _raise_if_nonfinite("logits", logits, *_host(*torch.aminmax(logits)))


# -- pieces ----------------------------------------------------------------------

def _check_tensor(what: str, value: object, shape: tuple[int, ...], like: torch.Tensor,
                  *, same_dtype: bool = True) -> None:
    """Type and shape; device and (with ``same_dtype``) dtype of ``like``."""
    if not isinstance(value, torch.Tensor):
        raise ComponentError(f"{what}: got {type(value).__name__}, expected a torch.Tensor of "
                             f"shape {_shape(shape)}")
    if tuple(value.shape) != tuple(shape):
        raise ComponentError(f"{what}: shape {_shape(value.shape)}, expected {_shape(shape)}")
    if same_dtype and value.dtype != like.dtype:
        raise ComponentError(f"{what}: dtype {value.dtype}, expected {like.dtype} "
                             "(the input's)")
    if value.device != like.device:
        raise ComponentError(f"{what}: device {value.device}, expected {like.device} "
                             "(the input's)")


def _host(*parts: torch.Tensor) -> list[float]:
    """Every value of ``parts`` as Python floats, in one device-to-host transfer."""
    flat = [p.detach().reshape(-1).to(torch.float64) for p in parts]
    return torch.cat(flat).tolist()


def _raise_if_nonfinite(what: str, x: torch.Tensor, low: float, high: float) -> None:
    """``low`` and ``high`` are ``x``'s extremes: NaN propagates into them and an
    infinite value is one of them, so only a failing tensor needs counting."""
    if math.isfinite(low) and math.isfinite(high):
        return
    nan, inf = _host(torch.isnan(x).sum(), torch.isinf(x).sum())
    raise ComponentError(f"{what}: non-finite values: {int(nan)} NaN, {int(inf)} Inf")


def _raise_if_outside_unit_range(what: str, low: float, high: float, atol: float) -> None:
    if low < -atol:
        raise ComponentError(f"{what}: outside [0, 1]: minimum {low:.6g}, below 0 by {-low:.3g} "
                             f"(tolerance {atol:g})")
    if high > 1.0 + atol:
        raise ComponentError(f"{what}: outside [0, 1]: maximum {high:.6g}, above 1 by "
                             f"{high - 1.0:.3g} (tolerance {atol:g})")


def _shape(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"
