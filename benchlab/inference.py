"""The batch size a model is evaluated at when the suite leaves it to benchlab.

Evaluation (the test split after every epoch, the learning curve's points, the
predictions of attack jobs) computes every image on its own, so its batch size
changes nothing but speed and float rounding, and the fastest batch depends on the
device: on a CPU a small batch keeps each layer's activations in cache (measured by
``python benchmarks/bench_lone_run.py``: on a 2-core AMD EPYC, one thread, ``cnn_bn``
evaluates 1,600 images/s at batch 32 against 700 at batch 1000), where a GPU needs
large batches to fill its cores.

A model whose predictions depend on the other images of their batch (BatchNorm
normalising with the batch's own statistics at test time) is the exception: its batch
size is part of what it computes, so it keeps the size it had before this choice
existed (``fallback``), whatever the device.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

#: the fastest evaluation batch per device type (``auto``). CPU: measured as above
#: (batch 32 to 64 within noise; 32 is further from the cache cliff at 96 to 128).
#: CUDA: a batch that fills a GPU for the models here; not measured on this project's
#: machines, set ``train.test_batch_size`` to override.
FASTEST = {"cpu": 32}
FASTEST_ELSEWHERE = 1024

#: the sizes evaluation used before ``auto``: what a batch-dependent model keeps
TEST_BATCH_BEFORE = 1000


def depends_on_batch(model: nn.Module) -> bool:
    """Whether ``model`` in eval mode computes an image's output from its whole batch.

    True when a BatchNorm layer has no running estimates to use (``track_running_stats``
    off) or when any module says so with a true ``batch_dependent`` attribute (a custom
    layer, e.g. BatchNorm on the batch's statistics in eval mode).
    """
    for module in model.modules():
        if getattr(module, "batch_dependent", False):
            return True
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and (
                not module.track_running_stats or module.running_mean is None):
            return True
    return False


def fastest_batch(device: torch.device | str) -> int:
    """The evaluation batch size ``auto`` stands for on ``device``."""
    return FASTEST.get(torch.device(device).type, FASTEST_ELSEWHERE)


def batch_size(requested: int | Literal["auto"], model: nn.Module,
               device: torch.device | str, fallback: int = TEST_BATCH_BEFORE) -> int:
    """``requested`` when the suite sets a number; for ``"auto"`` the device's fastest
    batch, or ``fallback`` for a model whose predictions depend on their batch."""
    if requested != "auto":
        return int(requested)
    return fallback if depends_on_batch(model) else fastest_batch(device)
