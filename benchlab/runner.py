"""Running a suite's jobs and storing what each one measured.

The runner walks the jobs in order, skips those already finished (``--resume``),
trains models (several seeds of one configuration together when the trainer says
that pays off), and hands trained models to attacks and explainers. Every
component's output is checked (:mod:`benchlab.guards`); a component that raises or
breaks its contract fails only the jobs that use it.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

import benchlab
from benchlab import guards, metrics, training
from benchlab.cache import ModelCache, code_version, model_key
from benchlab.components import Component, DatasetSplit
from benchlab.data import data_root
from benchlab.jobs import Job, expand
from benchlab.plugins import Registry
from benchlab.store import JobRecord, RunStore, atomic_write_text
from benchlab.suite import Suite


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available (use auto or cpu)")
    return torch.device(name)


def default_output_dir(suite: Suite, base: Path = Path("results")) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return base / suite.name / stamp


@dataclass
class Outcome:
    out_dir: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


class _Context:
    def __init__(self, registry: Registry, store: RunStore, device: torch.device,
                 cache: ModelCache, root: Path, explain_sizes: dict[str, int]):
        self.registry, self.store, self.device, self.cache = registry, store, device, cache
        self.root = root
        # attack job id -> how many of its adversarial images explain jobs will read
        self.explain_sizes = explain_sizes
        self._splits: dict[tuple[str, str, int | None], DatasetSplit] = {}

    def split(self, dataset: dict[str, Any], which: str, size: int | None = None) -> DatasetSplit:
        limit = size if size is not None else dataset.get(f"{which}_size")
        key = (dataset["name"], which, limit)
        if key not in self._splits:
            component = self.registry.get("dataset", dataset["name"])
            with _blame("dataset", dataset["name"], component):
                full = component.obj.load(which, self.root)
            self._splits[key] = full.head(limit)
        return self._splits[key]

    def dataset_info(self, dataset: dict[str, Any]):
        return self.registry.get("dataset", dataset["name"]).obj.info

    def model_component(self, job: Job) -> Component:
        return self.registry.get("model", job.model.name)

    def identity(self, job: Job) -> dict[str, Any]:
        train = {k: v for k, v in job.train.items() if k != "test_batch_size"}
        return {"model": job.model.name, "params": job.model.params,
                "dataset": job.dataset, "train": train, "seed": job.seed,
                "code": code_version(self.model_component(job))}

    def build(self, job: Job) -> torch.nn.Module:
        component = self.model_component(job)
        params = component.params.model_validate(job.model.params)
        return component.obj(self.dataset_info(job.dataset), params)

    def model_key(self, job: Job) -> str:
        """Where the job's trained model lives in the model cache."""
        return model_key(self.identity(job))

    def trained_model(self, job: Job, probe: torch.Tensor) -> torch.nn.Module:
        """The job's trained model from the cache, checked on a first batch ``probe``."""
        cached = self.cache.load(self.model_key(job))
        if cached is None:
            raise guards.ComponentError(
                f"no trained model '{job.model.key}' (run {job.run}) in the model cache "
                f"{self.cache.root}; run the suite again without --resume to train it")
        component = self.model_component(job)
        with _blame("model", job.model.key, component):
            model = self.build(job)
            model.load_state_dict(cached[0])
            model = model.to(self.device).eval()
            with torch.no_grad():
                guards.check_logits(model(probe), len(probe),
                                    self.dataset_info(job.dataset).num_classes)
        return model


def _row(job: Job, metric: str, value: float, **where: Any) -> dict[str, Any]:
    return {"job": job.id, "model": job.model.key, "dataset": job.dataset["name"],
            "run": job.run, "seed": job.seed, "epoch": where.get("epoch"),
            "attack": where.get("attack"), "eps": where.get("eps"),
            "explainer": where.get("explainer"), "metric": metric, "value": float(value)}


_EPOCH_METRICS = ("train_loss", "train_acc", "test_loss", "test_acc", "epoch_time_s",
                  "images_per_s")


def _train_rows(job: Job, epochs: Sequence[dict[str, float]]) -> list[dict[str, Any]]:
    return [_row(job, m, record[m], epoch=int(record["epoch"]))
            for record in epochs for m in _EPOCH_METRICS]


# --------------------------------------------------------------------------- executors


def _train_group(jobs: list[Job], ctx: _Context, tick: Callable[[int], None]
                 ) -> Iterator[tuple[Job, list[dict[str, Any]]]]:
    """Train (or load from the cache) one group of same-configuration jobs."""
    todo = []
    for job in jobs:
        cached = ctx.cache.load(ctx.model_key(job))
        if cached is not None:
            tick(len(cached[1]))
            yield job, _train_rows(job, cached[1])
        else:
            todo.append(job)
    if not todo:
        return
    first = todo[0]
    train = ctx.split(first.dataset, "train")
    test = ctx.split(first.dataset, "test")
    results = training.train_runs(lambda: ctx.build(first), train, test, _train_config(first),
                                  [job.seed for job in todo], device=ctx.device,
                                  on_epoch=lambda index, record: tick(1))
    for job, result in zip(todo, results):
        epochs = [{k: float(v) for k, v in asdict(record).items()} for record in result.epochs]
        final = epochs[-1]
        if not all(map(_finite, (final["train_loss"], final["test_loss"]))):
            raise guards.ComponentError(
                f"model '{job.model.key}' diverged in training (loss is not finite)")
        identity = ctx.identity(job)
        ctx.cache.save(model_key(identity), result.state_dict, epochs, identity)
        yield job, _train_rows(job, epochs)


def _train_config(job: Job) -> training.TrainConfig:
    """The trainer's configuration of a train job (the suite's train keys it knows)."""
    known = training.TrainConfig.__dataclass_fields__
    return training.TrainConfig(**{k: v for k, v in job.train.items() if k in known})


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


@torch.no_grad()
def _predict(model: torch.nn.Module, images: torch.Tensor, batch_size: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted classes and their softmax confidence, in batches."""
    preds, confs = [], []
    for chunk in images.split(batch_size):
        probs = model(chunk).float().softmax(dim=1)
        conf, pred = probs.max(dim=1)
        preds.append(pred)
        confs.append(conf)
    return torch.cat(preds), torch.cat(confs)


def _run_attack(job: Job, ctx: _Context) -> list[dict[str, Any]]:
    assert job.attack is not None
    component = ctx.registry.get("attack", job.attack.name)
    params = component.params.model_validate(job.attack.params)
    split = ctx.split(job.dataset, "test", job.evaluate["test_size"])
    images, labels = split.floats(ctx.device), split.labels.to(ctx.device)
    batch = job.evaluate["batch_size"]
    model = ctx.trained_model(job, images[:batch])
    clean_pred, _ = _predict(model, images, batch)
    eps = list(job.eps)

    started = time.perf_counter()
    with _blame("attack", job.attack.key, component), _seeded(job.seed, ctx.device):
        adversarial = component.obj(model, images, labels, eps, params)
        guards.check_adversarial(images, adversarial, eps)
    seconds = time.perf_counter() - started

    # A targeted attack says which classes it aimed at, so success means reaching them.
    aimed_at = component.extra.get("targets")
    targets = aimed_at(model, images, labels, params) if aimed_at is not None else None
    rows = [_row(job, "accuracy", metrics.accuracy(clean_pred, labels), attack=job.attack.key,
                 eps=0.0)]
    for i, e in enumerate(eps):
        adv_pred, _ = _predict(model, adversarial[i], batch)
        linf, l2 = metrics.perturbation_norms(images, adversarial[i])
        where = dict(attack=job.attack.key, eps=e)
        rows += [
            _row(job, "accuracy", metrics.accuracy(adv_pred, labels), **where),
            _row(job, "success_rate",
                 metrics.attack_success_rate(clean_pred, adv_pred, labels, targets), **where),
            _row(job, "linf", linf, **where),
            _row(job, "l2", l2, **where),
        ]
    rows += [
        _row(job, "attack_time_s", seconds, attack=job.attack.key),
        _row(job, "images_per_s", len(labels) * len(eps) / max(seconds, 1e-9),
             attack=job.attack.key),
    ]
    keep = ctx.explain_sizes.get(job.id, 0)
    if keep:
        ctx.store.artifacts_dir.mkdir(parents=True, exist_ok=True)
        # clone: saving a slice would write the whole underlying storage
        torch.save({"eps": torch.tensor(eps), "adversarial": adversarial[:, :keep].cpu().clone()},
                   ctx.store.artifact(job.id))
    return rows


def _run_explain(job: Job, ctx: _Context) -> list[dict[str, Any]]:
    assert job.explainer is not None
    component = ctx.registry.get("explainer", job.explainer.name)
    params = component.params.model_validate(job.explainer.params)
    size = job.evaluate["explain_size"]
    split = ctx.split(job.dataset, "test", size)
    images, labels = split.floats(ctx.device), split.labels.to(ctx.device)
    model = ctx.trained_model(job, images[: job.evaluate["batch_size"]])
    eps: list[float] = [0.0]
    batches = [images]
    if job.attack is not None:
        saved = torch.load(ctx.store.artifact(job.deps[-1]), map_location=ctx.device,
                           weights_only=True)
        eps += [float(e) for e in saved["eps"]]
        batches += list(saved["adversarial"][:, : len(labels)].to(ctx.device))

    maps = []
    started = time.perf_counter()
    with _blame("explainer", job.explainer.key, component), _seeded(job.seed, ctx.device):
        for batch in batches:
            cam = component.obj(model, batch, params)
            guards.check_explanation(batch, cam)
            maps.append(cam)
    seconds = time.perf_counter() - started

    where = dict(attack=job.attack.key if job.attack else None, explainer=job.explainer.key)
    rows = []
    clean_map = maps[0]
    for e, cam in zip(eps, maps):
        rows += [
            _row(job, "cam_similarity", metrics.cam_similarity(clean_map, cam).nanmean(),
                 eps=e, **where),
            _row(job, "cam_background_share",
                 metrics.background_share(cam, images).nanmean(), eps=e, **where),
            _row(job, "cam_intensity", metrics.cam_intensity(cam.float()).mean(), eps=e, **where),
        ]
    rows.append(_row(job, "explain_images_per_s",
                     len(labels) * len(batches) / max(seconds, 1e-9), **where))

    from benchlab.grid import pick_distinct_digits

    picks = pick_distinct_digits(labels.cpu(), job.evaluate["count"]).to(ctx.device)
    grid_images = torch.stack([b[picks, 0] for b in batches]).cpu()
    grid_maps = torch.stack([m[picks] for m in maps]).cpu()
    preds, confs = zip(*(_predict(model, b[picks], len(picks)) for b in batches))
    ctx.store.artifacts_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"eps": torch.tensor(eps), "images": grid_images, "maps": grid_maps,
                "preds": torch.stack(preds).cpu(), "confidences": torch.stack(confs).cpu(),
                "labels": labels[picks].cpu()},
               ctx.store.artifact(job.id))
    return rows


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the global RNGs for one component call, leaving the caller's state untouched."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextmanager
def _blame(kind: str, key: str, component: Component) -> Iterator[None]:
    """Prefix any failure inside a component call with who is responsible."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit, _Attributed):
        raise
    except guards.ComponentError as exc:  # a broken contract, found by a guard
        raise _Attributed(f"{kind} '{key}' from {component.provenance}: {exc}") from exc
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        text = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
        raise _Attributed(f"{kind} '{key}' from {component.provenance}: {text}") from exc


class _Attributed(guards.ComponentError):
    """A component failure whose message already names the component."""


# --------------------------------------------------------------------------- the run


def environment(device: torch.device, suite: Suite, registry: Registry) -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {
        "benchlab": benchlab.__version__,
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": str(device),
        "cpu": cpu,
        "cpu_threads": torch.get_num_threads(),
        "gpu": gpu,
        "git_commit": _git_commit(),
        "seeds": [suite.train.seed + r for r in range(suite.train.runs)],
        "plugins": {name: f"{p.distribution} {p.version}" for name, p in registry.plugins.items()},
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    here = Path(benchlab.__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def run_suite(suite: Suite, registry: Registry, out_dir: Path, *, device: str = "auto",
              resume: bool = False, cache: ModelCache | None = None,
              log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> Outcome:
    """Run every job of ``suite`` not yet finished in ``out_dir``; return what happened."""
    dev = resolve_device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    store = RunStore(out_dir)
    atomic_write_text(out_dir / "suite.yaml", suite.to_yaml())
    env_path = out_dir / "environment.json"
    env = environment(dev, suite, registry)
    if resume and env_path.exists():
        previous = json.loads(env_path.read_text())
        env = {**previous, "resumed": [*previous.get("resumed", []), env["started"]]}
    atomic_write_text(env_path, json.dumps(env, indent=2))

    jobs = expand(suite)
    order = [job.id for job in jobs]
    done = store.finished_ok() if resume else set()
    if not resume:
        for job in jobs:
            store.forget(job.id)
    pending = [job for job in jobs if job.id not in done]
    outcome = Outcome(out_dir, skipped=[j.id for j in jobs if j.id in done])
    explain_sizes: dict[str, int] = {}
    for job in jobs:
        if job.kind == "explain" and job.attack is not None:
            attack_id = job.deps[-1]
            explain_sizes[attack_id] = max(explain_sizes.get(attack_id, 0),
                                           job.evaluate["explain_size"])
    ctx = _Context(registry, store, dev, cache or ModelCache(), data_root(), explain_sizes)
    for failure in registry.failures:
        log(f"warning: plugin {failure.plugin} ({failure.distribution}) was not loaded: "
            f"{failure.error}")

    units = sum(int(j.train["epochs"]) if j.kind == "train" else 1 for j in pending)
    bar = tqdm(total=units, unit="step", desc=suite.name, disable=None, file=sys.stderr,
               dynamic_ncols=True)

    def finish(job: Job, status: str, message: str, seconds: float,
               rows: list[dict[str, Any]]) -> None:
        store.save_job(JobRecord(job.id, job.kind, status, message, round(seconds, 3)), rows)
        if status == "ok":
            outcome.ran.append(job.id)
        else:
            outcome.failed[job.id] = message
            bar.write(f"FAILED {job.id}: {message}", file=sys.stderr)

    try:
        # Training first, grouped so that runs of one configuration train together.
        train_jobs = [j for j in pending if j.kind == "train"]
        groups: dict[tuple[Any, ...], list[Job]] = {}
        for job in train_jobs:
            groups.setdefault(job.pack_key(), []).append(job)
        for group in groups.values():
            size = max(1, training.pack_size(_train_config(group[0]), dev))
            for start in range(0, len(group), size):
                chunk = group[start:start + size]
                bar.set_postfix_str(f"training {chunk[0].model.key} "
                                    f"runs {chunk[0].run}-{chunk[-1].run}")
                started = time.perf_counter()
                produced: set[str] = set()
                try:
                    with _blame("model", chunk[0].model.key, ctx.model_component(chunk[0])):
                        for job, rows in _train_group(chunk, ctx, bar.update):
                            finish(job, "ok", "", time.perf_counter() - started, rows)
                            produced.add(job.id)
                            store.write_results(order)
                except guards.ComponentError as exc:
                    for job in chunk:
                        if job.id not in produced:
                            finish(job, "failed", str(exc), time.perf_counter() - started, [])
                    store.write_results(order)

        executors = {"attack": _run_attack, "explain": _run_explain}
        for job in pending:
            if job.kind == "train":
                continue
            failed_dep = next((d for d in job.deps if d in outcome.failed), None)
            if failed_dep is not None:
                finish(job, "failed", f"not run: {failed_dep} failed", 0.0, [])
                bar.update(1)
                continue
            bar.set_postfix_str(job.id)
            started = time.perf_counter()
            try:
                rows = executors[job.kind](job, ctx)
            except guards.ComponentError as exc:
                finish(job, "failed", str(exc), time.perf_counter() - started, [])
            else:
                finish(job, "ok", "", time.perf_counter() - started, rows)
            bar.update(1)
            store.write_results(order)
    finally:
        bar.close()
        store.write_results(order)
    return outcome
