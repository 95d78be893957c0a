"""The kit's own model and data: a tiny CNN and a synthetic batch, the same every time.

Attack and explainer checks run the component on these, so that no training,
data or network is needed and each check takes milliseconds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchlab.components import DatasetInfo

__all__ = ["KIT_SEED", "MNIST_SHAPED_INFO", "SYNTHETIC_INFO", "Inputs", "attackable_mlp",
           "clean_images", "fresh_inputs", "synthetic_batch", "tiny_cnn"]

KIT_SEED = 0

SYNTHETIC_INFO = DatasetInfo(name="synthetic", num_classes=5, shape=(3, 32, 32),
                             mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.3))
MNIST_SHAPED_INFO = DatasetInfo(name="mnist-shaped", num_classes=10, shape=(1, 28, 28),
                                mean=(0.1307,), std=(0.3081,))

#: a model, images and labels, as handed to an attack
Inputs = tuple[nn.Module, torch.Tensor, torch.Tensor]


class _TinyCNN(nn.Module):
    """conv -> BatchNorm -> ReLU -> average pool -> linear: every layer kind attacks meet."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(4 * 4 * 4, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(images)))
        return self.fc(torch.flatten(self.pool(x), 1))


def tiny_cnn(channels: int = 1, num_classes: int = 10, *, seed: int = KIT_SEED,
             device: torch.device | str = "cpu") -> nn.Module:
    """A small CNN (``conv``, ``bn``, ``pool``, ``fc``) in eval mode, the same for the same seed.

    Its BatchNorm statistics are set away from their (0, 1) defaults, so that a
    component that switches the model to train mode changes its outputs and buffers.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _TinyCNN(channels, num_classes)
        with torch.no_grad():
            model.bn.running_mean.uniform_(-0.2, 0.2)
            model.bn.running_var.uniform_(0.5, 1.5)
    return model.to(device).eval()


def attackable_mlp(shape: tuple[int, int, int] = (1, 16, 16), num_classes: int = 10, *,
                   seed: int = KIT_SEED, device: torch.device | str = "cpu") -> nn.Module:
    """A small MLP (flatten -> linear -> ReLU -> linear) in eval mode, the same for the
    same seed, whose prediction depends on each pixel: the model the kit attacks to
    check that an attack attacks.

    :func:`tiny_cnn` averages its features over the image and gives every synthetic
    image the same class, with margins no attack within ε = 0.3 in L∞ can cross; this
    one gives the synthetic images several classes, and PGD flips all of them.
    """
    pixels = shape[0] * shape[1] * shape[2]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Flatten(), nn.Linear(pixels, 16), nn.ReLU(),
                              nn.Linear(16, num_classes))
    return model.to(device).eval()


def synthetic_batch(n: int = 8, shape: tuple[int, int, int] = (1, 16, 16),
                    num_classes: int = 10, *, seed: int = KIT_SEED,
                    device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Float images (n, *shape) in [0, 1] and int64 labels (n,), the same for the same seed.

    The top rows are exactly 0 and the bottom rows exactly 1, like the background
    and strokes of MNIST, so an attack that does not clamp to [0, 1] is caught.
    """
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand((n, *shape), generator=generator)
    images[..., :3, :] = 0.0
    images[..., -2:, :] = 1.0
    labels = torch.randint(0, num_classes, (n,), generator=generator)
    return images.to(device), labels.to(device)


# Every call of a component gets a fresh model and fresh tensors, so that a
# component that breaks one rule (say, writes to its input) fails that rule's
# check and no other.

def fresh_inputs(device: torch.device, part: slice = slice(None)) -> Inputs:
    """The kit's model, and (a slice of) its images and labels, as new objects."""
    images, labels = synthetic_batch(device=device)
    return tiny_cnn(device=device), images[part].clone(), labels[part].clone()


def clean_images(device: torch.device) -> torch.Tensor:
    """The kit's images, to compare a component's output with."""
    return synthetic_batch(device=device)[0]
