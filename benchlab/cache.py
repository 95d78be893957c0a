"""Content-addressed cache of trained models.

A trained model is stored under a key derived from everything that determines its
weights: the model and its parameters, the dataset slice, the training
configuration, the seed, and the code that built and trained it. A later suite
that asks for the same model (the FGSM/Grad-CAM study reusing the BatchNorm
study's models, a resumed run) loads it instead of training again.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import platformdirs
import torch

import benchlab
from benchlab.components import Component

CACHE_ENV = "BENCHLAB_CACHE"


def cache_root() -> Path:
    """``$BENCHLAB_CACHE``, else the per-user cache directory."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("benchlab")) / "models"


def _file_digest(obj: Any) -> str:
    try:
        path = inspect.getsourcefile(obj)
    except TypeError:
        path = None
    if not path or not os.path.exists(path):
        return "unknown"
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def code_version(model: Component) -> dict[str, str]:
    """What code a checkpoint depends on: benchlab, its trainer, the model's plugin."""
    from benchlab import training

    return {
        "benchlab": benchlab.__version__,
        "training": _file_digest(training),
        "model_plugin": f"{model.provenance.distribution} {model.provenance.version}",
        "model_source": _file_digest(model.obj),
    }


def model_key(identity: dict[str, Any]) -> str:
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


class ModelCache:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else cache_root()

    def _dir(self, key: str) -> Path:
        return self.root / key[:2] / key

    def load(self, key: str) -> tuple[dict[str, torch.Tensor], list[dict[str, float]]] | None:
        """The cached weights and per-epoch metrics, or None if absent or damaged."""
        folder = self._dir(key)
        try:
            metrics = json.loads((folder / "metrics.json").read_text())
            state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
        except (OSError, ValueError, RuntimeError, EOFError):
            return None
        if not isinstance(state, dict) or not isinstance(metrics, list):
            return None
        return state, metrics

    def save(self, key: str, state: dict[str, torch.Tensor], metrics: list[dict[str, float]],
             identity: dict[str, Any]) -> Path:
        folder = self._dir(key)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{key}."))
        try:
            torch.save({k: v.detach().cpu() for k, v in state.items()}, tmp / "model.pt")
            (tmp / "metrics.json").write_text(json.dumps(metrics))
            (tmp / "identity.json").write_text(json.dumps(identity, indent=2, sort_keys=True))
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return folder
