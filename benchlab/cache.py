"""Content-addressed cache of trained models.

A trained model is stored under a key derived from everything that determines its
weights: the model and its parameters, the dataset slice, the training
configuration, the seed, and the code that built and trained it. A later suite
that asks for the same model (the FGSM/Grad-CAM study reusing the BatchNorm
study's models, a resumed run) loads it instead of training again.

An entry is a directory ``<root>/<key[:2]>/<key>/`` holding ``model.pt``,
``metrics.json``, ``identity.json`` and ``digests.json``, the SHA-256 of the other
three. It is written whole in a temporary sibling directory and renamed into
place, so readers see a complete entry or none, and two processes saving the same
key at once are harmless: the first rename wins and the other's copy is dropped.
Every load checks the digests and the shape of what it read; an entry that fails
any check is a cache miss (the model is trained again) with a warning naming it,
never data.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import json
import logging
import math
import os
import secrets
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import platformdirs
import torch

from benchlab.files import write_synced
from benchlab.messages import describe
from benchlab.tensors import UnreadableTensors, load_tensors

CACHE_ENV = "BENCHLAB_CACHE"
DIGESTS = "digests.json"
_FILES = ("model.pt", "metrics.json", "identity.json")

log = logging.getLogger("benchlab.cache")

StateDict = dict[str, torch.Tensor]
EpochMetrics = list[dict[str, float]]


def cache_root() -> Path:
    """``$BENCHLAB_CACHE``, else the per-user cache directory."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("benchlab")) / "models"


class DamagedEntry(Exception):
    """A cache entry whose files do not match their digests or the expected shape."""


class ModelCache:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else cache_root()

    def path(self, key: str) -> Path:
        """The directory of the entry ``key`` (which may not exist)."""
        return self.root / key[:2] / key

    def load(self, key: str, like: Mapping[str, torch.Tensor] | None = None
             ) -> tuple[StateDict, EpochMetrics] | None:
        """The cached weights and per-epoch metrics, or None if absent or damaged.

        ``like`` is the state dict of a freshly built model: an entry whose tensors
        differ from it in names or shapes is a miss too.
        """
        folder = self.path(key)
        if not folder.is_dir():
            return None
        try:
            return self._read(folder, like)
        except DamagedEntry as exc:
            log.warning("model cache entry %s is damaged (%s); training the model again",
                        folder, exc)
            return None

    def _read(self, folder: Path, like: Mapping[str, torch.Tensor] | None
              ) -> tuple[StateDict, EpochMetrics]:
        try:
            expected = json.loads((folder / DIGESTS).read_bytes())
            blobs = {name: (folder / name).read_bytes() for name in _FILES}
        except FileNotFoundError as exc:
            raise DamagedEntry(f"{Path(exc.filename).name} is missing") from None
        except (OSError, ValueError) as exc:
            raise DamagedEntry(f"unreadable: {exc}") from None
        if not isinstance(expected, dict):
            raise DamagedEntry(f"{DIGESTS} is not a mapping")
        for name, blob in blobs.items():
            if expected.get(name) != hashlib.sha256(blob).hexdigest():
                raise DamagedEntry(f"{name} does not match its SHA-256 in {DIGESTS}")
        try:
            metrics = json.loads(blobs["metrics.json"])
        except ValueError as exc:
            raise DamagedEntry(f"cannot decode metrics.json: {describe(exc)}") from None
        try:
            state = load_tensors(blobs["model.pt"], str(folder / "model.pt"))
        except UnreadableTensors as exc:  # its full text is in the run's log file
            raise DamagedEntry(f"cannot decode model.pt: {exc}") from None
        _check_metrics(metrics)
        _check_state(state, like)
        return state, metrics

    def save(self, key: str, state: Mapping[str, torch.Tensor], metrics: EpochMetrics,
             identity: dict[str, Any]) -> Path:
        """Store an entry; a valid entry already saved under ``key`` is kept as it is."""
        folder = self.path(key)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{key}.", suffix=".tmp"))
        try:
            model = io.BytesIO()
            torch.save({k: v.detach().cpu() for k, v in state.items()}, model)
            blobs = {"model.pt": model.getvalue(),
                     "metrics.json": json.dumps(metrics).encode(),
                     "identity.json": json.dumps(identity, indent=2, sort_keys=True).encode()}
            for name, blob in blobs.items():
                write_synced(tmp / name, blob)
            digests = {name: hashlib.sha256(blob).hexdigest() for name, blob in blobs.items()}
            write_synced(tmp / DIGESTS, json.dumps(digests, indent=1).encode())
            if not _rename_dir(tmp, folder):
                self._replace_unless_valid(tmp, folder, state)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already when the rename won
        return folder

    def _replace_unless_valid(self, tmp: Path, folder: Path,
                              state: Mapping[str, torch.Tensor]) -> None:
        try:
            self._read(folder, state)
            return  # another writer saved this key first: its entry is as good as ours
        except DamagedEntry:
            pass
        # Move the damaged entry aside in one rename, so no reader sees it half deleted.
        aside = folder.with_name(f".{folder.name}.damaged.{secrets.token_hex(4)}")
        try:
            os.rename(folder, aside)
        except FileNotFoundError:
            pass
        _rename_dir(tmp, folder)  # losing to a concurrent writer here is fine as well
        shutil.rmtree(aside, ignore_errors=True)


def _rename_dir(src: Path, dst: Path) -> bool:
    """Rename ``src`` to ``dst``; False if ``dst`` exists already (and is not empty)."""
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
            return False
        raise
    return True


def _check_metrics(metrics: Any) -> None:
    """Epoch records numbered 1, 2, ..., then any learning-curve records (with a step)."""
    from benchlab.training import EpochRecord, StepRecord

    fields = [f.name for f in dataclasses.fields(EpochRecord)]
    if not isinstance(metrics, list) or not metrics:
        raise DamagedEntry("metrics.json is not a non-empty list of epochs")
    curve = [r for r in metrics if isinstance(r, dict) and "step" in r]
    metrics = metrics[:len(metrics) - len(curve)]
    step_fields = sorted(f.name for f in dataclasses.fields(StepRecord))
    # a curve point of a standard run has no PGD accuracy: every field but the optional
    required = sorted(f.name for f in dataclasses.fields(StepRecord)
                      if f.default is dataclasses.MISSING)
    for i, record in enumerate(curve, start=1):
        if sorted(record) not in (step_fields, required) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in record.values()):
            raise DamagedEntry(f"metrics.json: curve point {i} does not hold numbers for "
                               f"exactly {required} (and optionally robust_acc)")
    if not metrics:
        raise DamagedEntry("metrics.json holds no epoch")
    for i, record in enumerate(metrics, start=1):
        if not isinstance(record, dict) or sorted(record) != sorted(fields):
            raise DamagedEntry(f"metrics.json: epoch {i} does not hold exactly {fields}")
        values = record.values()
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                   and math.isfinite(v) for v in values):
            raise DamagedEntry(f"metrics.json: epoch {i} holds a value that is not a number")
        if record["epoch"] != i:
            raise DamagedEntry(f"metrics.json: epoch {i} is numbered {record['epoch']}")


def _check_state(state: Any, like: Mapping[str, torch.Tensor] | None) -> None:
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise DamagedEntry("model.pt does not hold a state dict of tensors")
    if like is None:
        return
    if set(state) != set(like):
        odd = sorted(set(state) ^ set(like))
        raise DamagedEntry(f"model.pt does not fit the model (tensors {', '.join(odd[:3])} "
                           "differ)")
    for name, tensor in like.items():
        if state[name].shape != tensor.shape or state[name].dtype != tensor.dtype:
            raise DamagedEntry(f"model.pt does not fit the model ({name} has shape "
                               f"{tuple(state[name].shape)}, the model "
                               f"{tuple(tensor.shape)})")
