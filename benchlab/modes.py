"""Putting a model into the state an attack or explainer needs, and back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def frozen_eval(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Eval mode with parameter gradients off, for the duration of the block.

    Attacks and explainers need gradients with respect to the input only; turning
    parameter gradients off skips their computation. Each module's mode and each
    parameter's ``requires_grad`` are restored exactly afterwards, also on error, so
    a model that mixes train and eval submodules comes back as it was.
    """
    modes = [(module, module.training) for module in model.modules()]
    grads = [(param, param.requires_grad) for param in model.parameters()]
    try:
        model.eval()
        for param, _ in grads:
            param.requires_grad_(False)
        yield model
    finally:
        for module, training in modes:
            module.training = training
        for param, requires_grad in grads:
            param.requires_grad_(requires_grad)
