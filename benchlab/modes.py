"""Putting a model into the state an attack or explainer needs, and back."""

from __future__ import annotations

import copy
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


def randomised_copy(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A copy of ``model`` whose weights are drawn afresh, as at construction.

    The model-randomisation sanity check (Adebayo et al., 2018) explains the trained
    model and this copy: a map that survives the loss of everything learnt does not
    explain the model. Every module's own ``reset_parameters`` draws its weights
    (BatchNorm also forgets its running statistics) from a generator seeded with
    ``seed``; the caller's global RNG state is left as it was. A parameter held by a
    module without ``reset_parameters`` would keep its trained value: that is an error.
    """
    clone = copy.deepcopy(model)
    kept = [f"{name}.{p_name}" if name else p_name
            for name, module in clone.named_modules()
            if not callable(getattr(module, "reset_parameters", None))
            for p_name, _ in module.named_parameters(recurse=False)]
    if kept:
        raise ValueError(f"cannot randomise {', '.join(kept)}: its module has no "
                         "reset_parameters to draw it afresh")
    devices = [p.device.index or 0 for p in clone.parameters() if p.device.type == "cuda"][:1]
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        for module in clone.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    return clone
