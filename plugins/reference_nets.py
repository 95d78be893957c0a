"""Networks of published reference results, so that an anchor is checked on its own model.

``fast_at_net`` is the MNIST network Wong, Rice and Kolter 2020 ("Fast is better than
free") trained with FGSM adversarial training, the model behind AutoAttack's MNIST
entry for that method (98.50% clean, 82.88% robust at L∞ ε = 0.3):

conv1 (C->16, 4x4, stride 2, padding 1) -> ReLU -> conv2 (16->32, 4x4, stride 2,
padding 1) -> ReLU -> fc1 (32*H/4*W/4 -> 100) -> ReLU -> fc2 (100 -> classes)

No pooling, no dropout, no BatchNorm, and no input normalisation: like the paper's
network it takes the [0, 1] pixels as they are. It has about 0.6 M multiply-adds per
28x28 image, a twentieth of the seed's ``cnn``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import benchlab
from benchlab.components import DatasetInfo


class FastATNet(nn.Module):
    """Two strided 4x4 convolutions and two dense layers (Wong et al. 2020, MNIST)."""

    def __init__(self, info: DatasetInfo) -> None:
        super().__init__()
        channels, height, width = info.shape
        if height % 4 or width % 4:
            raise ValueError(f"fast_at_net needs a height and width divisible by 4, "
                             f"not {height}x{width}")
        self.conv1 = nn.Conv2d(channels, 16, 4, stride=2, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 32, 4, stride=2, padding=1)
        self.relu2 = nn.ReLU()
        self.fc1 = nn.Linear(32 * (height // 4) * (width // 4), 100)
        self.fc2 = nn.Linear(100, info.num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.relu2(self.conv2(self.relu1(self.conv1(images))))
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


def build_fast_at_net(info: DatasetInfo, params: benchlab.Params) -> FastATNet:
    del params  # nothing to choose: the paper's network as it was
    return FastATNet(info)


@benchlab.hookimpl
def register_models(register):
    register("fast_at_net", build_fast_at_net,
             description="the MNIST network of Wong et al. 2020's fast adversarial "
                         "training (2 strided conv + 2 fc, no dropout)")
