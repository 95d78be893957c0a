"""Grad-CAM against maps computed by hand on a one-layer convolutional model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchlab.plugins import default_registry
from benchlab.testing import parametrize_with_checks
from benchlab_plugins.gradcam import (
    GradCAMParams,
    default_layer,
    feature_layers,
    gradcam,
    gradcam_map,
    normalize_maps,
)


class TinyCam(nn.Module):
    """conv (1x1, 1 -> 2 channels) -> global average pool -> linear head.

    With conv weights [1, -1] and biases [0, 1] the activations are A_0 = x and
    A_1 = 1 - x. logit_c = V_c0 mean(A_0) + V_c1 mean(A_1) + b_c, so on an h x w map
    d logit_c / d A_k = V_ck / (h w) everywhere, the Grad-CAM weights are
    w_k = V_ck / (h w), and the map is ReLU(sum_k V_ck A_k) / (h w).
    """

    HEAD = torch.tensor([[1.0, 0.5],     # class 0: cam ~ 0.5 + 0.5 x   (predicted)
                         [-1.0, 1.0],    # class 1: cam ~ 1 - 2x
                         [-1.0, -1.0],   # class 2: cam ~ -1 -> ReLU -> 0
                         [1.0, 1.0]])    # class 3: cam ~ 1, constant

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, kernel_size=1)
        self.head = nn.Linear(2, 4)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([0.0, 1.0]))
            self.head.weight.copy_(self.HEAD)
            self.head.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).mean(dim=(2, 3)))


# x = [[0.2, 0.4], [0.6, 0.8]]: logits 1.75, 0, -1, 1 -> prediction 0.
X = torch.tensor([[0.2, 0.4], [0.6, 0.8]]).view(1, 1, 2, 2)


def test_map_equals_hand_computed_for_the_predicted_class() -> None:
    # class 0: ReLU(x + 0.5 (1 - x)) / 4 = [0.15, 0.175, 0.2, 0.225] / 4; min-max scaled:
    cam = gradcam(TinyCam(), X, GradCAMParams())
    torch.testing.assert_close(cam, torch.tensor([[[0.0, 1 / 3], [2 / 3, 1.0]]]))


def test_klass_overrides_the_prediction() -> None:
    # class 1: ReLU(-x + (1 - x)) = ReLU(1 - 2x) = [0.6, 0.2, 0, 0] (/4), normalised:
    cam = gradcam(TinyCam(), X, GradCAMParams(klass=1))
    torch.testing.assert_close(cam, torch.tensor([[[1.0, 1 / 3], [0.0, 0.0]]]))


def test_map_without_positive_evidence_is_zero_not_nan() -> None:
    cam = gradcam(TinyCam(), X, GradCAMParams(klass=2))  # ReLU(-1) everywhere
    assert torch.equal(cam, torch.zeros(1, 2, 2))


def test_constant_positive_map_gives_zeros() -> None:
    cam = gradcam(TinyCam(), X, GradCAMParams(klass=3))  # x + (1 - x) = 1 everywhere
    assert torch.equal(cam, torch.zeros(1, 2, 2))


def test_out_of_range_klass() -> None:
    with pytest.raises(ValueError, match="klass 4 is out of range"):
        gradcam(TinyCam(), X, GradCAMParams(klass=4))


def test_gradcam_map_is_relu_then_bilinear_upsampling() -> None:
    # One channel, weight 1 (gradient 1 everywhere): the map is ReLU(A) upsampled.
    activations = torch.tensor([[[[0.0, 2.0], [-4.0, 2.0]]]])
    cam = gradcam_map(activations, torch.ones_like(activations), (4, 4))
    # ReLU -> [[0, 2], [0, 2]]; bilinear 2 -> 4 (half-pixel centres) samples each row at
    # 0, 1/4, 3/4, 1 of the way from the left value to the right one: [0, 0.5, 1.5, 2].
    torch.testing.assert_close(cam[0], torch.tensor([[0.0, 0.25, 0.75, 1.0]]).expand(4, 4))


def test_gradcam_map_weights_are_spatial_mean_gradients() -> None:
    activations = torch.tensor([[[[1.0, 2.0, 0.0]], [[3.0, 0.0, 0.0]]]])  # (1, 2, 1, 3)
    gradients = torch.tensor([[[[1.0, 3.0, 2.0]], [[-1.0, 0.0, -0.5]]]])  # means 2, -0.5
    # 2 * [1, 2, 0] - 0.5 * [3, 0, 0] = [0.5, 4, 0] -> min-max scaled
    cam = gradcam_map(activations, gradients, (1, 3))
    torch.testing.assert_close(cam, torch.tensor([[[0.125, 1.0, 0.0]]]))


def test_normalize_maps() -> None:
    maps = torch.tensor([[[0.0, 2.0, 1.0]], [[0.0, 0.0, 0.0]], [[3.0, 3.0, 3.0]],
                         [[1.0, 2.0, 3.0]]])
    torch.testing.assert_close(normalize_maps(maps), torch.tensor(
        [[[0.0, 1.0, 0.5]], [[0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]], [[0.0, 0.5, 1.0]]]))


class FourLayer(nn.Module):
    """conv1 -> bn1 -> conv2 -> bn2 (-> optionally) -> pooled head; a cnn_bn in miniature."""

    def __init__(self, with_bn2: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 3)
        self.bn1 = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 4, 3)
        self.bn2 = nn.BatchNorm2d(4) if with_bn2 else nn.Identity()
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = nn.functional.relu(self.bn2(self.conv2(x)), inplace=True)
        return self.fc(self.dropout(nn.functional.max_pool2d(x, 2).flatten(1)))


def test_default_layer_is_the_last_conv_or_batchnorm() -> None:
    assert default_layer(FourLayer()) == "bn2"
    assert default_layer(FourLayer(with_bn2=False)) == "conv2"
    assert feature_layers(FourLayer()) == ["conv1", "bn1", "conv2", "bn2"]
    assert default_layer(TinyCam()) == "conv"
    with pytest.raises(ValueError, match="no Conv2d"):
        default_layer(nn.Linear(2, 2))


def test_default_layer_equals_naming_it() -> None:
    torch.manual_seed(0)
    model = FourLayer()
    x = torch.rand(3, 1, 12, 12)
    torch.testing.assert_close(gradcam(model, x, GradCAMParams()),
                               gradcam(model, x, GradCAMParams(layer="bn2")))
    assert not torch.allclose(gradcam(model, x, GradCAMParams(layer="conv1")),
                              gradcam(model, x, GradCAMParams(layer="bn2")))


def test_unknown_layer_lists_valid_names_with_a_suggestion() -> None:
    with pytest.raises(ValueError, match=r"unknown layer 'bn3'; did you mean 'bn2'\?.*"
                                         r"conv1, bn1, conv2, bn2"):
        gradcam(FourLayer(), torch.rand(1, 1, 12, 12), GradCAMParams(layer="bn3"))
    with pytest.raises(ValueError, match="feature map"):
        gradcam(FourLayer(), torch.rand(1, 1, 12, 12), GradCAMParams(layer="fc"))


def all_hooks(model: nn.Module) -> list[object]:
    return [hook for module in model.modules()
            for hook in (*module._forward_hooks.values(), *module._forward_pre_hooks.values(),
                         *module._backward_hooks.values())]


def test_hooks_removed_mode_restored_input_untouched() -> None:
    torch.manual_seed(1)
    model = FourLayer().train()
    model.bn1.eval()
    modes = [m.training for m in model.modules()]
    grads = [p.requires_grad for p in model.parameters()]
    x = torch.rand(4, 1, 12, 12)
    copy = x.clone()
    cam = gradcam(model, x, GradCAMParams(batch_size=3))
    assert cam.shape == (4, 12, 12)
    assert float(cam.min()) >= 0.0 and float(cam.max()) <= 1.0
    assert torch.equal(x, copy)
    assert all_hooks(model) == []
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == grads
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError):
        gradcam(model, x, GradCAMParams(klass=99))  # fails after the hook has fired
    assert all_hooks(model) == []
    assert [m.training for m in model.modules()] == modes


def test_a_batch_equals_its_two_halves_and_eval_mode_is_used() -> None:
    torch.manual_seed(2)
    model = FourLayer().train()  # dropout would make this random outside eval mode
    x = torch.rand(6, 1, 12, 12)
    whole = gradcam(model, x, GradCAMParams())
    halves = torch.cat([gradcam(model, x[:3], GradCAMParams()),
                        gradcam(model, x[3:], GradCAMParams())])
    torch.testing.assert_close(whole, halves)
    torch.testing.assert_close(gradcam(model, x, GradCAMParams(batch_size=2)), whole)


def test_works_under_no_grad_and_with_frozen_parameters() -> None:
    model = TinyCam()
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        cam = gradcam(model, X, GradCAMParams())
    torch.testing.assert_close(cam, torch.tensor([[[0.0, 1 / 3], [2 / 3, 1.0]]]))
    assert not any(p.requires_grad for p in model.parameters())


def test_registered_through_the_entry_point() -> None:
    component = default_registry().get("explainer", "gradcam")
    assert component.obj is gradcam and component.params is GradCAMParams


@parametrize_with_checks(["gradcam", ("gradcam", {"layer": "conv", "klass": 3, "batch_size": 3})])
def test_conformance(component, check) -> None:
    check(component)
