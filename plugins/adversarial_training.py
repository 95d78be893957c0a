"""Training procedures: the standard step and three kinds of adversarial training.

Each procedure computes the loss of one optimisation step from the model, a batch
of images in [0, 1] with their labels, and the run's seeded generator; the
trainer backpropagates that loss and steps the optimiser. The adversarial ones
expose how they craft the inputs they train on (``perturb=`` at registration), so
that the conformance kit can check that those inputs lie in the ε-ball and in
[0, 1].

How the inputs are crafted, and why:

- every random draw (the random start) comes from the run's generator, never the
  global one: runs trained side by side in threads each draw from their own, and
  a checkpoint, which keeps the generator's state, resumes a run exactly. The
  procedures keep no state of their own between steps;
- crafting uses gradients with respect to the input only
  (:func:`torch.autograd.grad`), so it leaves nothing in the parameters' ``.grad``:
  only the training loss's backward does;
- crafting never updates BatchNorm's running statistics: ``fgsm_at`` and
  ``pgd_at`` craft in train mode, as the authors' reference code does (BatchNorm
  normalises with the batch's statistics, dropout is active), with the running
  estimates' update switched off for the crafting passes; ``trades`` crafts in
  eval mode, as its reference code does (``model.eval()`` while crafting). Either
  choice can be changed with ``craft_mode``. Only the training passes, on the
  inputs the loss is computed from, update the running statistics;
- crafting runs under the trainer's autocast, so bf16 training crafts in bf16 too;
  the perturbation itself is kept in float32;
- ``eps_warmup`` (all three, default 0: off) grows the radius linearly from 0 to
  ``eps`` over that fraction of the run's optimisation steps, from the ``progress``
  the trainer passes; FGSM's step grows with it (α·ε_t/ε), PGD's and TRADES's step
  size stays. Called without ``progress`` (the conformance kit, a user's own
  loop), a procedure crafts at the full radius.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_serializer
from torch import nn

import benchlab
from benchlab.training import cross_entropy

CraftMode = Literal["train", "eval"]
_Radius = Field(0.3, gt=0.0, le=1.0, description="L∞ radius of the ball, on the [0, 1] scale")
_Steps = Field(40, ge=1, le=1000, description="gradient steps of the attack")


class _Warmup(benchlab.Params):
    """The ε warm-up every adversarial procedure offers."""

    eps: float = _Radius
    eps_warmup: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="fraction of the run's steps over which the radius grows linearly "
                    "from 0 to eps; 0: the full radius from the first step")

    def radius(self, progress: float) -> float:
        """The radius at ``progress`` (the fraction of the run's steps done)."""
        if self.eps_warmup == 0.0 or progress >= self.eps_warmup:
            return self.eps
        return self.eps * max(progress, 0.0) / self.eps_warmup

    @model_serializer(mode="wrap")
    def _no_warmup_left_out(self, handler):
        # a suite that does not ask for a warm-up keeps the parameters, and so the
        # model cache key, of the procedure that predates it
        data = handler(self)
        if isinstance(data, dict) and data.get("eps_warmup") == 0.0:
            data.pop("eps_warmup")
        return data


class FGSMATParams(_Warmup):
    """Wong, Rice and Kolter 2020 ("Fast is better than free"): on MNIST, ε = 0.3 and a
    step of α = 1.25·ε from a uniform random start."""

    alpha: float | None = Field(None, gt=0.0, le=2.0,
                                description="FGSM step size; null: 1.25 * eps")
    craft_mode: CraftMode = "train"

    @property
    def step_size(self) -> float:
        return 1.25 * self.eps if self.alpha is None else self.alpha


class PGDATParams(_Warmup):
    """Madry et al. 2018, MNIST: ε = 0.3, 40 steps of 0.01 from a uniform random start
    (the paper trained this way for 100,000 steps of 50 images with Adam)."""

    steps: int = _Steps
    alpha: float = Field(0.01, gt=0.0, le=1.0, description="step size")
    random_start: bool = True
    craft_mode: CraftMode = "train"


class TRADESParams(_Warmup):
    """Zhang et al. 2019 (TRADES), MNIST: ε = 0.3, 40 steps of 0.01 on the KL divergence,
    from a start 0.001·N(0, 1) away from the image. ``beta`` weighs the KL term (the
    paper's 1/λ; its MNIST table reports 1/λ = 6, the authors' MNIST script defaults to
    1.0, the default here)."""

    steps: int = _Steps
    alpha: float = Field(0.01, gt=0.0, le=1.0, description="step size")
    beta: float = Field(1.0, ge=0.0, le=1000.0, description="weight of the KL term (1/λ)")
    craft_mode: CraftMode = "eval"


@contextmanager
def crafting(model: nn.Module, mode: CraftMode) -> Iterator[None]:
    """The model as it crafts adversarial inputs: in ``mode``, BatchNorm's running
    statistics never updated; the model's mode and BatchNorm layers restored after."""
    was_training = model.training
    frozen = []
    if mode == "eval":
        model.eval()
    else:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) \
                    and module.track_running_stats and module.training:
                module.track_running_stats = False  # batch statistics, no update
                frozen.append(module)
    try:
        yield
    finally:
        for module in frozen:
            module.track_running_stats = True
        model.train(was_training)


Objective = Callable[[torch.Tensor], torch.Tensor]


def _ascend(model: nn.Module, start: torch.Tensor, images: torch.Tensor,
            objective: Objective, eps: float, alpha: float, steps: int) -> torch.Tensor:
    """``steps`` signed-gradient steps of ``alpha`` up ``objective(logits)`` from
    ``start``, each projected onto the ε-ball around ``images`` and onto [0, 1]."""
    adversarial = start
    for _ in range(steps):
        adversarial = adversarial.detach().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(objective(model(adversarial)), adversarial)
        moved = adversarial.detach() + alpha * grad.sign()
        adversarial = (images + (moved - images).clamp(-eps, eps)).clamp(0.0, 1.0)
    return adversarial.detach()


def _uniform_start(images: torch.Tensor, eps: float,
                   generator: torch.Generator) -> torch.Tensor:
    noise = torch.empty_like(images).uniform_(-eps, eps, generator=generator)
    return (images + noise).clamp(0.0, 1.0)


def _ce(labels: torch.Tensor) -> Objective:
    return lambda logits: F.cross_entropy(logits.float(), labels)


def fgsm_perturb(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 generator: torch.Generator, params: FGSMATParams,
                 progress: float = 1.0) -> torch.Tensor:
    """One FGSM step of α from a uniform random start in the ε-ball."""
    images = images.detach()
    eps = params.radius(progress)
    start = _uniform_start(images, eps, generator)
    with crafting(model, params.craft_mode):
        return _ascend(model, start, images, _ce(labels), eps,
                       params.step_size * eps / params.eps, 1)


def pgd_perturb(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                generator: torch.Generator, params: PGDATParams,
                progress: float = 1.0) -> torch.Tensor:
    """``steps`` steps of α on the cross-entropy, projected, from a random start."""
    images = images.detach()
    eps = params.radius(progress)
    start = _uniform_start(images, eps, generator) if params.random_start else images
    with crafting(model, params.craft_mode):
        return _ascend(model, start, images, _ce(labels), eps, params.alpha, params.steps)


def _kl(target: torch.Tensor) -> Objective:
    """Summed KL(target || softmax(logits)), ``target`` a probability batch."""
    return lambda logits: F.kl_div(F.log_softmax(logits.float(), dim=1), target,
                                   reduction="sum")


def trades_perturb(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                   generator: torch.Generator, params: TRADESParams,
                   progress: float = 1.0) -> torch.Tensor:
    """``steps`` steps of α on KL(f(x) || f(x')), from x + 0.001·N(0, 1)."""
    del labels  # TRADES's inner maximisation needs none
    images = images.detach()
    noise = torch.empty_like(images).normal_(generator=generator)
    start = (images + 0.001 * noise).clamp(0.0, 1.0)
    with crafting(model, params.craft_mode), torch.no_grad():
        target = F.softmax(model(images).float(), dim=1)
    with crafting(model, params.craft_mode):
        return _ascend(model, start, images, _kl(target), params.radius(progress),
                       params.alpha, params.steps)


def _on_crafted(perturb):
    """A procedure training with cross-entropy on the inputs ``perturb`` crafts."""

    def procedure(model, images, labels, generator, params, progress=1.0):
        adversarial = perturb(model, images, labels, generator, params, progress)
        logits = model(adversarial)
        return F.cross_entropy(logits, labels), logits

    return procedure


fgsm_at = _on_crafted(fgsm_perturb)
fgsm_at.__name__ = fgsm_at.__qualname__ = "fgsm_at"
pgd_at = _on_crafted(pgd_perturb)
pgd_at.__name__ = pgd_at.__qualname__ = "pgd_at"


def trades(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
           generator: torch.Generator, params: TRADESParams, progress: float = 1.0
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy on the clean batch + β · KL(f(x) || f(x')) averaged over the batch;
    the logits returned are the clean batch's."""
    adversarial = trades_perturb(model, images, labels, generator, params, progress)
    logits = model(images)
    robust = F.kl_div(F.log_softmax(model(adversarial).float(), dim=1),
                      F.softmax(logits.float(), dim=1), reduction="sum") / images.shape[0]
    return F.cross_entropy(logits, labels) + params.beta * robust, logits


@benchlab.hookimpl
def register_procedures(register):
    register("standard", cross_entropy, passes=1,
             description="cross-entropy on the batch (the default)")
    register("fgsm_at", fgsm_at, params=FGSMATParams, perturb=fgsm_perturb, passes=2,
             description="FGSM adversarial training from a random start (Wong et al. 2020)")
    register("pgd_at", pgd_at, params=PGDATParams, perturb=pgd_perturb,
             passes=lambda p: p.steps + 1,
             description="PGD adversarial training (Madry et al. 2018)")
    register("trades", trades, params=TRADESParams, perturb=trades_perturb,
             passes=lambda p: p.steps + 2,
             description="TRADES: clean cross-entropy + beta * KL to the crafted input "
                         "(Zhang et al. 2019)")
