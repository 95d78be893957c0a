"""Shared fixtures: a small registry of synthetic components for fast core tests."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch
from torch import nn

import benchlab
from benchlab.components import DatasetInfo, DatasetSplit, FileStatus, Provenance
from benchlab.plugins import build_registry


def quadrants(n: int, seed: int, side: int = 8, noise: int = 40,
              bright: int = 200) -> DatasetSplit:
    """A learnable problem: the class (0-3) is the quadrant that is bright, over noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    images = torch.randint(0, noise, (n, 1, side, side), generator=g, dtype=torch.uint8)
    half = side // 2
    for i, y in enumerate(labels.tolist()):
        r, c = divmod(y, 2)
        images[i, 0, r * half:(r + 1) * half, c * half:(c + 1) * half] += bright
    return DatasetSplit(images, labels)


class ToyDataset:
    """Linearly separable 8x8 'digits' (a bright quadrant per class), generated in memory."""

    info = DatasetInfo(name="toy", num_classes=4, shape=(1, 8, 8), mean=(0.25,), std=(0.4,))

    def load(self, split, root: Path) -> DatasetSplit:
        return quadrants(256, 0) if split == "train" else quadrants(128, 1)

    def fetch(self, root: Path) -> None:
        return None

    def files(self, root: Path) -> list[FileStatus]:
        return []


class TinyNet(nn.Module):
    def __init__(self, info: DatasetInfo, width: int = 4):
        super().__init__()
        self.conv1 = nn.Conv2d(info.shape[0], width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width * info.shape[1] * info.shape[2], info.num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.bn1(self.conv1(x))).flatten(1))


class TinyParams(benchlab.Params):
    width: int = 4


class NoiseParams(benchlab.Params):
    scale: float = 1.0


def noise_attack(model, images, labels, eps, params):
    """A valid (if weak) attack: a fixed sign pattern scaled by eps."""
    pattern = torch.ones_like(images)
    pattern[..., ::2] = -1
    return torch.stack([(images + e * params.scale * pattern).clamp(0, 1) for e in eps])


def cam_explainer(model, images, params):
    return images[:, 0].clone()


def toy_plugin() -> types.ModuleType:
    @benchlab.hookimpl
    def register_datasets(register):
        register("toy", ToyDataset())

    @benchlab.hookimpl
    def register_models(register):
        register("tiny", lambda info, p: TinyNet(info, p.width), params=TinyParams)

    @benchlab.hookimpl
    def register_attacks(register):
        register("noise", noise_attack, params=NoiseParams)

    @benchlab.hookimpl
    def register_explainers(register):
        register("intensity", cam_explainer)

    module = types.ModuleType("toy_plugin")
    for hook in (register_datasets, register_models, register_attacks, register_explainers):
        setattr(module, hook.__name__, hook)
    return module


TOY_PROVENANCE = Provenance("toy", "benchlab-tests", "0")


@pytest.fixture
def toy_registry():
    return build_registry([("toy", toy_plugin(), TOY_PROVENANCE)], entry_points=False)


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """Keep model checkpoints of a test inside its tmp directory."""
    cache = tmp_path / "model-cache"
    monkeypatch.setenv("BENCHLAB_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The data root, with MNIST fetched and verified there (once per session).

    Tests that read real MNIST use this instead of skipping when it is absent, so
    their outcome does not depend on which test happened to fetch it first.
    """
    from benchlab.data import data_root, fetch
    from benchlab.plugins import default_registry

    root = data_root()
    statuses = fetch(default_registry().get("dataset", "mnist").obj, root)
    assert statuses and all(s.verified for s in statuses), statuses
    return root


@pytest.fixture
def one_thread():
    """One intra-op thread for the test, restored afterwards: small tensors compute many
    times faster on a shared 2-core machine, and runs compute as in a pack."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
