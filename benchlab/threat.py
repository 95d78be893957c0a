"""Threat models at run time: calling an attack and checking what it bounds.

An attack bounded by a ball returns one batch per ε and is checked against that
ball. A minimum-norm attack returns one batch; :func:`perturbation_norms` measures
the norm each image needed and :func:`within_budget` turns the batch into one
batch per ε of the suite: an image's adversarial where its norm is at most ε,
its clean image otherwise. Accuracy at ε of that batch is the accuracy the
attack leaves an adversary with budget ε, so both kinds are scored, tabled and
explained alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from benchlab import guards
from benchlab.components import Component, ThreatModel

__all__ = ["AttackOutput", "attack", "perturbation_norms", "within_budget"]


def perturbation_norms(images: torch.Tensor, adversarial: torch.Tensor, norm: str, *,
                       atol: float = 1e-5) -> torch.Tensor:
    """Norm of ``adversarial - images`` per image: (..., N, C, H, W) -> (..., N).

    L0 counts the pixel positions where some channel moved by more than ``atol``.
    """
    return guards.delta_norms(adversarial - images, norm, atol)


def within_budget(images: torch.Tensor, found: torch.Tensor, norms: torch.Tensor,
                  eps: Sequence[float]) -> torch.Tensor:
    """(len(eps), *images.shape): ``found`` where its norm is at most ε, else ``images``."""
    radius = torch.as_tensor(list(eps), dtype=norms.dtype, device=norms.device)
    inside = norms.unsqueeze(0) <= radius.unsqueeze(1)  # (E, N)
    mask = inside.view(*inside.shape, *([1] * (images.dim() - 1)))
    return torch.where(mask, found.unsqueeze(0), images.unsqueeze(0))


@dataclass
class AttackOutput:
    """One batch per ε; for a minimum-norm attack also the one batch it found and
    the norm of each image's perturbation in it."""

    threat: ThreatModel
    adversarial: torch.Tensor
    found: torch.Tensor | None = None
    norms: torch.Tensor | None = None


def attack(component: Component, model: torch.nn.Module, images: torch.Tensor,
           labels: torch.Tensor, eps: Sequence[float], params: Any) -> AttackOutput:
    """Call an attack and check its output against its threat model (the run-time guard)."""
    threat = component.threat(params)
    eps = [float(e) for e in eps]
    if not threat.minimum_norm:
        adversarial = component.obj(model, images, labels, eps, params)
        guards.check_adversarial(images, adversarial, eps, norm=threat.norm)
        return AttackOutput(threat, adversarial)
    found = component.obj(model, images, labels, eps, params)
    guards.check_found(images, found)
    norms = perturbation_norms(images, found, threat.norm)
    return AttackOutput(threat, within_budget(images, found, norms, eps), found, norms)
