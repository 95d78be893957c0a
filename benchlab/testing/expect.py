"""Assertions the checks share: each raises :class:`CheckFailure` saying what is
wrong and by how much."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from benchlab import guards
from benchlab.testing.kit import CheckFailure

__all__ = ["ATOL", "REPEAT_ATOL", "ModelState", "expect_finite", "expect_tensor",
           "expect_unchanged", "guard", "listing", "max_gap"]

# Pixel tolerance of the ε-ball and [0, 1] checks; the run-time guards use the same.
ATOL = 1e-5
# Largest allowed gap between results that should be identical: recomputing the
# same thing (same seed, a batch and its halves) may differ by rounding only.
REPEAT_ATOL = 1e-6


def guard(check: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    """Run one of the run-time guards; its verdict becomes the check's."""
    try:
        check(*args, **kwargs)
    except guards.ComponentError as exc:
        raise CheckFailure(str(exc)) from None


def expect_tensor(value: object, shape: tuple[int, ...], like: torch.Tensor, what: str,
                  *, same_dtype: bool = True) -> None:
    """``value`` is a tensor of ``shape`` on ``like``'s device (and of its dtype)."""
    if not isinstance(value, torch.Tensor):
        raise CheckFailure(f"{what} is a {type(value).__name__}, expected a torch.Tensor")
    problems = []
    if tuple(value.shape) != tuple(shape):
        problems.append(f"shape {tuple(value.shape)}, expected {tuple(shape)}")
    if same_dtype and value.dtype != like.dtype:
        problems.append(f"dtype {value.dtype}, expected {like.dtype}")
    if value.device != like.device:
        problems.append(f"device {value.device}, expected {like.device}")
    if problems:
        raise CheckFailure(f"{what} has " + "; ".join(problems))


def expect_finite(value: object, what: str) -> None:
    """``value`` is a tensor with no NaN or Inf."""
    if not isinstance(value, torch.Tensor):
        raise CheckFailure(f"{what} is a {type(value).__name__}, expected a torch.Tensor")
    bad = int((~torch.isfinite(value)).sum())
    if bad:
        nan = int(torch.isnan(value).sum())
        raise CheckFailure(f"{what} has {bad} non-finite values ({nan} NaN, {bad - nan} Inf)")


def expect_unchanged(before: Sequence[torch.Tensor], after: Sequence[torch.Tensor],
                     names: Sequence[str]) -> None:
    """The inputs a component was given are as they were before the call."""
    changed = [name for name, b, a in zip(names, before, after, strict=True)
               if not torch.equal(b, a)]
    if changed:
        raise CheckFailure(f"modified its input in place: {', '.join(changed)}; "
                           "work on a copy (x.clone(), or out-of-place ops)")


def max_gap(a: object, b: object) -> float:
    """Largest absolute difference; inf when the shapes differ or where only one is NaN."""
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape:
        return float("inf")
    if a.numel() == 0:
        return 0.0
    diff = (a.double() - b.double()).abs()
    both_nan = torch.isnan(a) & torch.isnan(b)
    return float(diff.masked_fill(both_nan, 0.0).nan_to_num(nan=float("inf")).max())


@dataclass(frozen=True)
class ModelState:
    """What a component must leave as it found it on the model it was given."""

    modes: dict[str, bool]
    requires_grad: dict[str, bool]
    has_grad: dict[str, bool]
    tensors: dict[str, torch.Tensor]

    @classmethod
    def of(cls, model: nn.Module) -> ModelState:
        return cls(
            modes={name or "<root>": m.training for name, m in model.named_modules()},
            requires_grad={name: p.requires_grad for name, p in model.named_parameters()},
            has_grad={name: p.grad is not None for name, p in model.named_parameters()},
            tensors={name: t.detach().clone() for name, t in model.state_dict().items()},
        )

    def expect_same(self, model: nn.Module, when: str) -> None:
        now = ModelState.of(model)
        problems = []
        modes = _differing(self.modes, now.modes)
        if modes:
            problems.append(f"train/eval mode changed on {modes}")
        grads = _differing(self.requires_grad, now.requires_grad)
        if grads:
            problems.append(f"requires_grad changed on {grads}")
        left = _differing(self.has_grad, now.has_grad)
        if left:
            problems.append(f".grad left on {left} (use torch.autograd.grad)")
        changed = sorted(name for name, t in self.tensors.items()
                         if name not in now.tensors or not torch.equal(t, now.tensors[name]))
        if changed:
            problems.append(f"parameters or buffers changed: {listing(changed)}")
        if problems:
            raise CheckFailure(f"{when}: " + "; ".join(problems))


def _differing(before: Mapping[str, bool], after: Mapping[str, bool]) -> str:
    return listing(sorted(k for k in before if before[k] != after.get(k)))


def listing(names: Sequence[str], limit: int = 4) -> str:
    """The first ``limit`` names, and how many more there are."""
    if not names:
        return ""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
