"""Executing jobs: a job and its inputs in, rows and products out.

One function per kind of job, the same wherever it runs (in the calling process or
on a cluster worker):

``train_pack``  several seeds of one configuration -> per job: epoch rows, and the
                trained weights with their epoch records
``attack``      one attack on one trained model -> rows, and the adversarial images
                the explain jobs will read
``explain``     one explainer on clean and attacked images -> rows, and the data of
                its grid figure

Nothing here writes to the run directory or the model cache: products come back
as values and the caller stores them. Inputs that come from other jobs (weights,
adversarial images) are passed in as values, so a worker needs no shared
filesystem; it needs only the components (its own plugin registry) and the
dataset, which it loads (and fetches, if missing) into its own data root.
"""

from __future__ import annotations

import functools
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchlab import attention, guards, metrics, threat, training
from benchlab.components import Component, DatasetSplit
from benchlab.jobs import Job
from benchlab.messages import describe
from benchlab.plugins import Registry

StateDict = dict[str, torch.Tensor]

OnEpoch = Callable[[str, dict[str, float]], None]

_EPOCH_METRICS = ("train_loss", "train_acc", "test_loss", "test_acc", "epoch_time_s",
                  "images_per_s")


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


class Workspace:
    """What executing a job needs from the process it runs in.

    The components (a plugin registry), the device, and the dataset splits, read
    once per process from ``root``.
    """

    def __init__(self, registry: Registry, device: torch.device, root: Path):
        self.registry, self.device, self.root = registry, torch.device(device), Path(root)
        self._splits: dict[tuple[str, str, int | None], DatasetSplit] = {}

    def split(self, dataset: dict[str, Any], which: str, size: int | None = None
              ) -> DatasetSplit:
        limit = size if size is not None else dataset.get(f"{which}_size")
        key = (dataset["name"], which, limit)
        if key not in self._splits:
            component = self.registry.get("dataset", dataset["name"])
            with blame("dataset", dataset["name"], component):
                full = component.obj.load(which, self.root)
            self._splits[key] = full.head(limit)
        return self._splits[key]

    def model_component(self, job: Job) -> Component:
        return self.registry.get("model", job.model.name)

    def build(self, job: Job) -> torch.nn.Module:
        component = self.model_component(job)
        params = component.params.model_validate(job.model.params)
        info = self.registry.get("dataset", job.dataset["name"]).obj.info
        return component.obj(info, params)

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
            info = self.registry.get("dataset", job.dataset["name"]).obj.info
            with torch.no_grad():
                guards.check_logits(model(probe), len(probe), info.num_classes)
        return model


def row(job: Job, metric: str, value: float, **where: Any) -> dict[str, Any]:
    """One measurement of ``job`` as a row of results.csv."""
    return {"job": job.id, "model": job.model.key, "dataset": job.dataset["name"],
            "run": job.run, "seed": job.seed, "epoch": where.get("epoch"),
            "step": where.get("step"), "attack": where.get("attack"), "eps": where.get("eps"),
            "explainer": where.get("explainer"), "metric": metric, "value": float(value)}


_CURVE_METRICS = {"test_acc": "step_test_acc", "test_loss": "step_test_loss",
                  "eval_time_s": "step_eval_time_s"}


def train_rows(job: Job, records: Sequence[dict[str, float]]) -> list[dict[str, Any]]:
    """The rows of a train job from its records: epoch records (as in the model
    cache), followed by learning-curve records (those with a ``step``)."""
    epochs, steps = split_records(records)
    rows = [row(job, m, record[m], epoch=int(record["epoch"]))
            for record in epochs for m in _EPOCH_METRICS]
    rows += [row(job, metric, record[field], epoch=record["epoch"], step=int(record["step"]))
             for record in steps for field, metric in _CURVE_METRICS.items()]
    return rows


def split_records(records: Sequence[dict[str, float]]
                  ) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """(epoch records, learning-curve records) of a train job's records."""
    return ([r for r in records if "step" not in r], [r for r in records if "step" in r])


def _curve_size(job: Job) -> int | None:
    """How many of the first test images a learning curve is evaluated on."""
    sizes = [s for s in (job.train.get("eval_size"), job.dataset.get("test_size"))
             if s is not None]
    return min(sizes) if sizes else None


def train_config(job: Job) -> training.TrainConfig:
    """The trainer's configuration of a train job (the suite's train keys it knows)."""
    known = training.TrainConfig.__dataclass_fields__
    return training.TrainConfig(**{k: v for k, v in job.train.items() if k in known})


# --------------------------------------------------------------------------- the three kinds


def train_pack(jobs: Sequence[Job], ws: Workspace, on_epoch: OnEpoch | None = None
               ) -> list[JobResult]:
    """Train the runs of ``jobs`` together: one dataset and training configuration,
    any models and seeds (:meth:`Job.pack_key`).

    A component failure raises :class:`guards.ComponentError` for the whole pack,
    naming the model of the run that failed; a run whose loss is not finite fails
    alone. ``on_epoch(job_id, record)`` is called after every epoch of every run.
    """
    first = jobs[0]
    started = time.perf_counter()
    # Building is the model's own code: blamed on it; so is a failure in a run.
    builds = [functools.partial(ws.build, job) for job in jobs]
    try:
        train = ws.split(first.dataset, "train")
        test = ws.split(first.dataset, "test")
        config = train_config(first)
        # the learning curve's evaluation set: the first eval_size test images
        curve = ws.split(first.dataset, "test", _curve_size(first)) \
            if config.eval_every else None
        tick = (lambda i, record: on_epoch(jobs[i].id, asdict(record))) if on_epoch else None
        trained = training.train_runs(builds, train, test, config,
                                      [job.seed for job in jobs], device=ws.device,
                                      on_epoch=tick, curve_split=curve,
                                      threads=training.THREADS_PER_RUN if ws.device.type == "cpu"
                                      else None)
    except Exception as exc:  # noqa: BLE001 - re-raised, attributed to the run's model
        culprit = jobs[getattr(exc, "benchlab_run", 0)]
        with blame("model", culprit.model.key, ws.model_component(culprit)):
            raise
    seconds = time.perf_counter() - started
    results = []
    for job, run in zip(jobs, trained):
        epochs = [{k: float(v) for k, v in asdict(record).items()} for record in run.epochs]
        final = epochs[-1]
        if not all(map(_finite, (final["train_loss"], final["test_loss"]))):
            message = f"model '{job.model.key}' diverged in training (loss is not finite)"
            results.append(JobResult(job.id, error=message, seconds=seconds, where=ws.where()))
            continue
        # the model cache keeps the learning curve after the epochs (records with a step)
        records = epochs + [{k: float(v) for k, v in asdict(s).items()} for s in run.steps]
        results.append(JobResult(job.id, train_rows(job, records),
                                 {"state_dict": run.state_dict, "epochs": records},
                                 seconds=seconds, where=ws.where()))
    return results


def attack(job: Job, ws: Workspace, state: StateDict, keep: int = 0) -> JobResult:
    """Attack the trained model ``state`` at every eps of ``job``.

    The product holds the first ``keep`` adversarial images per eps (what explain
    jobs read), or is None when ``keep`` is 0.
    """
    assert job.attack is not None
    started_job = time.perf_counter()
    component = ws.registry.get("attack", job.attack.name)
    params = component.params.model_validate(job.attack.params)
    split = ws.split(job.dataset, "test", job.evaluate["test_size"])
    images, labels = split.floats(ws.device), split.labels.to(ws.device)
    batch = job.evaluate["batch_size"]
    model = ws.trained_model(job, state, images[:batch])
    clean_pred, _ = _predict(model, images, batch)
    eps = list(job.eps)

    started = time.perf_counter()
    with blame("attack", job.attack.key, component), seeded(job.seed, ws.device):
        output = threat.attack(component, model, images, labels, eps, params)
    seconds = time.perf_counter() - started
    adversarial = output.adversarial

    # A targeted attack says which classes it aimed at, so success means reaching them.
    aimed_at = component.extra.get("targets")
    targets = aimed_at(model, images, labels, params) if aimed_at is not None else None
    # Each share comes with the number of images it is taken over (``<metric>.n``).
    eligible = metrics.attackable(clean_pred, labels, targets)
    rows = [row(job, "accuracy", metrics.accuracy(clean_pred, labels), attack=job.attack.key,
                eps=0.0),
            row(job, "accuracy.n", float(len(labels)), attack=job.attack.key, eps=0.0)]
    for i, e in enumerate(eps):
        adv_pred, _ = _predict(model, adversarial[i], batch)
        linf, l2 = metrics.perturbation_norms(images, adversarial[i])
        where = dict(attack=job.attack.key, eps=e)
        rows += [
            row(job, "accuracy", metrics.accuracy(adv_pred, labels), **where),
            row(job, "accuracy.n", float(len(labels)), **where),
            row(job, "success_rate",
                metrics.attack_success_rate(clean_pred, adv_pred, labels, targets), **where),
            row(job, "success_rate.n", float(eligible.sum()), **where),
            row(job, "linf", linf, **where),
            row(job, "l2", l2, **where),
        ]
    # A minimum-norm attack makes one batch, not one per eps.
    made = len(labels) * (1 if output.threat.minimum_norm else len(eps))
    rows += [
        row(job, "attack_time_s", seconds, attack=job.attack.key),
        row(job, "images_per_s", made / max(seconds, 1e-9), attack=job.attack.key),
        *threat_rows(job, output, clean_pred, labels, model, batch),
    ]
    product = None
    if keep:
        # clone: a slice would carry (and save) the whole underlying storage
        product = {"eps": torch.tensor(eps), "adversarial": adversarial[:, :keep].cpu().clone()}
    if output.norms is not None:
        product = {**(product or {}), "norms": output.norms.cpu()}
    return JobResult(job.id, rows, product, seconds=time.perf_counter() - started_job,
                     where=ws.where())


def threat_rows(job: Job, output: threat.AttackOutput, clean_pred: torch.Tensor,
                labels: torch.Tensor, model: torch.nn.Module, batch: int
                ) -> list[dict[str, Any]]:
    """What the attack bounds (``norm_p``: p of its norm, inf for L∞;
    ``minimum_norm``: 1 or 0) and, for a minimum-norm attack, the perturbations it
    found: ``found_rate`` (share of the correctly classified images it got past,
    with ``attacked`` of them) and ``median_norm`` of those successful
    perturbations (NaN when there are none)."""
    assert job.attack is not None
    where = dict(attack=job.attack.key)
    p = {"linf": float("inf"), "l2": 2.0, "l1": 1.0, "l0": 0.0}[output.threat.norm]
    rows = [row(job, "norm_p", p, **where),
            row(job, "minimum_norm", float(output.threat.minimum_norm), **where)]
    if output.norms is None:
        return rows
    # The widest batch holds every adversarial the attack found within the suite's
    # largest eps; the norms say which of all found ones succeeded.
    found, _ = _predict(model, output.found, batch)
    correct = clean_pred == labels
    success = correct & (found != labels)
    norms = output.norms[success]
    median = norms.median().item() if norms.numel() else float("nan")
    rows += [row(job, "attacked", float(correct.sum()), **where),
             row(job, "found_rate", float(success.sum()) / max(int(correct.sum()), 1)
                 if int(correct.sum()) else float("nan"), **where),
             row(job, "median_norm", median, **where)]
    return rows


def explain(job: Job, ws: Workspace, state: StateDict,
            adversarial: dict[str, torch.Tensor] | None = None) -> JobResult:
    """Explain clean images and, for a job with an attack, the attack's ``adversarial``."""
    assert job.explainer is not None
    started_job = time.perf_counter()
    component = ws.registry.get("explainer", job.explainer.name)
    params = component.params.model_validate(job.explainer.params)
    size = job.evaluate["explain_size"]
    split = ws.split(job.dataset, "test", size)
    images, labels = split.floats(ws.device), split.labels.to(ws.device)
    model = ws.trained_model(job, state, images[: job.evaluate["batch_size"]])
    eps: list[float] = [0.0]
    batches = [images]
    if job.attack is not None:
        if adversarial is None:
            raise guards.ComponentError(f"explain job {job.id}: no adversarial images given")
        # The job's own values: the product's float32 copy would write 0.10000000149
        # where the attack's rows say 0.1.
        if len(adversarial["eps"]) != len(job.eps):
            raise guards.ComponentError(f"explain job {job.id}: {len(adversarial['eps'])} "
                                        f"adversarial batches for {len(job.eps)} eps values")
        eps += [float(e) for e in job.eps]
        batches += list(adversarial["adversarial"][:, : len(labels)].to(ws.device))

    batch_size = job.evaluate["batch_size"]

    def run(net: torch.nn.Module, batch: torch.Tensor, p: Any = params) -> torch.Tensor:
        return component.obj(net, batch, p)

    where = dict(attack=job.attack.key if job.attack else None, explainer=job.explainer.key)
    offered = component.extra.get("layer_choices")
    used_of = component.extra.get("explained_layer")
    at_layers: dict[str, list[torch.Tensor]] = {}
    # Only the explainer's own calls are blamed on it; a failure in the metrics
    # below is benchlab's own (an internal error).
    with blame("explainer", job.explainer.key, component), seeded(job.seed, ws.device):
        explained = attention.explain_all(model, run, batches, eps, batch_size,
                                          check=guards.check_explanation)
        randomised = attention.randomised_maps_of(model, run, images, job.seed)
        guards.check_explanation(images, randomised)
        used = None
        if offered is not None and used_of is not None and "layer" in type(params).model_fields:
            used = used_of(model, params)
            for layer in offered(model, images[:2]):
                at = params.model_copy(update={"layer": layer})
                at_layers[layer] = [run(model, batch, at) for batch in batches]
    measured = attention.measure(model, images, batches, explained,
                                 klass=getattr(params, "klass", None), seed=job.seed,
                                 batch_size=batch_size, randomised_maps=randomised)
    if used is not None:
        measured += attention.layer_rows(list(at_layers), used, at_layers.__getitem__, eps)
    maps = explained.maps
    rows = [row(job, m.metric, m.value, eps=m.eps, **where) for m in measured]
    rows.append(row(job, "explain_images_per_s",
                    len(labels) * len(batches) / max(explained.seconds, 1e-9), **where))

    from benchlab.report.grid import pick_distinct_digits

    picks = pick_distinct_digits(labels.cpu(), job.evaluate["count"]).to(ws.device)
    grid_images = torch.stack([b[picks, 0] for b in batches]).cpu()
    grid_maps = torch.stack([m[picks] for m in maps]).cpu()
    preds, confs = zip(*(_predict(model, b[picks], len(picks)) for b in batches))
    grid = {"eps": torch.tensor(eps), "images": grid_images, "maps": grid_maps,
            "preds": torch.stack(preds).cpu(), "confidences": torch.stack(confs).cpu(),
            "labels": labels[picks].cpu()}
    return JobResult(job.id, rows, grid, seconds=time.perf_counter() - started_job,
                     where=ws.where())


# --------------------------------------------------------------------------- helpers


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
