"""The dataset checks: the declared info, the file listing, the test split and its
declared mean and std. Checks that read the data skip (they do not fail) when
the files are absent, unless the kit may download them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from benchlab.components import Component, DatasetInfo, DatasetSplit, FileStatus
from benchlab.plugins import Registry
from benchlab.testing.kit import Check, CheckFailure, CheckSpec, Setup, SkipCheck, select_checks

__all__ = ["CHECKS", "check_dataset"]

# How far a dataset's declared per-channel mean/std may be from its test split's.
MEAN_STD_ATOL = 0.02
MEAN_STD_SAMPLES = 10_000


def _info(component: Component, setup: Setup) -> None:
    """info: num_classes >= 2, shape (C, H, W), mean and std of length C in [0, 1], std > 0."""
    info = component.obj.info
    problems = []
    if not isinstance(info, DatasetInfo):
        raise CheckFailure(f"info is a {type(info).__name__}, expected a DatasetInfo")
    if not (isinstance(info.num_classes, int) and info.num_classes >= 2):
        problems.append(f"num_classes is {info.num_classes!r}, expected an int >= 2")
    shape = tuple(info.shape)
    if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
        problems.append(f"shape is {info.shape!r}, expected three positive ints (C, H, W)")
    channels = shape[0] if shape else 0
    for name, values in (("mean", info.mean), ("std", info.std)):
        if len(values) != channels:
            problems.append(f"{name} has {len(values)} values, expected one per channel "
                            f"({channels})")
        elif not all(0.0 <= float(v) <= 1.0 for v in values):
            problems.append(f"{name} {tuple(values)} is not on the [0, 1] pixel scale")
    if any(float(s) <= 0 for s in info.std):
        problems.append(f"std {tuple(info.std)} has a value <= 0")
    if info.classes and len(info.classes) != info.num_classes:
        problems.append(f"{len(info.classes)} class names for {info.num_classes} classes")
    if problems:
        raise CheckFailure("; ".join(problems))


def _files(component: Component, setup: Setup) -> None:
    """files(root) lists FileStatus entries without downloading anything."""
    statuses = component.obj.files(setup.root())
    if not isinstance(statuses, list) or not all(isinstance(s, FileStatus) for s in statuses):
        raise CheckFailure(f"files(root) returned {statuses!r}, expected a list of FileStatus")
    wrong = [s.path for s in statuses if s.verified and not s.present]
    if wrong:
        raise CheckFailure(f"files marked verified but not present: {wrong}")


def _load_test_split(component: Component, setup: Setup) -> DatasetSplit:
    root = setup.root()
    if not setup.download:
        missing = [s.path.name for s in component.obj.files(root) if not s.verified]
        if missing:
            raise SkipCheck(f"files absent or unverified in {root} ({', '.join(missing)}); "
                        f"run `benchlab data fetch {component.name}` first")
    split = component.obj.load("test", root)
    if not isinstance(split, DatasetSplit):
        raise CheckFailure(f"load('test') returned {type(split).__name__}, "
                           "expected a DatasetSplit")
    return split


def _test_split(component: Component, setup: Setup) -> None:
    """load('test'): uint8 images (N, C, H, W) of info.shape, int64 labels in [0, num_classes)."""
    info = component.obj.info
    split = _load_test_split(component, setup)
    images, labels = split.images, split.labels
    if len(split) == 0:
        raise CheckFailure("the test split is empty")
    if images.dtype != torch.uint8 or tuple(images.shape[1:]) != tuple(info.shape):
        raise CheckFailure(f"images are {images.dtype} {tuple(images.shape)}, expected "
                           f"torch.uint8 (N, {', '.join(map(str, info.shape))})")
    if labels.dtype != torch.int64 or labels.shape != images.shape[:1]:
        raise CheckFailure(f"labels are {labels.dtype} {tuple(labels.shape)}, "
                           f"expected torch.int64 ({images.shape[0]},)")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= info.num_classes:
        raise CheckFailure(f"labels span [{low}, {high}], outside [0, {info.num_classes})")


def _mean_std(component: Component, setup: Setup) -> None:
    """The declared mean and std are within 0.02 of the test split's, per channel."""
    info = component.obj.info
    images = _load_test_split(component, setup).images[:MEAN_STD_SAMPLES]
    pixels = images.transpose(0, 1).reshape(images.shape[1], -1).double() / 255.0
    measured = {"mean": pixels.mean(dim=1).tolist(), "std": pixels.std(dim=1).tolist()}
    declared = {"mean": info.mean, "std": info.std}
    problems = []
    for stat in ("mean", "std"):
        if len(declared[stat]) != len(measured[stat]):
            raise CheckFailure(f"{stat} has {len(declared[stat])} values for "
                               f"{len(measured[stat])} channels")
        gaps = [abs(float(d) - m) for d, m in zip(declared[stat], measured[stat], strict=True)]
        if max(gaps) > MEAN_STD_ATOL:
            problems.append(f"declared {stat} {tuple(declared[stat])} but the test split has "
                            f"({', '.join(f'{v:.4f}' for v in measured[stat])})")
    if problems:
        raise CheckFailure("; ".join(problems) + f" (tolerance {MEAN_STD_ATOL})")


CHECKS = (
    CheckSpec("info", _info),
    CheckSpec("files", _files),
    CheckSpec("test_split", _test_split),
    CheckSpec("mean_std", _mean_std),
)


def check_dataset(component: Component | str, *, params: Mapping[str, Any] | None = None,
                  data_root: Path | str | None = None, download: bool = False,
                  registry: Registry | None = None,
                  expected_failures: Mapping[str, str] | None = None) -> Iterator[Check]:
    """The checks for a dataset; run each as ``check(component)``.

    Checks that read the data look in ``data_root`` (default
    :func:`benchlab.data.data_root`) and skip when the files are not there,
    unless ``download`` allows the dataset to fetch them.
    """
    return select_checks("dataset", CHECKS, component, params=params, device="cpu",
                         registry=registry, data_root=data_root, download=download,
                         expected_failures=expected_failures)
