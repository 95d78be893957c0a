"""What a trained model's weights depend on: the key material of the model cache.

Beyond the configuration and seed, a model's weights are decided by code: the
train job function, the trainer, data loading, the dataset's and the model's
modules and whatever project code those import. :func:`weights_code` finds
that code by reading the import statements of those modules (statically, with
``ast``, following imports into the project's own packages only: benchlab and
the packages of the model and dataset plugins) and digests every file found,
so editing any of them changes the key and the model is trained again. Imports
under ``if TYPE_CHECKING:`` are left out: they never run.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import json
import sys
from collections.abc import Iterable
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

import benchlab
from benchlab.components import Component
from benchlab.execute.workspace import build_model
from benchlab.jobs import Job
from benchlab.plugins import Registry
from benchlab.suite.schema import DEFAULT_PROCEDURE
from benchlab.training import THREADS_PER_RUN, batched_by_default

__all__ = ["TRAINING_CODE", "code_closure", "expected_state", "imported_modules",
           "model_identity", "model_key", "weights_code"]

#: benchlab's own modules that decide a model's weights, besides the plugins' modules
TRAINING_CODE = ("benchlab.execute.train", "benchlab.training", "benchlab.data")


def model_identity(job: Job, registry: Registry, device_type: str = "cpu") -> dict[str, Any]:
    """Everything a train job's weights depend on: the model cache's key material.

    Beyond the configuration and seed: the code (:func:`weights_code`), torch's
    version, the kind of device and, on a CPU, the intra-op threads a run computes
    with (fixed, so that where and beside what a run was scheduled does not matter).

    A training procedure other than the standard step adds its name, parameters and
    the code of its module (:func:`weights_code`); the standard step, named or not,
    leaves the key material as it was before procedures existed.

    The entry's label is not part of it: two entries (a sweep's configuration and a
    hand-written one) with the same component, parameters and training share one
    trained model. A dataset's parameters count when it has any.

    The learning-curve keys do not change the weights, but a cache entry holds the
    curve it was trained with, so they count when a curve is recorded; without one
    they are left out and keys stay those of suites that predate them.
    """
    skip = {"test_batch_size"} | ({"eval_every", "eval_size"}
                                  if job.train.eval_every is None else set())
    if job.train.lr_schedule == "constant":
        skip.add("lr_schedule")  # the schedule every suite had before it could be chosen
    train = {k: v for k, v in asdict(job.train).items() if k not in skip}
    compute: dict[str, Any] = {"device": device_type, "torch": torch.__version__}
    if device_type == "cpu":
        compute["threads_per_run"] = THREADS_PER_RUN
    elif batched_by_default(device_type, job.procedure is None):
        compute["trainer"] = "batched"  # vmapped runs round differently from runs alone
    model = registry.get("model", job.model.name)
    dataset = registry.get("dataset", job.dataset.name)
    procedure = job.procedure
    if procedure is not None and procedure.name == DEFAULT_PROCEDURE and not procedure.params:
        procedure = None  # the step a suite without a procedure trains with: today's key
    component = registry.get("procedure", procedure.name) if procedure is not None else None
    data = asdict(job.dataset)
    if not data["params"]:
        del data["params"]  # a dataset without parameters: the key of suites before them
    identity = {"model": job.model.name, "params": job.model.params,
                "dataset": data, "train": train, "seed": job.seed,
                "code": weights_code(model, dataset, component), "compute": compute}
    if procedure is not None:
        identity["procedure"] = {"name": procedure.name, "params": procedure.params}
    return identity


def model_key(identity: dict[str, Any]) -> str:
    """The cache key of a model with this identity."""
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def expected_state(job: Job, registry: Registry) -> dict[str, torch.Tensor]:
    """The state dict of the job's model, freshly built: what a cached one must look like."""
    try:
        with torch.device("meta"):  # names and shapes only: no memory, no initialisation
            return build_model(job, registry).state_dict()
    except Exception:  # noqa: BLE001 - a model that cannot be built on "meta" is built for real
        return build_model(job, registry).state_dict()


def weights_code(model: Component, dataset: Component | None = None,
                 procedure: Component | None = None) -> dict[str, Any]:
    """The code a trained ``model`` (on ``dataset``, trained with ``procedure``) depends
    on: versions and one digest."""
    roots = [*TRAINING_CODE, _module_of(model.obj)]
    for component in (dataset, procedure):
        if component is not None:
            roots.append(_module_of(component.obj))
    packages = {"benchlab", *(r.partition(".")[0] for r in roots)}
    files = code_closure(tuple(r for r in roots if r), frozenset(packages))
    digest = hashlib.sha256()
    for name, path in files.items():
        digest.update(f"{name}\0".encode())
        digest.update(_file_sha256(path).encode())
    return {"benchlab": benchlab.__version__,
            "model_plugin": f"{model.provenance.distribution} {model.provenance.version}",
            "modules": len(files), "sources": digest.hexdigest()[:24]}


def _module_of(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or type(obj).__module__
    return "" if module in (None, "__main__", "builtins") else str(module)


def code_closure(roots: tuple[str, ...], packages: frozenset[str]) -> dict[str, Path]:
    """Module name -> source file of ``roots`` and every module of ``packages`` they import,
    directly or through each other, sorted by name."""
    found: dict[str, Path] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        path = _source_of(name)
        if path is None:
            continue
        found[name] = path
        todo += [m for m in imported_modules(path, name) if m.partition(".")[0] in packages]
    return dict(sorted(found.items()))


def _source_of(name: str) -> Path | None:
    module = sys.modules.get(name)
    try:
        path = inspect.getsourcefile(module) if module is not None else None
        if path is None:
            spec = importlib.util.find_spec(name)
            path = spec.origin if spec is not None else None
    except (ImportError, TypeError, ValueError):
        return None
    if not path or not path.endswith(".py") or not Path(path).is_file():
        return None
    return Path(path)


def imported_modules(path: Path, name: str) -> tuple[str, ...]:
    """Names of the modules the file imports (for ``from a import b``: ``a.b`` too, which
    :func:`_source_of` drops when ``b`` is not a module); parsed once per file version."""
    stat = path.stat()
    return _parsed_imports(path, name, (stat.st_mtime_ns, stat.st_size))


@lru_cache(maxsize=512)
def _parsed_imports(path: Path, name: str, stamp: tuple[int, int]) -> tuple[str, ...]:
    return tuple(_import_names(path, name))


def _import_names(path: Path, name: str) -> Iterable[str]:
    tree = ast.parse(path.read_bytes(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in _running_nodes(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(p for p in [*parent, base] if p)
            if base:
                yield base
                yield from (f"{base}.{alias.name}" for alias in node.names if alias.name != "*")


def _running_nodes(tree: ast.AST) -> Iterable[ast.AST]:
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


@lru_cache(maxsize=512)
def _file_sha256_cached(path: Path, stamp: tuple[int, int]) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _file_sha256(path: Path) -> str:
    stat = path.stat()
    return _file_sha256_cached(path, (stat.st_mtime_ns, stat.st_size))
