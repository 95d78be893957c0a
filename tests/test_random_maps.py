"""The ``random`` control explainer."""

from __future__ import annotations

import pytest
import torch

from benchlab.metrics import cam_similarity, empty_maps
from benchlab.plugins import default_registry
from benchlab.testing import parametrize_with_checks
from benchlab_plugins.random_maps import RandomMapsParams, random_maps


def test_noise_maps_are_seeded_uniform_and_ignore_the_model() -> None:
    images = torch.rand(300, 1, 8, 8)
    maps = random_maps(torch.nn.Identity(), images, RandomMapsParams(seed=3))
    assert maps.shape == (300, 8, 8) and maps.dtype == images.dtype
    assert 0 <= float(maps.min()) and float(maps.max()) < 1
    assert float(maps.mean()) == pytest.approx(0.5, abs=0.01)
    assert not empty_maps(maps).any()
    again = random_maps(torch.nn.Linear(1, 1), torch.zeros(300, 1, 8, 8), RandomMapsParams(seed=3))
    assert torch.equal(maps, again)  # neither model nor image matters


def test_without_a_seed_maps_follow_the_global_generator() -> None:
    images = torch.rand(200, 1, 8, 8)
    torch.manual_seed(1)
    first, second = (random_maps(None, images, RandomMapsParams()) for _ in range(2))
    torch.manual_seed(1)
    assert torch.equal(random_maps(None, images, RandomMapsParams()), first)
    assert abs(cam_similarity(first, second).mean()) < 0.05  # successive calls: fresh noise


def test_rejects_non_image_input() -> None:
    with pytest.raises(ValueError, match="N, C, H, W"):
        random_maps(None, torch.rand(3, 8, 8), RandomMapsParams())


def test_registered() -> None:
    component = default_registry().get("explainer", "random")
    assert component.obj is random_maps and component.params is RandomMapsParams


@parametrize_with_checks(["random", ("random", {"seed": 0})])
def test_conformance(component, check) -> None:
    check(component)
