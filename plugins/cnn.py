"""The small MNIST CNN, with (``cnn_bn``) and without (``cnn``) BatchNorm.

conv1 (C->32, 3x3) -> [bn1] -> relu1 -> conv2 (32->64, 3x3) -> [bn2] -> relu2
-> max-pool 2 -> dropout -> fc1 (64*H'*W' -> 128) -> ReLU -> dropout -> fc2 (128 -> classes)

For 28x28 MNIST, H' = W' = 12 and fc1 has 9216 inputs. The layers keep these
attribute names so that layer-based explainers (Grad-CAM) can address ``conv2``
or ``bn2`` by name, and the rectified feature maps as ``relu1`` and ``relu2``
(``nn.ReLU`` modules without parameters: the weights and their state-dict keys
are those of a model that applies ReLU as a function). The model takes images in
[0, 1] and applies the dataset's normalisation itself, so attacks and explainers
work in pixel space.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_serializer
from torch import nn

import benchlab
from benchlab.components import DatasetInfo


class CNNParams(benchlab.Params):
    """Dropout rates of the two dropout layers (the original defaults)."""

    dropout1: float = Field(0.25, ge=0.0, lt=1.0, description="after the max-pool")
    dropout2: float = Field(0.5, ge=0.0, lt=1.0, description="after fc1")


class CNNBNParams(CNNParams):
    """``cnn_bn``'s parameters: the dropout rates, and what BatchNorm normalises with
    outside training.

    ``bn_eval: running`` (the default): the running estimates gathered in training,
    as BatchNorm does. ``batch``: the mean and variance of the batch being evaluated,
    in every evaluation and every attack alike (the RobustNorm ablation of Awais et
    al. 2020), without updating the running estimates. This changes the model: a
    prediction then depends on the other images of its batch (benchmarks evaluate
    and attack in batches of ``evaluate.batch_size``). Training, and so the
    weights, are the same either way.
    """

    bn_eval: Literal["running", "batch"] = Field(
        "running", description="what BatchNorm normalises with in eval mode")

    @model_serializer(mode="wrap")
    def _default_left_out(self, handler):
        # a suite that does not choose keeps the parameters, and so the model
        # cache key, of the cnn_bn that predates the choice
        data = handler(self)
        if isinstance(data, dict) and data.get("bn_eval") == "running":
            data.pop("bn_eval")
        return data


class BatchStatisticsNorm(nn.BatchNorm2d):
    """BatchNorm that normalises with the batch's own statistics in eval mode too,
    leaving its running estimates as training left them (same parameters and buffers
    as :class:`torch.nn.BatchNorm2d`, and the same computation in train mode)."""

    #: an image's output depends on the rest of its batch: evaluation keeps a fixed
    #: batch size for this model (benchlab.inference)
    batch_dependent = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return super().forward(x)
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


class CNN(nn.Module):
    """Two 3x3 convolutions, a max-pool and two fully connected layers.

    ``batch_norm`` adds ``bn1`` and ``bn2`` after the convolutions; without it the
    model has no BatchNorm attributes at all, so asking for ``bn2`` fails loudly.
    """

    def __init__(self, info: DatasetInfo, params: CNNParams | None = None,
                 batch_norm: bool = False) -> None:
        super().__init__()
        params = params or CNNParams()
        norm = BatchStatisticsNorm if getattr(params, "bn_eval", "running") == "batch" \
            else nn.BatchNorm2d
        channels, height, width = info.shape
        if len(info.mean) != channels or len(info.std) != channels:
            raise ValueError(f"mean/std need one value per channel ({channels})")
        if height < 6 or width < 6:
            raise ValueError(f"images of {height}x{width} are too small for this CNN")
        # Non-persistent: the normalisation belongs to the dataset, not the weights.
        self.register_buffer("mean", torch.tensor(info.mean).view(1, channels, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(info.std).view(1, channels, 1, 1),
                             persistent=False)
        self.batch_norm = batch_norm
        self.conv1 = nn.Conv2d(channels, 32, 3)
        if batch_norm:
            self.bn1 = norm(32)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(32, 64, 3)
        if batch_norm:
            self.bn2 = norm(64)
        self.relu2 = nn.ReLU()
        self.dropout1 = nn.Dropout(params.dropout1)
        self.fc1 = nn.Linear(64 * ((height - 4) // 2) * ((width - 4) // 2), 128)
        self.dropout2 = nn.Dropout(params.dropout2)
        self.fc2 = nn.Linear(128, info.num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std
        x = self.conv1(x)
        if self.batch_norm:
            x = self.bn1(x)
        x = self.relu1(x)
        x = self.conv2(x)
        if self.batch_norm:
            x = self.bn2(x)
        x = self.relu2(x)
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = _flatten(x)
        x = F.relu(self.fc1(x))
        x = self.dropout2(x)
        return self.fc2(x)


def _flatten(x: torch.Tensor) -> torch.Tensor:
    """``torch.flatten(x, 1)``; for a channels-last map, with its gradient channels-last too."""
    # Strides rather than is_contiguous(memory_format=...), which vmap cannot answer.
    if x.requires_grad and x.dim() == 4 and x.stride(1) == 1 and not x.is_contiguous():
        return _FlattenChannelsLast.apply(x)
    return torch.flatten(x, 1)


class _FlattenChannelsLast(torch.autograd.Function):
    """Flatten of a channels-last map whose backward returns a channels-last gradient.

    Flattening a channels-last feature map copies it into the (C, H, W) order fc1
    expects, and the gradient comes back in that order. Max-pool's backward, given
    a channels-first gradient for a channels-last input, then copies twice at the
    larger pre-pool size: 5-10% of a CPU training step in channels-last. Converting
    the gradient here, at the pooled size, costs a fraction of that.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(x, 1)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.shape = inputs[0].shape

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.reshape(ctx.shape).contiguous(memory_format=torch.channels_last)


def build_cnn(info: DatasetInfo, params: CNNParams) -> CNN:
    """The CNN without BatchNorm."""
    return CNN(info, params, batch_norm=False)


def build_cnn_bn(info: DatasetInfo, params: CNNBNParams) -> CNN:
    """The CNN with BatchNorm after each convolution (normalising with ``params.bn_eval``
    outside training)."""
    return CNN(info, params, batch_norm=True)


@benchlab.hookimpl
def register_models(register):
    register("cnn", build_cnn, params=CNNParams,
             description="2 conv + 2 fc layers with dropout (the original MNIST CNN)")
    register("cnn_bn", build_cnn_bn, params=CNNBNParams,
             description="the same CNN with BatchNorm after each convolution")
