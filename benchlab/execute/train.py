"""The train job: several seeds of one configuration -> per job its epoch rows, and the
trained weights with their epoch (and learning-curve) records."""

from __future__ import annotations

import functools
import inspect
import io
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict

import torch

from benchlab import training
from benchlab.execute.rows import train_rows
from benchlab.execute.workspace import JobResult, Workspace, blame
from benchlab.jobs import Job

OnEpoch = Callable[[str, dict[str, float]], None]
OnCheckpoint = Callable[[str, bytes], None]


def _curve_size(job: Job) -> int | None:
    """How many of the first test images a learning curve is evaluated on."""
    sizes = [s for s in (job.train.eval_size, job.dataset.test_size)
             if s is not None]
    return min(sizes) if sizes else None


def train_config(job: Job) -> training.TrainConfig:
    """The trainer's configuration of a train job (the suite's train keys it knows)."""
    known = training.TrainConfig.__dataclass_fields__
    return training.TrainConfig(**{k: v for k, v in asdict(job.train).items() if k in known})



def step_loss(job: Job, ws: Workspace) -> training.StepLoss | None:
    """The loss of one optimisation step of a train job: its procedure with its
    parameters, looked up by name (on a cluster worker too); None: the standard step."""
    if job.procedure is None:
        return None
    component = ws.registry.get("procedure", job.procedure.name)
    return bind_procedure(component, component.validate_params(job.procedure.params))


def bind_procedure(component, params) -> training.StepLoss:
    """A registered procedure with its validated parameters, as the trainer calls it:
    ``(model, images, labels, generator, progress) -> (loss, logits)``; ``progress``
    reaches only a procedure that takes a keyword of that name (a schedule's)."""
    takes_progress = "progress" in inspect.signature(component.obj).parameters
    return functools.partial(_call_procedure, component.obj, params, takes_progress)


def curve_eps(job: Job, ws: Workspace) -> float | None:
    """The L∞ radius a train job's learning curve is also attacked at: the ``eps`` of an
    adversarial procedure (one that crafts its inputs); None for the standard step."""
    if job.procedure is None or job.train.eval_every is None:
        return None
    component = ws.registry.get("procedure", job.procedure.name)
    eps = job.procedure.params.get("eps")
    if "perturb" not in component.extra or not isinstance(eps, int | float):
        return None
    return float(eps)


def _call_procedure(procedure, params, takes_progress, model, images, labels, generator,
                    progress=1.0):
    if takes_progress:
        return procedure(model, images, labels, generator, params, progress=progress)
    return procedure(model, images, labels, generator, params)


def encode_checkpoint(state: training.checkpoint.State) -> bytes:
    """A run's checkpoint as bytes, to travel to the run directory."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def decode_checkpoint(blob: bytes) -> training.checkpoint.State:
    """A checkpoint from :func:`encode_checkpoint` (tensors and plain data only)."""
    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)


def train_pack(jobs: Sequence[Job], ws: Workspace, on_epoch: OnEpoch | None = None, *,
               resume: Mapping[str, bytes] | None = None,
               on_checkpoint: OnCheckpoint | None = None,
               checkpoint_every: int | None = None) -> list[JobResult]:
    """Train the runs of ``jobs`` together: one dataset and training configuration,
    any models and seeds (:meth:`Job.pack_key`).

    A component failure raises :class:`guards.ComponentError` for the whole pack,
    naming the model of the run that failed; a run whose loss is not finite fails
    alone. ``on_epoch(job_id, record)`` is called after every epoch of every run.
    ``resume`` (job id -> checkpoint bytes) continues runs where a checkpoint left
    them; ``on_checkpoint(job_id, blob)`` receives a checkpoint of a run at the end of
    every epoch but the last, and every ``checkpoint_every`` steps when set.
    """
    first = jobs[0]
    started = time.perf_counter()
    # Building is the model's own code: blamed on it; so is a failure in a run.
    # One build per model configuration: the trainer batches the runs sharing a build.
    by_model: dict[str, Callable[[], torch.nn.Module]] = {}
    builds = [by_model.setdefault(json.dumps([job.model.name, job.model.params], sort_keys=True),
                                  functools.partial(ws.build, job)) for job in jobs]
    try:
        train = ws.split(first.dataset, "train")
        test = ws.split(first.dataset, "test")
        config = train_config(first)
        # the learning curve's evaluation set: the first eval_size test images
        curve = ws.split(first.dataset, "test", _curve_size(first)) \
            if config.eval_every else None
        tick = (lambda i, record: on_epoch(jobs[i].id, asdict(record))) if on_epoch else None
        starts = [decode_checkpoint(resume[job.id]) if resume and job.id in resume else None
                  for job in jobs]
        checkpoints = training.Checkpointing(
            save=(lambda i, state: on_checkpoint(jobs[i].id, encode_checkpoint(state)))
            if on_checkpoint else None, every=checkpoint_every, resume=starts)
        trained = training.train_runs(builds, train, test, config,
                                      [job.seed for job in jobs], device=ws.device,
                                      on_epoch=tick, curve_split=curve,
                                      threads=training.THREADS_PER_RUN if ws.device.type == "cpu"
                                      else None, checkpoints=checkpoints,
                                      procedure=step_loss(first, ws),
                                      curve_eps=curve_eps(first, ws))
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
        records = epochs + [{k: float(v) for k, v in asdict(s).items() if v is not None}
                            for s in run.steps]
        results.append(JobResult(job.id, train_rows(job, records),
                                 {"state_dict": run.state_dict, "epochs": records},
                                 seconds=seconds, where=ws.where()))
    return results


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")
