"""Projected gradient descent with a random start (Madry et al., 2018) for benchlab.

For each radius ε the attack starts from a uniformly random point of the L∞ ball
around the clean images ``x`` and takes ``steps`` signed gradient steps of the
cross-entropy, each followed by projection back onto the ball and onto [0, 1]::

    x_0     = clip(x + U(-ε, ε))
    x_{t+1} = clip(x_t + α · sign(∇ CE(f(x_t), y)))

where ``clip`` clamps to [x - ε, x + ε] ∩ [0, 1]. The default step size
α = 2.5 · ε / steps lets the iterate cross the whole ball (2ε) from any start.

The start noise comes from a ``torch.Generator`` seeded with ``seed`` when it is
set, otherwise from torch's global generator, so ``torch.manual_seed`` makes a
run reproducible. The attack needs only the gradient with respect to the input
(``torch.autograd.grad``): it changes neither the model's mode nor its
parameters' ``requires_grad`` or ``.grad``, and it never writes to its inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import benchlab
import torch
import torch.nn.functional as F
from pydantic import Field

__all__ = ["PGDParams", "pgd", "project", "register_attacks"]


class PGDParams(benchlab.Params):
    """Parameters of ``pgd``; unknown keys are rejected."""

    steps: int = Field(default=10, ge=1, description="gradient steps per epsilon")
    alpha: float | None = Field(
        default=None, gt=0.0, le=1.0,
        description="step size on the [0, 1] scale; default 2.5 * eps / steps")
    random_start: bool = Field(
        default=True, description="start from a uniform random point of the eps-ball")
    batch_size: int = Field(default=256, ge=1, description="images per forward/backward pass")
    seed: int | None = Field(
        default=None, description="seed of the random start; default torch's global generator")


def project(adv: torch.Tensor, images: torch.Tensor, eps: float) -> torch.Tensor:
    """The point of the L∞ ball of radius ``eps`` around ``images``, within [0, 1],
    nearest to ``adv``: both sets are boxes, so this is a per-pixel clamp."""
    return torch.clamp(adv, images - eps, images + eps).clamp_(0.0, 1.0)


def _ascend(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
            start: torch.Tensor, eps: float, alpha: float, steps: int) -> torch.Tensor:
    adv = start
    for _ in range(steps):
        adv = adv.detach().requires_grad_(True)
        with torch.enable_grad():
            # A sum, not a mean: each image's gradient is independent of its batch.
            loss = F.cross_entropy(model(adv), labels, reduction="sum")
            (grad,) = torch.autograd.grad(loss, adv)
        adv = project(adv.detach() + alpha * grad.sign(), images, eps)
    return adv.detach()


def pgd(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
        eps: Sequence[float], params: PGDParams) -> torch.Tensor:
    """One adversarial batch per epsilon: a tensor of shape (len(eps), *images.shape)."""
    images = images.detach()
    labels = labels.to(images.device)
    out = images.unsqueeze(0).repeat(len(eps), *([1] * images.dim()))
    noise = None
    if params.random_start:
        # Drawn once for the whole call, so batch_size does not change the result.
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=images.device).manual_seed(params.seed)
        noise = torch.empty_like(out).uniform_(-1.0, 1.0, generator=generator)
    for i, radius in enumerate(float(e) for e in eps):
        alpha = params.alpha if params.alpha is not None else 2.5 * radius / params.steps
        for start in range(0, images.shape[0], params.batch_size):
            chunk = slice(start, start + params.batch_size)
            x = images[chunk]
            x0 = x if noise is None else project(x + radius * noise[i, chunk], x, radius)
            out[i, chunk] = _ascend(model, x, labels[chunk], x0, radius, alpha, params.steps)
    return out


@benchlab.hookimpl
def register_attacks(register):
    register("pgd", pgd, params=PGDParams,
             description="projected gradient descent, L-inf, random start (Madry et al., 2018)")
