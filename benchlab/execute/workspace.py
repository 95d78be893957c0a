"""What executing a job needs in the process it runs in, and the result it gives back.

The workspace holds the components (a plugin registry), the device and the dataset
splits; :func:`blame` attributes a failure inside a component call to the component,
and :func:`seeded` gives a component call its own seeded global generator.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchlab import guards
from benchlab.components import Component, DatasetSplit
from benchlab.jobs import DatasetSpec, Job
from benchlab.messages import describe
from benchlab.plugins import Registry

StateDict = dict[str, torch.Tensor]


@dataclass
class JobResult:
    """What executing one job gave: its rows, its product, or why it failed."""

    job_id: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    # train: {"state_dict", "epochs"} (epoch records, then any learning-curve records,
    # as the model cache keeps them); attack: {"eps", "adversarial"} or None;
    # explain: the grid's tensors
    product: dict[str, Any] | None = None
    error: str | None = None
    seconds: float = 0.0
    where: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


def resolve_device(name: str) -> torch.device:
    """The device ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` names in this process."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available (use auto or cpu)")
    return torch.device(name)


def build_model(job: Job, registry: Registry) -> torch.nn.Module:
    """A freshly initialised model of ``job``: its component, parameters and dataset."""
    component = registry.get("model", job.model.name)
    params = component.params.model_validate(job.model.params)
    return component.obj(registry.get("dataset", job.dataset.name).obj.info, params)


class Workspace:
    """What executing a job needs from the process it runs in.

    The components (a plugin registry), the device, and the dataset splits, read
    once per process from ``root``.
    """

    def __init__(self, registry: Registry, device: torch.device, root: Path):
        self.registry, self.device, self.root = registry, torch.device(device), Path(root)
        self._splits: dict[tuple[str, str, int | None, str], DatasetSplit] = {}

    def split(self, dataset: DatasetSpec, which: str, size: int | None = None
              ) -> DatasetSplit:
        limit = size if size is not None else dataset.size(which)
        key = (dataset.name, which, limit, json.dumps(dataset.params, sort_keys=True))
        if key not in self._splits:
            component = self.registry.get("dataset", dataset.name)
            with blame("dataset", dataset.name, component):
                if component.params.model_fields:  # a dataset with parameters takes them
                    params = component.validate_params(dataset.params)
                    full = component.obj.load(which, self.root, params)
                else:
                    full = component.obj.load(which, self.root)
            self._splits[key] = full.head(limit)
        return self._splits[key]

    def model_component(self, job: Job) -> Component:
        return self.registry.get("model", job.model.name)

    def build(self, job: Job) -> torch.nn.Module:
        return build_model(job, self.registry)

    def where(self) -> dict[str, str]:
        return {"host": socket.gethostname(), "pid": str(os.getpid()),
                "device": str(self.device)}

    def trained_model(self, job: Job, state: StateDict, probe: torch.Tensor) -> torch.nn.Module:
        """The job's model with weights ``state``, checked on a first batch ``probe``."""
        component = self.model_component(job)
        with blame("model", job.model.key, component):
            model = self.build(job)
            model.load_state_dict(state)
            model = model.to(self.device).eval()
            info = self.registry.get("dataset", job.dataset.name).obj.info
            with torch.no_grad():
                guards.check_logits(model(probe), len(probe), info.num_classes)
        return model


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, batch_size: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted classes and their softmax confidence, in batches."""
    preds, confs = [], []
    for chunk in images.split(batch_size):
        probs = model(chunk).float().softmax(dim=1)
        conf, pred = probs.max(dim=1)
        preds.append(pred)
        confs.append(conf)
    return torch.cat(preds), torch.cat(confs)


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the global RNGs for one component call, leaving the caller's state untouched."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextmanager
def blame(kind: str, key: str, component: Component) -> Iterator[None]:
    """Prefix any failure inside a component call with who is responsible."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit, Attributed):
        raise
    except guards.ComponentError as exc:  # a broken contract, found by a guard
        raise Attributed(f"{kind} '{key}' from {component.provenance}: {exc}") from exc
    except Exception as exc:
        raise Attributed(f"{kind} '{key}' from {component.provenance}: {describe(exc)}") \
            from exc


class Attributed(guards.ComponentError):
    """A component failure whose message already names the component."""
