"""``random``: maps of uniform noise, the control every explainer is read against.

A map that ignores the model and the image tells nothing; any score an explainer
earns (faithfulness, stability under attack, the randomisation check) means
something only where it beats this one. Each pixel is drawn uniformly from
[0, 1): never an empty map, and independent of everything else.

``seed`` fixes the maps of one call; without it they come from torch's global
generator, which benchlab seeds per job, so a run is reproducible either way and
successive calls in one job (clean, then each epsilon) draw different noise.
"""

from __future__ import annotations

import torch
from pydantic import Field

import benchlab
from benchlab import Params
from benchlab.guards import check_explainer_input


class RandomMapsParams(Params):
    """Parameters of ``random``."""

    seed: int | None = Field(default=None, ge=0,
                             description="seed of the noise; default the job's seeded generator")


def random_maps(model: torch.nn.Module, images: torch.Tensor,
                params: RandomMapsParams) -> torch.Tensor:
    """Uniform noise maps (N, H, W) in [0, 1) for ``images`` (N, C, H, W)."""
    check_explainer_input(images)
    generator = None if params.seed is None else torch.Generator().manual_seed(params.seed)
    shape = (images.shape[0], *images.shape[-2:])
    return torch.rand(shape, generator=generator).to(device=images.device, dtype=images.dtype)


@benchlab.hookimpl
def register_explainers(register):
    register("random", random_maps, params=RandomMapsParams,
             description="uniform noise maps (seeded): the control for every explainer")
