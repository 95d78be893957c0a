"""Report numerics and the Grad-CAM grid figure, against values worked out by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from benchlab.metrics import (
    accuracy,
    attack_success_rate,
    background_share,
    cam_intensity,
    cam_similarity,
    mean_perturbation_norms,
    predictions,
)
from benchlab.report.grid import DPI, draw_grid, grid_size_inches, pick_distinct_digits


def maps(*values: list[float]) -> torch.Tensor:
    """2x2 maps from flat lists of four values."""
    return torch.tensor(values, dtype=torch.float32).view(len(values), 2, 2)


# -- robustness ----------------------------------------------------------------

def test_accuracy_from_logits_and_from_predictions() -> None:
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])  # predicts 0, 1, 0
    assert predictions(logits).tolist() == [0, 1, 0]
    assert accuracy(logits, torch.tensor([0, 0, 0])).item() == pytest.approx(2 / 3)
    assert accuracy(torch.tensor([1, 1, 0, 2]), torch.tensor([1, 0, 0, 2])).item() == 0.75


def test_accuracy_keeps_leading_dimensions() -> None:
    per_eps = torch.tensor([[1, 0, 0, 2], [0, 0, 0, 0]])  # (E=2, N=4) predictions
    assert accuracy(per_eps, torch.tensor([1, 0, 0, 2])).tolist() == [1.0, 0.5]


LABELS = torch.tensor([0, 1, 2, 3])
CLEAN = torch.tensor([0, 1, 2, 0])  # images 0, 1, 2 correct before the attack
ADV = torch.tensor([1, 1, 0, 3])


def test_untargeted_success_counts_only_initially_correct_images() -> None:
    # correct: 0, 1, 2; of these the attack flips 0 and 2. Image 3 was wrong already.
    assert attack_success_rate(CLEAN, ADV, LABELS).item() == pytest.approx(2 / 3)


def test_targeted_success_means_reaching_the_target() -> None:
    targets = torch.tensor([1, 2, 2, 0])
    # eligible: correct and label != target -> images 0 and 1; image 0 reaches 1.
    assert attack_success_rate(CLEAN, ADV, LABELS, targets).item() == pytest.approx(1 / 2)


def test_success_rate_per_eps_and_undefined_without_correct_images() -> None:
    adv = torch.stack([CLEAN, ADV, torch.tensor([3, 2, 1, 0])])
    assert attack_success_rate(CLEAN, adv, LABELS).tolist() == pytest.approx([0.0, 2 / 3, 1.0])
    logits = torch.eye(4)[CLEAN]  # logits work as well as predictions
    assert attack_success_rate(logits, ADV, LABELS).item() == pytest.approx(2 / 3)
    assert math.isnan(attack_success_rate(torch.tensor([1, 0]), torch.tensor([1, 0]),
                                          torch.tensor([0, 1])).item())


def test_mean_perturbation_norms() -> None:
    clean = torch.zeros(2, 1, 2, 2)
    adversarial = torch.stack([maps([0.1, -0.3, 0.0, 0.0])[0:1], maps([0.2] * 4)[0:1]])
    # L-inf 0.3 and 0.2; L2 sqrt(0.01 + 0.09) and sqrt(4 * 0.04) = 0.4.
    linf, l2 = mean_perturbation_norms(clean, adversarial)
    assert linf.item() == pytest.approx(0.25)
    assert l2.item() == pytest.approx((math.sqrt(0.1) + 0.4) / 2)
    linf, l2 = mean_perturbation_norms(clean, torch.stack([clean, adversarial]))
    assert linf.tolist() == pytest.approx([0.0, 0.25])
    assert l2.tolist() == pytest.approx([0.0, (math.sqrt(0.1) + 0.4) / 2])


# -- attention -----------------------------------------------------------------

def test_cam_similarity_is_pearson_per_image() -> None:
    a = maps([1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4])
    b = maps([2, 4, 6, 8], [4, 3, 2, 1], [1, 3, 2, 4])
    # third pair: centred [-1.5, -0.5, 0.5, 1.5] . [-1.5, 0.5, -0.5, 1.5] = 4; 4 / sqrt(5 * 5)
    assert cam_similarity(a, b).tolist() == pytest.approx([1.0, -1.0, 0.8])


def test_cam_similarity_of_a_constant_map_is_nan() -> None:
    a = maps([0, 0, 0, 0], [0.3, 0.3, 0.3, 0.3], [1, 0, 0, 0])
    b = maps([1, 0, 0, 0], [0.1, 0.2, 0.3, 0.4], [1, 0, 0, 0])
    r = cam_similarity(a, b)
    assert math.isnan(r[0].item()) and math.isnan(r[1].item())
    assert r[2].item() == pytest.approx(1.0)
    assert torch.nanmean(r).item() == pytest.approx(1.0)


def test_background_share() -> None:
    clean = maps([0.0, 0.5, 0.05, 1.0]).unsqueeze(1)  # (N, 1, H, W): background at 0 and 2
    cam = maps([0.2, 1.0, 0.3, 0.5])                   # mass 2.0, 0.5 of it on background
    assert background_share(cam, clean).item() == pytest.approx(0.25)
    assert background_share(cam, clean, threshold=0.6).item() == pytest.approx(0.75)
    assert background_share(cam, clean[:, 0]).item() == pytest.approx(0.25)  # (N, H, W) too
    assert math.isnan(background_share(torch.zeros(1, 2, 2), clean).item())


def test_cam_intensity() -> None:
    assert cam_intensity(maps([0, 1, 0.5, 0.5], [0, 0, 0, 0])).tolist() == [0.5, 0.0]


# -- grid figure ---------------------------------------------------------------

def test_pick_distinct_digits_takes_classes_in_order_then_the_next_images() -> None:
    labels = torch.tensor([3, 1, 3, 0, 1, 2, 0])
    assert pick_distinct_digits(labels, 3).tolist() == [3, 1, 5]
    assert pick_distinct_digits(labels, 5).tolist() == [3, 1, 5, 0, 2]
    assert pick_distinct_digits(labels, 7).tolist() == [3, 1, 5, 0, 2, 4, 6]
    assert pick_distinct_digits(labels, 0).tolist() == []
    with pytest.raises(ValueError):
        pick_distinct_digits(labels, 8)


def test_draw_grid_writes_a_png_of_the_expected_size(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    rows, cols = 3, 4
    torch.manual_seed(0)
    images = torch.rand(rows, cols, 1, 8, 8)
    cams = torch.rand(rows, cols, 8, 8)
    preds = torch.tensor([[0, 1, 2, 3], [0, 1, 5, 3], [7, 1, 5, 3]])
    confidences = torch.rand(rows, cols)
    figures_before = plt.get_fignums()
    path = draw_grid(images, cams, preds, confidences, ["clean", "eps=0.1", "eps=0.3"],
                     "fgsm on cnn_bn", tmp_path / "figs" / "grid.png")
    assert path == tmp_path / "figs" / "grid.png" and path.is_file()
    width, height = grid_size_inches(rows, cols)
    with Image.open(path) as png:
        assert png.format == "PNG"
        assert png.size == (round(width * DPI), round(height * DPI))
    # margins: 0.9 left, 0.1 right, 0.95 on top (the title clear of the captions), 0.1 below
    assert width / height == pytest.approx((0.9 + 4 * 1.3 + 0.1) / (0.95 + 3 * 1.3 + 0.1))
    assert plt.get_fignums() == figures_before  # nothing left open

    draw_grid(images[:, :, 0], None, preds, confidences, ["a", "b", "c"], "no cams",
              tmp_path / "plain.png")
    with Image.open(tmp_path / "plain.png") as png:
        assert png.size == (round(width * DPI), round(height * DPI))


def test_draw_grid_rejects_mismatched_shapes(tmp_path: Path) -> None:
    images = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="preds"):
        draw_grid(images, None, torch.zeros(3, 2), torch.zeros(2, 3), ["a", "b"], "t",
                  tmp_path / "x.png")
    with pytest.raises(ValueError, match="row labels"):
        draw_grid(images, None, torch.zeros(2, 3), torch.zeros(2, 3), ["a"], "t",
                  tmp_path / "x.png")
