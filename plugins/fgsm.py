"""Fast Gradient Sign Method attacks: one step (``fgsm``) and iterated (``ifgsm``).

Conventions follow torchattacks: images are in [0, 1], epsilon is on that scale,
normalisation belongs to the model and the gradient is taken with respect to the
[0, 1] input. As in Foolbox, one call evaluates a whole list of epsilons and
returns one adversarial batch per epsilon, stacked along a new first dimension.

Untargeted attacks ascend the cross-entropy of the true label::

    x' = clamp(x + eps * sign(grad_x CE(f(x), y)), 0, 1)

Targeted attacks descend the cross-entropy of a target class ``t``::

    x' = clamp(x - eps * sign(grad_x CE(f(x), t)), 0, 1)

The target is ``target_class`` when it is set, otherwise the class after the true
one, ``(y + 1) % num_classes``: deterministic, and never the true label, so every
image has somewhere to go. :func:`attack_targets` returns the targets an attack
aimed at, so success rates can be computed against them.

``ifgsm`` is the basic iterative method of Kurakin et al. (2017): ``steps`` signed
steps of size ``alpha`` (``eps / steps`` by default), each followed by projection
onto the L-infinity ball of radius ``eps`` around ``x`` and onto [0, 1]; it starts
from ``x`` itself (no random start), so results are deterministic.

While attacking, the model is in eval mode and its parameters do not require
gradients (an attack needs only the input gradient, and skipping the weight
gradients makes each backward pass cheaper); both are restored afterwards, also
when the model raises. The input tensor is never modified.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

import benchlab
from benchlab import Params
from benchlab.modes import frozen_eval

# Images (fgsm) or (image, epsilon) rows (ifgsm) per forward/backward pass. On a
# 2-core CPU with cnn_bn, benchmarks/bench_attacks.py measured batches of 32-64 at
# about twice the per-image rate of batches of 256 or 1,000.
DEFAULT_BATCH_SIZE = 64


class FGSMParams(Params):
    """Parameters of ``fgsm``."""

    targeted: bool = Field(
        default=False, description="move toward a target class instead of away from the label")
    target_class: int | None = Field(
        default=None, ge=0,
        description="target of a targeted attack; default (label + 1) % num_classes")
    batch_size: int = Field(
        default=DEFAULT_BATCH_SIZE, ge=1, description="images per forward/backward pass")

    @model_validator(mode="after")
    def _target_needs_targeted(self) -> FGSMParams:
        if self.target_class is not None and not self.targeted:
            raise ValueError("target_class is only used by a targeted attack: "
                             "set targeted: true as well")
        return self


class IFGSMParams(FGSMParams):
    """Parameters of ``ifgsm``."""

    # 10,000 steps on 10,000 images is already a day of CPU; more is a typo
    steps: int = Field(default=100, ge=1, le=10_000, description="number of signed gradient steps")
    alpha: float | None = Field(
        default=None, gt=0.0, le=1.0,
        description="step size on the [0, 1] scale; default eps / steps")
    batch_size: int = Field(
        default=DEFAULT_BATCH_SIZE, ge=1,
        description="(image, epsilon) pairs per forward/backward pass")


# -- numerics ------------------------------------------------------------------

def fgsm_step(images: torch.Tensor, grad: torch.Tensor, step: float | torch.Tensor,
              *, targeted: bool = False) -> torch.Tensor:
    """One signed gradient step of size ``step``, clamped to [0, 1].

    ``step`` may be a tensor broadcasting against ``images`` (one size per row).
    Pixels whose gradient is exactly zero do not move, and a zero step returns
    ``images`` unchanged (for images already in [0, 1]).
    """
    direction = grad.sign()
    if targeted:
        direction = direction.neg()
    return (images + step * direction).clamp_(0.0, 1.0)


def project_linf(adv: torch.Tensor, images: torch.Tensor,
                 eps: float | torch.Tensor) -> torch.Tensor:
    """The point nearest to ``adv`` in the L-infinity ball of radius ``eps`` around
    ``images``, intersected with [0, 1].

    Both sets are boxes, so the projection is a per-pixel clamp; the ball's centre
    lies in [0, 1], so the intersection is never empty.
    """
    eps = torch.as_tensor(eps, dtype=images.dtype, device=images.device)
    return torch.clamp(adv, images - eps, images + eps).clamp_(0.0, 1.0)


def choose_targets(labels: torch.Tensor, num_classes: int,
                   target_class: int | None = None) -> torch.Tensor:
    """Target class of each image: ``target_class``, or ``(label + 1) % num_classes``."""
    if target_class is None:
        return (labels + 1).remainder(num_classes)
    if not 0 <= target_class < num_classes:
        raise ValueError(f"target_class {target_class} is out of range for a model "
                         f"with {num_classes} classes")
    return torch.full_like(labels, target_class)


def input_gradient(model: torch.nn.Module, images: torch.Tensor,
                   classes: torch.Tensor) -> torch.Tensor:
    """Gradient of the summed cross-entropy ``sum_i CE(f(x_i), c_i)`` w.r.t. the images.

    The sum (not the mean) keeps each image's gradient independent of how many
    images share the batch, so a batch and its halves give identical results.
    """
    x = images.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), classes, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def ifgsm_iterate(model: torch.nn.Module, images: torch.Tensor, classes: torch.Tensor,
                  eps: float | torch.Tensor, alpha: float | torch.Tensor, steps: int,
                  *, targeted: bool = False) -> torch.Tensor:
    """``steps`` FGSM steps of size ``alpha``, each projected onto the ``eps`` ball.

    ``eps`` and ``alpha`` may be tensors with one value per image (shape (N, 1, ..., 1)),
    which lets several epsilons run in one batch.
    """
    adv = images
    for _ in range(steps):
        grad = input_gradient(model, adv, classes)
        adv = project_linf(fgsm_step(adv, grad, alpha, targeted=targeted), images, eps)
    return adv


# -- model state ---------------------------------------------------------------

# -- components ----------------------------------------------------------------

def attack_targets(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                   params: FGSMParams) -> torch.Tensor | None:
    """The classes a targeted attack moves ``images`` toward; None when untargeted."""
    if not params.targeted:
        return None
    if images.shape[0] == 0:
        return labels.clone()
    with frozen_eval(model), torch.no_grad():
        num_classes = model(images[:1]).shape[-1]
    return choose_targets(labels.to(images.device), num_classes, params.target_class)


def _attack_classes(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    params: FGSMParams) -> torch.Tensor:
    """The classes whose cross-entropy the attack follows (labels, or targets)."""
    targets = attack_targets(model, images, labels, params)
    return labels.to(images.device) if targets is None else targets


def _prepare(images: torch.Tensor, labels: torch.Tensor,
             eps: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Epsilons as a tensor, the output initialised to the input for every epsilon,
    and the indices of the non-zero epsilons (the only ones that need work)."""
    if not images.is_floating_point():
        raise TypeError(f"images must be a floating-point tensor in [0, 1], got {images.dtype}")
    if labels.shape != images.shape[:1]:
        raise ValueError(f"labels of shape {tuple(labels.shape)} do not match "
                         f"{images.shape[0]} images")
    eps_t = torch.as_tensor(list(eps), dtype=images.dtype, device=images.device)
    if eps_t.dim() != 1 or bool(((eps_t < 0) | (eps_t > 1)).any()):
        raise ValueError(f"eps must be a sequence of numbers in [0, 1], got {list(eps)}")
    out = images.detach().expand(len(eps_t), *images.shape).clone()
    return eps_t, out, (eps_t > 0).nonzero().flatten()


def fgsm(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
         eps: Sequence[float], params: FGSMParams) -> torch.Tensor:
    """Fast Gradient Sign Method: one adversarial batch per epsilon, (len(eps), *images.shape).

    The gradient does not depend on epsilon, so each chunk of ``batch_size`` images
    takes one forward and one backward pass for all epsilons together.
    """
    eps_t, out, active = _prepare(images, labels, eps)
    if active.numel() == 0 or images.shape[0] == 0:
        return out
    radius = eps_t[active].view(-1, *([1] * images.dim()))
    with frozen_eval(model):
        classes = _attack_classes(model, images, labels, params)
        for start in range(0, images.shape[0], params.batch_size):
            chunk = slice(start, start + params.batch_size)
            x = images[chunk].detach()
            grad = input_gradient(model, x, classes[chunk])
            out[active, chunk] = fgsm_step(x.unsqueeze(0), grad.unsqueeze(0), radius,
                                           targeted=params.targeted)
    return out


def ifgsm(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
          eps: Sequence[float], params: IFGSMParams) -> torch.Tensor:
    """Iterative FGSM: one adversarial batch per epsilon, (len(eps), *images.shape).

    Every (epsilon, image) pair is a row; rows of all epsilons are stacked and run
    ``batch_size`` at a time, so a few images with several epsilons still fill a
    batch. Each row carries its own radius and step size.
    """
    eps_t, out, active = _prepare(images, labels, eps)
    n = images.shape[0]
    rows = active.numel() * n
    if rows == 0:
        return out
    pad = [1] * (images.dim() - 1)
    with frozen_eval(model):
        classes = _attack_classes(model, images, labels, params)
        for start in range(0, rows, params.batch_size):
            row = torch.arange(start, min(start + params.batch_size, rows), device=images.device)
            eps_index, image_index = active[row // n], row % n
            radius = eps_t[eps_index].view(-1, *pad)
            alpha = radius / params.steps if params.alpha is None else params.alpha
            out[eps_index, image_index] = ifgsm_iterate(
                model, images[image_index].detach(), classes[image_index], radius, alpha,
                params.steps, targeted=params.targeted)
    return out


def check_params(model: torch.nn.Module, info: benchlab.DatasetInfo,
                params: FGSMParams) -> None:
    """Refuse, at validation, a target class the dataset does not have."""
    if params.target_class is not None and params.target_class >= info.num_classes:
        raise benchlab.ParamError("target_class", f"expected a class below {info.num_classes} "
                                  f"(the dataset's classes), got {params.target_class}")


@benchlab.hookimpl
def register_attacks(register):
    register("fgsm", fgsm, params=FGSMParams, targets=attack_targets, check_params=check_params,
             description="Fast Gradient Sign Method (Goodfellow et al., 2015), L-inf, one step")
    register("ifgsm", ifgsm, params=IFGSMParams, targets=attack_targets, check_params=check_params,
             description="iterative FGSM (Kurakin et al., 2017), L-inf, no random start")
