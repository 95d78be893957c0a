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


def test_the_randomisation_check_of_the_control_centres_on_zero_over_seeds() -> None:
    """As an explain job draws them: the job's seed, the clean and 3 adversarial batches'
    maps, then the maps on the randomised copy. One seed's value (seed 1: -0.0048, the
    reference's, shared by every random-control job of run 0) is one draw of noise;
    over seeds the mean is 0 within its Monte-Carlo error."""
    import numpy as np

    from benchlab.metrics import rank_correlation

    def job(seed: int) -> float:
        torch.manual_seed(seed)
        clean = torch.rand(500, 28, 28)
        for _ in range(3):
            torch.rand(500, 28, 28)
        return rank_correlation(clean, torch.rand(500, 28, 28)).double().mean().item()

    assert job(1) == pytest.approx(-0.004773781752119248, abs=1e-12)
    means = np.array([job(seed) for seed in range(1, 31)])
    assert abs(means.mean()) < 4 * means.std(ddof=1) / np.sqrt(means.size)
    assert means.std(ddof=1) == pytest.approx(1 / np.sqrt(783 * 500), rel=0.5)
