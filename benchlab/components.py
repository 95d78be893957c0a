"""Contracts between the core and the components that plugins register."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from pydantic import BaseModel, ConfigDict

from benchlab.messages import NORM_LABELS

KINDS = ("dataset", "model", "attack", "explainer", "procedure", "sink")
Kind = Literal["dataset", "model", "attack", "explainer", "procedure", "sink"]
Split = Literal["train", "test"]
Norm = Literal["linf", "l2", "l1", "l0"]
NORMS: tuple[Norm, ...] = ("linf", "l2", "l1", "l0")


class Params(BaseModel):
    """Base class for a component's parameter model: unknown keys, inf and nan are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class NoParams(Params):
    """Parameter model of a component that takes no parameters."""


class ParamError(ValueError):
    """Raised by a component's ``check_params`` when a parameter does not fit the model.

    ``field`` names the parameter, so that validation points at its line.
    """

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about the data it will see."""

    name: str
    num_classes: int
    shape: tuple[int, int, int]  # (C, H, W)
    mean: tuple[float, ...]  # per channel, on the [0, 1] scale
    std: tuple[float, ...]
    classes: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetSplit:
    """One split held in memory: uint8 images (N, C, H, W) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError("images must be a uint8 tensor of shape (N, C, H, W)")
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError("labels must be an int64 tensor of shape (N,)")

    def __len__(self) -> int:
        return self.labels.shape[0]

    def head(self, n: int | None) -> DatasetSplit:
        """The first ``n`` samples (all of them when ``n`` is None)."""
        if n is None or n >= len(self):
            return self
        return DatasetSplit(self.images[:n], self.labels[:n])

    def floats(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Images as float32 in [0, 1] on ``device``."""
        return self.images.to(device).float().div_(255.0)


@dataclass(frozen=True)
class FileStatus:
    """One file of a dataset in the data root and whether it verified."""

    path: Path
    present: bool
    verified: bool


@runtime_checkable
class Dataset(Protocol):
    """A dataset plugin component."""

    info: DatasetInfo

    def load(self, split: Split, root: Path) -> DatasetSplit:
        """Load ``split`` from ``root``, fetching and verifying it first if needed."""
        ...

    def fetch(self, root: Path) -> None:
        """Make sure verified files are present in ``root``."""
        ...

    def files(self, root: Path) -> list[FileStatus]:
        """Which files are present in ``root`` and whether they verify."""
        ...


ModelBuilder = Callable[[DatasetInfo, Any], torch.nn.Module]
Attack = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, Sequence[float], Any], torch.Tensor]
Explainer = Callable[[torch.nn.Module, torch.Tensor, Any], torch.Tensor]
#: ``procedure(model, images, labels, generator, params) -> (loss, logits)``: the loss of
#: one optimisation step, and the logits of the batch it was computed on (a procedure
#: with a ``progress`` keyword is also given the fraction of the run's steps done)
Procedure = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Generator, Any],
                     tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class ThreatModel:
    """What an attack bounds.

    ``minimum_norm=False``: every adversarial image lies in the ``norm`` ball of
    radius ε around its clean image, for each ε of the suite (the attack returns
    one batch per ε). ``minimum_norm=True``: the attack looks for the smallest
    perturbation in ``norm`` that changes the prediction, with no ε to respect,
    and returns one batch; benchlab measures each image's norm and derives the
    accuracy at every ε of the suite from those norms.
    """

    norm: Norm = "linf"
    minimum_norm: bool = False

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; expected one of {', '.join(NORMS)}")

    def __str__(self) -> str:
        name = NORM_LABELS[self.norm]
        return f"minimum {name}" if self.minimum_norm else f"{name} ball"


LINF_BALL = ThreatModel()


@dataclass(frozen=True)
class Provenance:
    """Which plugin registered a component."""

    plugin: str  # entry-point name
    distribution: str
    version: str

    def __str__(self) -> str:
        return f"{self.plugin} ({self.distribution} {self.version})"


@dataclass(frozen=True)
class Component:
    """A registered component: its kind, name, implementation and parameter model."""

    kind: Kind
    name: str
    obj: Any
    params: type[Params]
    provenance: Provenance
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def validate_params(self, values: dict[str, Any]) -> Params:
        return self.params.model_validate(values)

    def threat(self, params: Params | None = None) -> ThreatModel:
        """An attack's threat model: ``threat=`` given at registration, a
        :class:`ThreatModel` or a function of the validated parameters (for attacks
        whose norm is a parameter); an L∞ ball when none was given."""
        declared = self.extra.get("threat", LINF_BALL)
        if callable(declared) and not isinstance(declared, ThreatModel):
            if params is None:
                params = self.validate_params({})
            declared = declared(params)
        if not isinstance(declared, ThreatModel):
            raise TypeError(f"{self.kind} '{self.name}': threat must be a ThreatModel, "
                            f"got {declared!r}")
        return declared
