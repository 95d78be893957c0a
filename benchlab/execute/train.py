"""The train job: several seeds of one configuration -> per job its epoch rows, and the
trained weights with their epoch (and learning-curve) records."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict

from benchlab import training
from benchlab.execute.rows import train_rows
from benchlab.execute.workspace import JobResult, Workspace, blame
from benchlab.jobs import Job

OnEpoch = Callable[[str, dict[str, float]], None]


def _curve_size(job: Job) -> int | None:
    """How many of the first test images a learning curve is evaluated on."""
    sizes = [s for s in (job.train.eval_size, job.dataset.test_size)
             if s is not None]
    return min(sizes) if sizes else None


def train_config(job: Job) -> training.TrainConfig:
    """The trainer's configuration of a train job (the suite's train keys it knows)."""
    known = training.TrainConfig.__dataclass_fields__
    return training.TrainConfig(**{k: v for k, v in asdict(job.train).items() if k in known})



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


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")
