"""Training the runs of one configuration: alone, or side by side in packs of threads."""

from __future__ import annotations

import contextlib
import functools
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

import torch
from torch import nn

from benchlab.components import DatasetSplit
from benchlab.training.batched import batchable, train_batched
from benchlab.training.checkpoint import Checkpointing, State
from benchlab.training.config import (
    EpochRecord,
    OnEpoch,
    RunResult,
    TrainConfig,
    batched_by_default,
    pack_size,
)
from benchlab.training.randomness import draws_from_global_rng
from benchlab.training.run import Data, StepLoss, ignore, prepare, to_float, train_run


def train_runs(build: Callable[[], nn.Module] | Sequence[Callable[[], nn.Module]],
               train: DatasetSplit, test: DatasetSplit,
               config: TrainConfig, seeds: Sequence[int],
               device: torch.device | str = "cpu", on_epoch: OnEpoch | None = None,
               *, pack: int | None = None,
               curve_split: DatasetSplit | None = None,
               threads: int | None = None,
               checkpoints: Checkpointing | None = None,
               procedure: StepLoss | None = None,
               curve_eps: float | None = None,
               batched: bool | None = None) -> list[RunResult]:
    """Train one run per seed of the model ``build()`` returns; results in seed order.

    ``build`` is called once per run under that run's seed and must return a module
    mapping images in [0, 1] of shape (N, C, H, W) to logits. A sequence of builds,
    one per seed, trains different models with one configuration (runs of different
    models can then share a pack). An exception raised by a run carries the index
    of that run in ``benchlab_run`` (where the exception accepts attributes), so a
    caller that mixed models knows which one failed. ``on_epoch(i, record)``
    is called in the calling thread after every epoch of run ``seeds[i]``. ``pack``
    overrides :func:`pack_size` (1 trains the runs one at a time). With
    ``config.eval_every`` set, every run is also evaluated on ``curve_split``
    (default: ``test``) every ``eval_every`` steps (:attr:`RunResult.steps`).

    The same seeds give the same results on the same machine. A run trained in a
    pack computes with one intra-op thread instead of all of them, which changes
    results by floating-point rounding only. ``threads`` (CPU) fixes every run's
    intra-op threads, alone or in a pack, so that its result does not depend on
    how it was packed: with ``threads=1`` a run alone, a run in a pack and a run in
    a single-threaded worker process give identical results.

    ``checkpoints`` hands out a checkpoint of each run as it trains and continues
    runs from given ones (:class:`~benchlab.training.checkpoint.Checkpointing`): a
    run continued from a checkpoint ends exactly as the uninterrupted run.

    ``procedure(model, images, labels, generator, progress) -> (loss, logits)``
    computes the loss of every step of every run (None: the plain cross-entropy
    step); each run calls it with its own generator and the fraction of its steps
    done, so it must keep no state between calls.
    ``curve_eps``: with learning curves, also evaluate each point under a short PGD of
    that L∞ radius (for adversarial training: it shows catastrophic overfitting).

    ``batched`` trains the runs of each model (the runs sharing one ``build``) as one
    vmapped batch (:mod:`benchlab.training.batched`); None: on a CUDA device
    (:func:`~benchlab.training.config.batched_by_default`), never on a CPU, where the
    packs of threads are faster. Runs it cannot batch are trained one at a time: with
    a procedure, continued from a checkpoint, or of a model :func:`batchable` refuses.
    """
    device = torch.device(device)
    seeds = [int(s) for s in seeds]
    builds = [build] * len(seeds) if callable(build) else list(build)
    if len(builds) != len(seeds):
        raise ValueError(f"got {len(builds)} builds for {len(seeds)} seeds; expected one "
                         "build, or one per seed")
    if len(train) == 0 or len(test) == 0:
        raise ValueError("train and test splits must not be empty")
    if not seeds:
        return []
    pack = pack_size(config, device) if pack is None else pack
    if pack < 1:
        raise ValueError(f"pack must be >= 1, got {pack}")
    if curve_split is not None and len(curve_split) == 0:
        raise ValueError("curve_split must not be empty")
    data = Data(train, test, device, curve_split)
    if batched is None:
        batched = batched_by_default(device, procedure is None)
    if batched and procedure is None and not any(
            checkpoints is not None and checkpoints.start(i) is not None
            for i in range(len(seeds))):
        return _train_batched(builds, seeds, data, config, device, on_epoch, checkpoints)

    if pack > 1:
        distinct = {id(b): i for i, b in enumerate(builds)}.values()
        for i in distinct:
            with _naming_run(i):
                if draws_from_global_rng(prepare(builds[i], seeds[i], device),
                                         to_float(data.images[:2])):
                    pack = 1  # its randomness could only be reproduced one run at a time
                    break

    results: list[RunResult | None] = [None] * len(seeds)
    for first in range(0, len(seeds), pack):
        indices = range(first, min(first + pack, len(seeds)))
        # Built here, one after the other: seeding the global generator is not thread-safe.
        models = {}
        for i in indices:
            with _naming_run(i):
                models[i] = prepare(builds[i], seeds[i], device)
        if len(indices) == 1:
            i = indices[0]
            emit = functools.partial(on_epoch or ignore, i)
            # a run trained alone on fewer threads than the process has: the others
            # evaluate it (the same results as one thread would give)
            spare = torch.get_num_threads() // threads \
                if threads and device.type == "cpu" else 1
            with _naming_run(i), _intra_op_threads(threads if device.type == "cpu" else None):
                results[i] = train_run(models[i], seeds[i], data, config, device, emit,
                                       pack=1, procedure=procedure, curve_eps=curve_eps,
                                       eval_workers=max(1, spare),
                                       **_resuming(checkpoints, i))
        else:
            for i, result in _train_concurrently(models, seeds, data, config, device,
                                                 on_epoch, threads, checkpoints,
                                                 procedure, curve_eps).items():
                results[i] = result
    return [r for r in results if r is not None]


def _train_batched(builds: Sequence[Callable[[], nn.Module]], seeds: Sequence[int],
                   data: Data, config: TrainConfig, device: torch.device,
                   on_epoch: OnEpoch | None, checkpoints: Checkpointing | None
                   ) -> list[RunResult]:
    """The runs of each build trained as one vmapped batch, or one at a time (with their
    checkpoints) where the model cannot be batched; results in seed order."""
    groups: dict[int, list[int]] = {}
    for i, build in enumerate(builds):
        groups.setdefault(id(build), []).append(i)
    results: list[RunResult | None] = [None] * len(seeds)
    probe = to_float(data.images[:config.batch_size])
    for indices in groups.values():
        models = []
        for i in indices:  # one after the other: seeding the global generator
            with _naming_run(i):
                models.append(prepare(builds[i], seeds[i], device))
        with _naming_run(indices[0]):
            alone = draws_from_global_rng(models[0], probe[:2]) or \
                batchable(models[0], probe) is not None
        if alone:
            for i, model in zip(indices, models):
                with _naming_run(i):
                    results[i] = train_run(model, seeds[i], data, config, device,
                                           functools.partial(on_epoch or ignore, i), pack=1,
                                           **_resuming(checkpoints, i))
            continue
        with _naming_run(indices[0]):
            emit = functools.partial(_emit_run, on_epoch or ignore, indices)
            trained = train_batched(models, [seeds[i] for i in indices], data, config, device,
                                    emit)
        for i, result in zip(indices, trained):
            results[i] = result
    return [r for r in results if r is not None]


def _emit_run(on_epoch: OnEpoch, indices: Sequence[int], r: int, record: EpochRecord) -> None:
    on_epoch(indices[r], record)


def _train_concurrently(models: dict[int, nn.Module], seeds: Sequence[int], data: Data,
                        config: TrainConfig, device: torch.device, on_epoch: OnEpoch | None,
                        threads: int | None = None,
                        checkpoints: Checkpointing | None = None,
                        procedure: StepLoss | None = None,
                        curve_eps: float | None = None) -> dict[int, RunResult]:
    """Train ``models`` (run index -> model) at the same time, one thread and core each.

    Worker threads hand their epoch records and checkpoints to this thread, which
    calls ``on_epoch`` and ``checkpoints.save`` in the order they were made; if
    anything fails, the other runs stop at their next step.
    """
    total_threads = torch.get_num_threads()
    intra = threads or max(1, total_threads // len(models))
    made: queue.SimpleQueue[tuple[int, EpochRecord | State]] = queue.SimpleQueue()
    cancel = threading.Event()

    def job(i: int) -> RunResult:
        torch.set_num_threads(intra)  # sets this thread's OpenMP team size too
        with _naming_run(i):
            resuming = _resuming(checkpoints, i)
            if "save" in resuming:
                resuming["save"] = lambda state: made.put((i, state))
            return train_run(models[i], seeds[i], data, config, device,
                             lambda record: made.put((i, record)), pack=len(models),
                             cancel=cancel, procedure=procedure, curve_eps=curve_eps,
                             **resuming)

    def deliver() -> None:
        while not made.empty():
            i, item = made.get()
            if isinstance(item, EpochRecord):
                if on_epoch is not None:
                    on_epoch(i, item)
            elif checkpoints is not None and checkpoints.save is not None:
                checkpoints.save(i, item)

    torch.set_num_threads(intra)
    try:
        with ThreadPoolExecutor(len(models), thread_name_prefix="benchlab-run") as pool:
            futures = {i: pool.submit(job, i) for i in models}
            try:
                pending = set(futures.values())
                while pending:
                    done, pending = wait(pending, timeout=0.05, return_when=FIRST_EXCEPTION)
                    deliver()
                    for future in done:
                        future.result()  # re-raises a run's failure here
                return {i: future.result() for i, future in futures.items()}
            except BaseException:
                cancel.set()
                raise
    finally:
        torch.set_num_threads(total_threads)


def _resuming(checkpoints: Checkpointing | None, i: int) -> dict[str, Any]:
    """The checkpoint arguments of :func:`train_run` for run ``i``."""
    if checkpoints is None:
        return {}
    arguments: dict[str, Any] = {"resume": checkpoints.start(i), "every": checkpoints.every}
    if checkpoints.save is not None:
        arguments["save"] = functools.partial(checkpoints.save, i)
    return arguments


@contextlib.contextmanager
def _naming_run(index: int) -> Iterator[None]:
    """Mark an exception escaping from here with the index of the run that raised it."""
    try:
        yield
    except BaseException as exc:
        if not hasattr(exc, "benchlab_run"):
            with contextlib.suppress(AttributeError, TypeError):
                exc.benchlab_run = index  # type: ignore[attr-defined]
        raise


@contextlib.contextmanager
def _intra_op_threads(threads: int | None) -> Iterator[None]:
    """Compute with ``threads`` intra-op threads inside (None: leave them as they are)."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


