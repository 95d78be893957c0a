"""Populations, faithfulness, the randomisation check and their intervals, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats
from torch import nn

from benchlab.attention import randomised_copy
from benchlab.metrics import (
    Estimate,
    common_population,
    deletion_insertion,
    difference_ci,
    empty_maps,
    mean_ci,
    rank_correlation,
    share_ci,
)


def maps(*values: list[float]) -> torch.Tensor:
    """2x2 maps from flat lists of four values."""
    return torch.tensor(values, dtype=torch.float32).view(len(values), 2, 2)


# -- populations ---------------------------------------------------------------

def test_empty_maps_are_those_without_a_positive_pixel() -> None:
    cams = maps([0, 0, 0, 0], [0, 0, 0.1, 0], [1, 1, 1, 1])
    assert empty_maps(cams).tolist() == [True, False, False]
    assert empty_maps(torch.stack([cams, cams.flip(0)])).tolist() == [
        [True, False, False], [False, False, True]]


def test_common_population_needs_the_clean_and_every_adversarial_map() -> None:
    clean = maps([1, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0])
    adversarial = torch.stack([maps([1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]),
                               maps([1, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0])])
    # image 1: clean map empty; 2: empty at the first eps; 3: empty at the second
    assert common_population(clean, adversarial).tolist() == [True, False, False, False]
    assert common_population(clean, adversarial[:0]).tolist() == [True, False, True, True]
    constant = maps([0.5, 0.5, 0.5, 0.5], [1, 0, 0, 0])  # non-empty, but no shape
    assert common_population(constant, constant[None]).tolist() == [False, True]


# -- intervals -----------------------------------------------------------------

def test_mean_ci_is_the_mean_with_a_bootstrap_interval_near_the_normal_one() -> None:
    values = torch.rand(500, generator=torch.Generator().manual_seed(0))
    est = mean_ci(values)
    assert est.n == 500 and est.value == pytest.approx(values.double().mean().item())
    half = 1.96 * values.double().std().item() / math.sqrt(500)
    assert est.low < est.value < est.high
    assert (est.high - est.low) / 2 == pytest.approx(half, rel=0.1)
    assert mean_ci(values, seed=3) != est and mean_ci(values) == est  # seeded


def test_mean_ci_edge_cases_and_refuses_nan() -> None:
    assert mean_ci(torch.ones(4)) == Estimate(1.0, 1.0, 1.0, 4)  # no spread: a point interval
    single = mean_ci([0.5])
    assert single.value == 0.5 and single.n == 1 and math.isnan(single.low)
    assert mean_ci([]).n == 0 and math.isnan(mean_ci([]).value)
    with pytest.raises(ValueError, match="1 undefined"):
        mean_ci(torch.tensor([0.1, float("nan")]))


def test_difference_ci_resamples_the_groups_separately() -> None:
    g = np.random.default_rng(1)
    a, b = g.normal(1.0, 1.0, 400), g.normal(0.0, 1.0, 100)
    est = difference_ci(a, b)
    assert est.n == 500 and est.value == pytest.approx(a.mean() - b.mean())
    welch_half = 1.96 * math.sqrt(a.var(ddof=1) / 400 + b.var(ddof=1) / 100)
    assert (est.high - est.low) / 2 == pytest.approx(welch_half, rel=0.1)
    short = difference_ci([1.0], [0.0, 1.0])
    assert short.value == 0.5 and math.isnan(short.low) and short.n == 3


def test_share_ci_is_wilson() -> None:
    z2 = scipy_stats.norm.ppf(0.975) ** 2
    none = share_ci(torch.zeros(500, dtype=torch.bool))
    assert none.value == 0 and none.low == 0
    assert none.high == pytest.approx(z2 / (500 + z2))  # Wilson's upper bound at k = 0
    half = share_ci([True, False, True, False])
    centre, spread = (2 + z2 / 2) / (4 + z2), math.sqrt(z2) / (4 + z2) * math.sqrt(1 + z2 / 4)
    assert (half.low, half.high) == pytest.approx((centre - spread, centre + spread))


# -- deletion and insertion ----------------------------------------------------

class PixelLogit(nn.Module):
    """Two classes on 2x2 images: logit_0 = 2 x0 + x1, logit_1 = 0.

    p(class 0) = sigmoid(2 x0 + x1): pixel 0 matters most, pixels 2 and 3 not at all.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        logit = 2 * flat[:, 0] + flat[:, 1]
        return torch.stack([logit, torch.zeros_like(logit)], dim=1)


def sig(z: float) -> float:
    return 1 / (1 + math.exp(-z))


ONES = torch.ones(1, 1, 2, 2)


def test_deletion_and_insertion_by_hand() -> None:
    # Ranking 0, 1, 2, 3 and four steps: one pixel per step.
    deletion, insertion = deletion_insertion(PixelLogit(), ONES, maps([4, 3, 2, 1]),
                                             torch.tensor([0]), steps=4)
    # deletion: z = 3, 1, 0, 0, 0; insertion: z = 0, 2, 3, 3, 3; trapezoids of width 1/4
    p_del = [sig(3), sig(1), 0.5, 0.5, 0.5]
    p_ins = [0.5, sig(2), sig(3), sig(3), sig(3)]
    area = lambda p: sum((p[i] + p[i + 1]) / 2 for i in range(4)) / 4  # noqa: E731
    assert deletion.item() == pytest.approx(area(p_del))
    assert insertion.item() == pytest.approx(area(p_ins))
    # the reverse ranking is the unfaithful one: it deletes the useless pixels first
    worse_del, worse_ins = deletion_insertion(PixelLogit(), ONES, maps([1, 2, 3, 4]),
                                              torch.tensor([0]), steps=4)
    assert worse_del.item() > deletion.item() and worse_ins.item() < insertion.item()
    # the other class's probability is one minus this one's
    other_del, _ = deletion_insertion(PixelLogit(), ONES, maps([4, 3, 2, 1]),
                                      torch.tensor([1]), steps=4)
    assert other_del.item() == pytest.approx(1 - deletion.item())


def test_ties_are_broken_at_random_and_only_matter_inside_a_step() -> None:
    # Pixels 0 and 1 tie; two steps remove them together, so the order inside is moot.
    deletion, insertion = deletion_insertion(PixelLogit(), ONES, maps([1, 1, 0, 0]),
                                             torch.tensor([0]), steps=2)
    assert deletion.item() == pytest.approx(((sig(3) + 0.5) / 2 + 0.5) / 2)
    assert insertion.item() == pytest.approx(((0.5 + sig(3)) / 2 + sig(3)) / 2)
    # An empty map ranks at random: 400 copies spread around the random-order mean.
    n = 400
    g = torch.Generator().manual_seed(0)
    deletion, _ = deletion_insertion(PixelLogit(), ONES.expand(n, -1, -1, -1), torch.zeros(n, 2, 2),
                                     torch.zeros(n, dtype=torch.long), steps=4, generator=g,
                                     batch_size=64)
    assert deletion.std() > 0
    best = ((sig(3) + sig(1)) / 2 + (sig(1) + 0.5) / 2 + 0.5 + 0.5) / 4
    worst = ((sig(3) + sig(3)) / 2 + (sig(3) + sig(3)) / 2 + (sig(3) + sig(1)) / 2
             + (sig(1) + 0.5) / 2) / 4
    assert best < deletion.mean().item() < worst


def test_deletion_insertion_takes_the_class_per_image_and_rejects_zero_steps() -> None:
    images = torch.cat([ONES, ONES])
    deletion, _ = deletion_insertion(PixelLogit(), images, maps([4, 3, 2, 1], [4, 3, 2, 1]),
                                     torch.tensor([0, 1]), steps=4, batch_size=1)
    assert deletion.sum().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="steps"):
        deletion_insertion(PixelLogit(), ONES, maps([1, 2, 3, 4]), torch.tensor([0]), steps=0)


# -- the randomisation check ---------------------------------------------------

def test_rank_correlation_by_hand() -> None:
    a = maps([1, 2, 3, 4], [1, 2, 3, 4], [0, 0, 1, 2], [1, 1, 1, 1])
    b = maps([10, 20, 30, 40], [1, 3, 2, 4], [1, 2, 3, 4], [1, 2, 3, 4])
    r = rank_correlation(a, b)
    # Spearman: 1 - 6 * 2 / (4 * 15) = 0.8; ties share rank 1.5: 4.5 / sqrt(4.5 * 5)
    assert r[:3].tolist() == pytest.approx([1.0, 0.8, 4.5 / math.sqrt(22.5)])
    assert math.isnan(r[3].item())  # a constant map has no ranking


def test_sanity_check_on_a_tiny_model_by_hand() -> None:
    from benchlab_plugins.gradcam import GradCAMParams, gradcam
    from tests.test_gradcam import TinyCam, X

    trained = TinyCam()
    # "randomised" weights set by hand: the head of class 1 takes class 0's place
    other = TinyCam()
    with torch.no_grad():
        other.head.weight[0] = torch.tensor([-1.0, 1.0])
    # trained: cam ~ 0.5 + 0.5 x, ranks 1, 2, 3, 4; other: ReLU(1 - 2x) = 0.6, 0.2, 0, 0,
    # ranks 4, 3, 1.5, 1.5: centred products sum to -4.5 over sqrt(5 * 4.5)
    r = rank_correlation(gradcam(trained, X, GradCAMParams()), gradcam(other, X, GradCAMParams()))
    assert r.item() == pytest.approx(-4.5 / math.sqrt(22.5))


class WithBareParameter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.scale = nn.Parameter(torch.ones(1))


def test_randomised_copy_redraws_every_weight_and_touches_nothing_else() -> None:
    from tests.test_gradcam import FourLayer

    torch.manual_seed(0)
    model = FourLayer()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # "trained"
        model.bn2.running_mean.fill_(3.0)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    copy = randomised_copy(model, seed=5)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())
    state = copy.state_dict()
    assert list(state) == list(original)
    assert all(not torch.equal(p, dict(model.named_parameters())[n])
               for n, p in copy.named_parameters())
    assert torch.equal(state["bn2.running_mean"], torch.zeros(4))
    again = randomised_copy(model, seed=5).state_dict()
    assert all(torch.equal(v, again[k]) for k, v in state.items())
    assert not torch.equal(randomised_copy(model, seed=6).conv1.weight, copy.conv1.weight)
    with pytest.raises(ValueError, match="cannot randomise scale"):
        randomised_copy(WithBareParameter(), seed=0)


# -- a known case of empty maps on real MNIST ----------------------------------

def test_empty_grad_cam_maps_on_real_mnist_match_captum(mnist_root) -> None:
    """Grad-CAM of a class whose head is the negative of another's is empty exactly where
    the other class's map (before the ReLU) is nowhere negative; Captum computes that map.
    """
    from captum.attr import LayerGradCam

    from benchlab.plugins import default_registry
    from benchlab_plugins.cnn import CNNParams, build_cnn
    from benchlab_plugins.gradcam import GradCAMParams, gradcam

    mnist = default_registry().get("dataset", "mnist").obj
    images = mnist.load("test", mnist_root).head(100).floats()
    torch.manual_seed(0)
    model = build_cnn(mnist.info, CNNParams()).eval()
    with torch.no_grad():
        model.conv2.bias += 0.5  # every conv2 output positive: relu2 passes all of it
        model.fc2.weight[1] = -model.fc2.weight[0]  # so class 1's map is minus class 0's
    empty = empty_maps(gradcam(model, images, GradCAMParams(layer="conv2", klass=1)))
    raw_class0 = LayerGradCam(model, model.conv2).attribute(images, target=0,
                                                            relu_attributions=False)
    nowhere_negative = raw_class0.flatten(1).amin(dim=1) >= 0
    assert torch.equal(empty, nowhere_negative)
    assert 0 < int(empty.sum()) < 100  # a real mix: 66 of 100 with this seed
    assert share_ci(empty).value == pytest.approx(int(nowhere_negative.sum()) / 100)
