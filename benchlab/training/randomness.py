"""Every run owns its randomness: dropout masks from the run's generator, and the
detection of models that still draw from the global one."""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn


class SeededDropout(nn.Module):
    """``nn.Dropout`` whose masks come from a given generator instead of the global one.

    In training mode it zeroes each element with probability ``p`` and scales the
    rest by ``1 / (1 - p)``, as ``nn.Dropout`` does. ``p`` is applied to 1/65536
    resolution (exact for 0.25 and 0.5).
    """

    def __init__(self, p: float, generator: torch.Generator) -> None:
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.p == 1:
            return x * 0.0
        return x * dropout_mask(x.shape, self.p, self.generator, x.device).to(x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def dropout_mask(shape: Sequence[int], p: float, generator: torch.Generator,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """A float32 dropout mask: 0 with probability ~``p``, else ``1 / (1 - p)``.

    Draws 64 random bits per four elements and compares 16-bit lanes with a
    threshold: on a CPU several times faster than ``bernoulli_``, which draws one
    random number per element. ``p`` is rounded to a multiple of 1/65536 and the
    scale follows the rounded value, so the mask has mean 1 exactly in expectation.
    """
    count = math.prod(shape)
    dropped = round(p * 65536)
    if not 0 < dropped < 65536:
        raise ValueError(f"p must be in (0, 1) at 1/65536 resolution, got {p}")
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=device)
    words.random_(-2**63, None, generator=generator)  # all 64 bits uniform
    lanes = words.view(torch.int16)[:count].view(tuple(shape))
    return lanes.float().ge_(dropped - 32768).mul_(65536 / (65536 - dropped))


def seed_dropouts(model: nn.Module, generator: torch.Generator) -> int:
    """Replace every ``nn.Dropout`` in ``model`` by a :class:`SeededDropout`; how many."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, SeededDropout(child.p, generator))
                replaced += 1
    return replaced


def draws_from_global_rng(model: nn.Module, images: torch.Tensor) -> bool:
    """Whether a training-mode forward pass of ``model`` on ``images`` (floats) uses the
    global generator."""
    probe = copy.deepcopy(model)
    seed_dropouts(probe, torch.Generator(device=images.device))
    with torch.random.fork_rng(devices=_rng_devices(images.device)):
        before = global_rng_state(images.device)
        with torch.no_grad():
            probe(images)
        after = global_rng_state(images.device)
    return any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def _rng_devices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def global_rng_state(device: torch.device) -> list[torch.Tensor]:
    """The state of the global generators a run on ``device`` draws from."""
    states = [torch.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return states


def set_global_rng_state(device: torch.device, states: Sequence[torch.Tensor]) -> None:
    """Restore what :func:`global_rng_state` returned."""
    torch.set_rng_state(states[0])
    if device.type == "cuda" and len(states) > 1:
        torch.cuda.set_rng_state(states[1], device)


@contextlib.contextmanager
def global_rng_seeded(seed: int, device: torch.device, enabled: bool) -> Iterator[None]:
    """Fork the global generators and seed them from ``seed`` (a no-op when disabled)."""
    if not enabled:
        yield
        return
    with torch.random.fork_rng(devices=_rng_devices(device)):
        torch.manual_seed(seed)
        yield
