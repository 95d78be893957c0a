"""The run-time guards: each violation is caught, named, and measured."""

from __future__ import annotations

import pytest
import torch

from benchlab.guards import ComponentError, check_adversarial, check_explanation, check_logits

EPS = [0.1, 0.25]


@pytest.fixture
def images() -> torch.Tensor:
    """Two 1x2x2 images with pixels at 0, 1 and in between."""
    return torch.tensor([[[[0.0, 0.5], [1.0, 0.2]]],
                         [[[0.3, 0.3], [0.0, 1.0]]]])


def valid_adversarial(images: torch.Tensor) -> torch.Tensor:
    """For each eps, every pixel moved by exactly eps (clamped): on the ball's surface."""
    sign = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    return torch.stack([(images + e * sign).clamp(0, 1) for e in EPS])


# -- adversarial batches --------------------------------------------------------------

def test_a_batch_on_the_surface_of_the_ball_passes(images):
    check_adversarial(images, valid_adversarial(images), EPS)


def test_the_clean_images_repeated_pass(images):
    check_adversarial(images, images.expand(2, *images.shape).clone(), EPS)


def test_leaving_the_ball_is_reported_with_the_excess(images):
    adv = valid_adversarial(images)
    adv[0, 1, 0, 0, 0] = 0.3 + 0.15  # eps[0] = 0.1: 0.05 beyond the ball
    with pytest.raises(ComponentError, match="outside the L∞ ε-ball") as info:
        check_adversarial(images, adv, EPS)
    message = str(info.value)
    assert "max |adv - x| = 0.15" in message
    assert "ε = 0.1 (eps[0])" in message
    assert "over by 0.05" in message
    assert "\n" not in message


def test_the_worst_epsilon_is_named(images):
    adv = valid_adversarial(images)
    adv[0, 0, 0, 0, 1] = 0.5 + 0.11   # eps 0.1, over by 0.01
    adv[1, 0, 0, 0, 1] = 0.5 - 0.45   # eps 0.25, over by 0.2
    with pytest.raises(ComponentError, match=r"eps\[1\]\), over by 0.2 "):
        check_adversarial(images, adv, EPS)


def test_each_epsilon_gets_its_own_ball(images):
    # eps[1]'s perturbation placed at index 0: fine for 0.25, not for 0.1.
    adv = valid_adversarial(images).flip(0)
    with pytest.raises(ComponentError, match=r"eps\[0\]"):
        check_adversarial(images, adv, EPS)


def test_tolerance_on_the_ball(images):
    adv = valid_adversarial(images)
    adv[0, 1, 0, 0, 0] = 0.3 + 0.1 + 5e-6
    check_adversarial(images, adv, EPS)  # within the default atol of 1e-5
    with pytest.raises(ComponentError, match="tolerance 1e-06"):
        check_adversarial(images, adv, EPS, atol=1e-6)


@pytest.mark.parametrize(("pixel", "value", "expected"), [
    ((0, 0), -0.05, "minimum -0.05, below 0 by 0.05"),  # clean pixel 0.0
    ((1, 0), 1.02, "maximum 1.02, above 1 by 0.02"),    # clean pixel 1.0
])
def test_leaving_the_unit_range_is_reported(images, pixel, value, expected):
    adv = valid_adversarial(images)
    adv[(1, 0, 0, *pixel)] = value  # within eps[1] of the clean pixel: only the range is broken
    with pytest.raises(ComponentError, match="outside \\[0, 1\\]") as info:
        check_adversarial(images, adv, EPS)
    assert expected in str(info.value)


@pytest.mark.parametrize(("bad", "counts"), [
    ([float("nan")], "2 NaN, 0 Inf"),
    ([float("inf"), float("-inf")], "0 NaN, 2 Inf"),
])
def test_non_finite_values_are_counted(images, bad, counts):
    adv = valid_adversarial(images)
    flat = adv.view(-1)
    flat[: 2] = torch.tensor(bad * (2 // len(bad)))
    with pytest.raises(ComponentError, match=counts):
        check_adversarial(images, adv, EPS)


def test_wrong_shape(images):
    with pytest.raises(ComponentError,
                       match=r"shape \(2, 1, 2, 2\), expected \(2, 2, 1, 2, 2\)"):
        check_adversarial(images, images.clone(), EPS)


def test_one_batch_per_epsilon(images):
    with pytest.raises(ComponentError, match=r"expected \(3, 2, 1, 2, 2\)"):
        check_adversarial(images, valid_adversarial(images), [0.1, 0.2, 0.3])


def test_wrong_dtype(images):
    with pytest.raises(ComponentError, match="dtype torch.float64, expected torch.float32"):
        check_adversarial(images, valid_adversarial(images).double(), EPS)


def test_wrong_device(images):
    adv = torch.empty((2, *images.shape), device="meta")
    with pytest.raises(ComponentError, match="device meta, expected cpu"):
        check_adversarial(images, adv, EPS)


def test_not_a_tensor(images):
    with pytest.raises(ComponentError, match="got list, expected a torch.Tensor"):
        check_adversarial(images, [valid_adversarial(images)], EPS)


def test_empty_batches_pass():
    empty = torch.empty(0, 1, 2, 2)
    check_adversarial(empty, torch.empty(2, 0, 1, 2, 2), EPS)
    check_adversarial(empty[:0], torch.empty(0, 0, 1, 2, 2), [])


# -- explanations ---------------------------------------------------------------------

def test_valid_maps_pass(images):
    check_explanation(images, torch.tensor([[[0.0, 1.0], [0.5, 0.5]]]).repeat(2, 1, 1))


def test_maps_of_another_dtype_pass(images):
    check_explanation(images, torch.zeros(2, 2, 2, dtype=torch.float64))


@pytest.mark.parametrize(("maps", "match"), [
    (torch.zeros(2, 1, 2, 2), r"shape \(2, 1, 2, 2\), expected \(2, 2, 2\)"),
    (torch.zeros(2, 2, 2, dtype=torch.int64), "dtype torch.int64, expected a floating"),
    (torch.full((2, 2, 2), float("nan")), "8 NaN, 0 Inf"),
    (torch.full((2, 2, 2), 1.5), "maximum 1.5, above 1 by 0.5"),
    (torch.full((2, 2, 2), -0.25), "minimum -0.25, below 0 by 0.25"),
    (None, "got NoneType, expected a torch.Tensor"),
])
def test_bad_maps_are_reported(images, maps, match):
    with pytest.raises(ComponentError, match=match):
        check_explanation(images, maps)


# -- logits ---------------------------------------------------------------------------

def test_valid_logits_pass():
    check_logits(torch.randn(4, 10), 4, 10)


@pytest.mark.parametrize(("logits", "match"), [
    (torch.zeros(4, 9), r"shape \(4, 9\), expected \(4, 10\)"),
    (torch.zeros(40), r"shape \(40\), expected \(4, 10\)"),
    (torch.zeros(4, 10, dtype=torch.int64), "dtype torch.int64"),
    (torch.tensor([[float("inf")] * 10] * 4), "0 NaN, 40 Inf"),
    ((torch.zeros(4, 10),), "model returned tuple"),
])
def test_bad_logits_are_reported(logits, match):
    with pytest.raises(ComponentError, match=match):
        check_logits(logits, 4, 10)


def test_guards_do_not_modify_their_arguments(images):
    adv = valid_adversarial(images)
    copies = images.clone(), adv.clone()
    check_adversarial(images, adv, EPS)
    assert torch.equal(images, copies[0]) and torch.equal(adv, copies[1])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_single_non_finite_value_in_a_large_batch_is_found(bad):
    # Large enough for the vectorised reduction kernels; the value sits mid-vector.
    images = torch.full((64, 3, 32, 32), 0.5)
    adv = images.expand(2, *images.shape).clone()
    adv[1, 37, 2, 17, 9] = bad
    with pytest.raises(ComponentError, match="non-finite values"):
        check_adversarial(images, adv, EPS)
    with pytest.raises(ComponentError, match="non-finite values"):
        check_explanation(images, adv[1, :, 2])
    with pytest.raises(ComponentError, match="non-finite values"):
        check_logits(adv[1, :, 2, 17, :10], 64, 10)
