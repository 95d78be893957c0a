"""Train many seeded runs of one model, fast, on data held in memory.

A benchmark trains the same configuration under many seeds, so the unit of work
here is a list of runs, not one model. What makes it fast on a CPU:

* the data is a pair of in-memory tensors: each step gathers a batch of uint8
  images and converts it to floats, with no DataLoader, per-sample transforms or
  worker processes;
* convolutional models run in channels-last memory format (oneDNN's fast path);
* losses and hits are accumulated on tensors and read once per epoch, so the hot
  loop never waits on ``.item()``; the optimiser step is one fused kernel;
* dropout masks come from 64-bit random draws split into four 16-bit lanes:
  ``bernoulli_`` draws one random number per element, about 7 ms per step for
  the first dropout of ``cnn_bn`` (10% of a step), the lanes about 1 ms;
* runs are trained *together* where that pays (see :func:`pack_size`): on a CPU,
  a pack of R runs trains concurrently, one run per core with one intra-op thread
  each. Most operations of a small model are too small to split well between
  cores, so on an idle 2-core machine two runs side by side train 1.1-1.2x faster
  than the same runs one after the other on both cores; on a busy machine, where
  a multi-threaded operation waits for its slowest thread, far more.

Batching several runs into one set of kernels was measured too and rejected on
CPU: ``torch.func.vmap`` over stacked parameters (``stack_module_state``) turns
each convolution into a grouped convolution, and oneDNN's grouped convolutions
are slower than the same convolutions one run at a time; two cnn_bn runs packed
that way train at 0.65x the rate of one channels-last run at a time
(``benchmarks/bench_training.py --alternatives``).

Every run owns its randomness: its model is initialised under its seed, and a
``torch.Generator`` seeded from it draws the data order (a new permutation per
epoch) and every dropout mask. ``nn.Dropout`` layers of the built model are
replaced by an equivalent layer that draws from that generator, so a run's
result does not depend on whether it was trained alone or in a pack, beyond the
rounding of kernels that split their work over a different number of threads. A model
that still draws from the global random number generator (a layer other than
``nn.Dropout``) is detected and trained one run at a time, with the global
generator seeded from the run's seed.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from benchlab.components import DatasetSplit

__all__ = ["EpochRecord", "RunResult", "StepRecord", "TrainConfig", "evaluate", "pack_size",
           "train_runs"]


# Every training run on a CPU computes with one intra-op thread, alone, in a pack or on
# a one-thread cluster worker: thread counts change float rounding, and the difference
# compounds over epochs (seed 1 of cnn on 10,000 MNIST images, 1 epoch: test loss
# 0.290907 with 2 threads, 0.288377 with 1 thread alone and in a pack of 2, measured).
THREADS_PER_RUN = 1


@dataclass(frozen=True)
class TrainConfig:
    """How every run of a configuration is trained (the original experiment's defaults).

    ``momentum`` applies to SGD only; Adam uses its default betas. ``precision="bf16"``
    runs forward and backward under bfloat16 autocast with float32 master weights.
    ``eval_every`` (optimisation steps; None: off) evaluates each run on a fixed
    evaluation set at step 0 and after every ``eval_every`` steps, for learning
    curves at step resolution (:class:`StepRecord`). It never changes the weights.
    """

    epochs: int = 14
    batch_size: int = 64
    lr: float = 0.01
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = 0.9
    test_batch_size: int = 1000
    precision: Literal["fp32", "bf16"] = "fp32"
    eval_every: int | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1 or self.test_batch_size < 1:
            raise ValueError("batch sizes must be >= 1")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.eval_every is not None and self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1 (or None), got {self.eval_every}")


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of one run.

    ``train_loss`` and ``train_acc`` are measured on the training batches as they
    are trained on (train mode, dropout active), averaged over samples; the test
    metrics come from :func:`evaluate` after the epoch, in float32.

    ``epoch_time_s`` is the wall time of the epoch's training steps. A run trained
    in a pack of R runs shares the machine with the other R - 1 during that time, so
    ``images_per_s`` is the pack's throughput, ``R * len(train) / epoch_time_s``:
    the rate at which the machine trained runs of this configuration. Dividing the
    pack's time by R instead would credit each run with work it did not do alone.
    """

    epoch: int
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    epoch_time_s: float
    images_per_s: float


@dataclass(frozen=True)
class StepRecord:
    """One point of a run's learning curve at step resolution.

    ``step`` optimisation steps have been taken (0: the freshly initialised model);
    ``epoch`` is the same position in epochs (``step / steps_per_epoch``). The test
    metrics come from :func:`evaluate` on the evaluation set, in the training
    precision: under bfloat16 autocast when training in bf16, which halves the cost
    of the curve on a CPU (the per-epoch evaluation stays in float32).
    ``eval_time_s`` is the wall time of that evaluation, which is not counted in
    the epoch's ``epoch_time_s``.
    """

    step: int
    epoch: float
    test_loss: float
    test_acc: float
    eval_time_s: float


@dataclass
class RunResult:
    """A trained run: its seed, one record per epoch, its final weights (on CPU) and,
    when ``eval_every`` is set, its learning curve at step resolution."""

    seed: int
    epochs: list[EpochRecord]
    state_dict: dict[str, torch.Tensor]
    steps: list[StepRecord] = field(default_factory=list)


OnEpoch = Callable[[int, EpochRecord], None]


def pack_size(config: TrainConfig, device: torch.device | str) -> int:
    """How many runs :func:`train_runs` trains together on ``device``.

    On a CPU: one run per intra-op thread, so that each core trains one run. This
    was measured with ``benchmarks/bench_training.py --packs 1 2 3 4`` on 2 cores:
    packs of 2 were fastest for cnn_bn in float32 and bfloat16 (1.1-1.2x the rate
    of one run at a time on both cores); packs of 3 or 4 gained nothing more. On
    other devices runs are trained one at a time. A caller that trains runs in
    groups (a runner caching each run) should hand :func:`train_runs` this many.
    """
    del config  # the measured gain held for every configuration tried
    if torch.device(device).type != "cpu":
        return 1
    return max(1, torch.get_num_threads())


def train_runs(build: Callable[[], nn.Module] | Sequence[Callable[[], nn.Module]],
               train: DatasetSplit, test: DatasetSplit,
               config: TrainConfig, seeds: Sequence[int],
               device: torch.device | str = "cpu", on_epoch: OnEpoch | None = None,
               *, pack: int | None = None,
               curve_split: DatasetSplit | None = None,
               threads: int | None = None) -> list[RunResult]:
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
    data = _Data(train, test, device, curve_split)

    if pack > 1:
        distinct = {id(b): i for i, b in enumerate(builds)}.values()
        for i in distinct:
            with _naming_run(i):
                if _draws_from_global_rng(_prepare(builds[i], seeds[i], device), data):
                    pack = 1  # its randomness could only be reproduced one run at a time
                    break

    results: list[RunResult | None] = [None] * len(seeds)
    for first in range(0, len(seeds), pack):
        indices = range(first, min(first + pack, len(seeds)))
        # Built here, one after the other: seeding the global generator is not thread-safe.
        models = {}
        for i in indices:
            with _naming_run(i):
                models[i] = _prepare(builds[i], seeds[i], device)
        if len(indices) == 1:
            i = indices[0]
            emit = functools.partial(on_epoch or _ignore, i)
            with _naming_run(i), _intra_op_threads(threads if device.type == "cpu" else None):
                results[i] = _train_run(models[i], seeds[i], data, config, device, emit,
                                        pack=1)
        else:
            for i, result in _train_concurrently(models, seeds, data, config, device,
                                                 on_epoch, threads).items():
                results[i] = result
    return [r for r in results if r is not None]


@torch.inference_mode()
def evaluate(model: nn.Module, split: DatasetSplit, batch_size: int = 1000,
             device: torch.device | str = "cpu") -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``split``, in eval mode and float32.

    The model's train/eval mode is restored afterwards.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    try:
        for begin in range(0, len(split), batch_size):
            images = _to_float(split.images[begin:begin + batch_size].to(device))
            labels = split.labels[begin:begin + batch_size].to(device)
            logits = model(images).float()
            loss_sum += F.cross_entropy(logits, labels, reduction="sum")
            correct += (logits.argmax(dim=1) == labels).sum()
    finally:
        model.train(was_training)
    return loss_sum.item() / len(split), correct.item() / len(split)


# -- one run ------------------------------------------------------------------------

class _Data:
    """Both splits on the training device, shared read-only by every run."""

    def __init__(self, train: DatasetSplit, test: DatasetSplit, device: torch.device,
                 curve: DatasetSplit | None = None) -> None:
        self.images = train.images.to(device)
        self.labels = train.labels.to(device)
        self.test = DatasetSplit(test.images.to(device), test.labels.to(device))
        self.curve = self.test if curve is None else DatasetSplit(curve.images.to(device),
                                                                  curve.labels.to(device))

    def __len__(self) -> int:
        return self.labels.shape[0]


class _Cancelled(Exception):
    """Raised inside a run when the pack it belongs to is abandoned."""


def _ignore(*_: object) -> None:
    return None


def _train_run(model: nn.Module, seed: int, data: _Data, config: TrainConfig,
               device: torch.device, emit: Callable[[EpochRecord], None], pack: int,
               cancel: threading.Event | None = None) -> RunResult:
    """Train one freshly built run for all epochs, with its own generator."""
    generator = torch.Generator().manual_seed(seed)
    # Masks are drawn on the training device; there, a generator of that device.
    mask_generator = generator if device.type == "cpu" else torch.Generator(device).manual_seed(
        int(torch.randint(2**62, (1,), generator=generator)))
    _seed_dropouts(model, mask_generator)
    optimizer = _optimizer(model, config, device)
    step = _Step(model, optimizer, config, device, _wants_channels_last(model, device))
    curve = _Curve(model, data, config, device) if config.eval_every else None
    records: list[EpochRecord] = []
    # Seeding the global generator too makes a model that draws from it (trained
    # only ever alone, see train_runs) reproducible; seeded dropouts never touch it.
    with _global_rng_seeded(seed, device, enabled=pack == 1):
        if curve is not None:
            curve.evaluate()  # step 0: where every curve starts
        for epoch in range(1, config.epochs + 1):
            train_loss, train_acc, seconds = _train_epoch(step, data, config, generator, cancel,
                                                          curve)
            test_loss, test_acc = evaluate(model, data.test, config.test_batch_size, device)
            record = EpochRecord(epoch, train_loss, train_acc, test_loss, test_acc,
                                 seconds, pack * len(data) / seconds)
            records.append(record)
            emit(record)
    state = {name: t.detach().to("cpu").clone(memory_format=torch.contiguous_format)
             for name, t in model.state_dict().items()}
    return RunResult(seed=seed, epochs=records, state_dict=state,
                     steps=curve.records if curve is not None else [])


def _prepare(build: Callable[[], nn.Module], seed: int, device: torch.device) -> nn.Module:
    """``build()`` with parameters initialised under ``seed``, on ``device``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
    model = model.to(device)
    if _wants_channels_last(model, device):
        model = model.to(memory_format=torch.channels_last)
    return model.train()


def _wants_channels_last(model: nn.Module, device: torch.device) -> bool:
    """oneDNN's convolutions are fastest on channels-last tensors; other layers do not care."""
    return device.type == "cpu" and any(isinstance(m, nn.Conv2d) for m in model.modules())


def _optimizer(model: nn.Module, config: TrainConfig, device: torch.device
               ) -> torch.optim.Optimizer:
    # Fused kernels update every parameter in one call instead of a dozen ops each.
    fused = device.type in ("cpu", "cuda")
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, fused=fused)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, fused=fused)


class _Step:
    """One optimisation step on a batch; returns the (unsynchronised) loss and logits."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 config: TrainConfig, device: torch.device, channels_last: bool) -> None:
        self.model = model
        self.optimizer = optimizer
        self.device = device
        self.autocast = dict(device_type=device.type, dtype=torch.bfloat16,
                             enabled=config.precision == "bf16")
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, images: torch.Tensor, labels: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        images = _to_float(images).contiguous(memory_format=self.memory_format)
        with torch.autocast(**self.autocast):
            logits = self.model(images)
            loss = F.cross_entropy(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach(), logits.detach()


class _Curve:
    """A run's learning curve: evaluates the model on the evaluation set every
    ``config.eval_every`` optimisation steps, counted across epochs."""

    def __init__(self, model: nn.Module, data: _Data, config: TrainConfig,
                 device: torch.device) -> None:
        assert config.eval_every is not None
        self.model, self.split, self.device = model, data.curve, device
        self.every, self.batch_size = config.eval_every, config.test_batch_size
        self.autocast = dict(device_type=device.type, dtype=torch.bfloat16,
                             enabled=config.precision == "bf16")
        self.steps_per_epoch = math.ceil(len(data) / config.batch_size)
        self.step = 0
        self.seconds = 0.0  # spent evaluating, so far
        self.records: list[StepRecord] = []

    def evaluate(self) -> None:
        start = time.perf_counter()
        with torch.autocast(**self.autocast):
            loss, accuracy = evaluate(self.model, self.split, self.batch_size, self.device)
        seconds = time.perf_counter() - start
        self.seconds += seconds
        self.records.append(StepRecord(self.step, self.step / self.steps_per_epoch, loss,
                                       accuracy, seconds))

    def stepped(self) -> None:
        self.step += 1
        if self.step % self.every == 0:
            self.evaluate()


def _train_epoch(step: _Step, data: _Data, config: TrainConfig, generator: torch.Generator,
                 cancel: threading.Event | None, curve: _Curve | None = None
                 ) -> tuple[float, float, float]:
    """One pass over the training data in a fresh order: (loss, accuracy, seconds).

    The seconds are those of the training steps; evaluations of ``curve`` are not
    counted in them.
    """
    step.model.train()
    n = len(data)
    order = torch.randperm(n, generator=generator).to(step.device)
    loss_sum = torch.zeros((), device=step.device)
    correct = torch.zeros((), dtype=torch.int64, device=step.device)
    evaluating = curve.seconds if curve is not None else 0.0
    start = time.perf_counter()
    for begin in range(0, n, config.batch_size):
        if cancel is not None and cancel.is_set():
            raise _Cancelled
        batch = order[begin:begin + config.batch_size]
        labels = data.labels.index_select(0, batch)
        loss, logits = step(data.images.index_select(0, batch), labels)
        loss_sum.add_(loss, alpha=batch.shape[0])
        correct.add_((logits.argmax(dim=1) == labels).sum())
        if curve is not None:
            curve.stepped()
    train_loss, train_acc = loss_sum.item() / n, correct.item() / n  # the epoch's one sync
    seconds = time.perf_counter() - start
    if curve is not None:
        seconds -= curve.seconds - evaluating
    return train_loss, train_acc, seconds


def _to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images to float32 in [0, 1], exactly as :meth:`DatasetSplit.floats`."""
    return images.float().div_(255.0)


# -- packs of runs ------------------------------------------------------------------

def _train_concurrently(models: dict[int, nn.Module], seeds: Sequence[int], data: _Data,
                        config: TrainConfig, device: torch.device, on_epoch: OnEpoch | None,
                        threads: int | None = None) -> dict[int, RunResult]:
    """Train ``models`` (run index -> model) at the same time, one thread and core each.

    Worker threads hand their epoch records to this thread, which calls
    ``on_epoch``; if anything fails, the other runs stop at their next step.
    """
    total_threads = torch.get_num_threads()
    intra = threads or max(1, total_threads // len(models))
    records: queue.SimpleQueue[tuple[int, EpochRecord]] = queue.SimpleQueue()
    cancel = threading.Event()

    def job(i: int) -> RunResult:
        torch.set_num_threads(intra)  # sets this thread's OpenMP team size too
        with _naming_run(i):
            return _train_run(models[i], seeds[i], data, config, device,
                              lambda record: records.put((i, record)), pack=len(models),
                              cancel=cancel)

    def deliver() -> None:
        while not records.empty():
            i, record = records.get()
            if on_epoch is not None:
                on_epoch(i, record)

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


# -- randomness -----------------------------------------------------------------------

class _SeededDropout(nn.Module):
    """``nn.Dropout`` whose masks come from a given generator instead of the global one.

    In training mode it zeroes each element with probability ``p`` and scales the
    rest by ``1 / (1 - p)``, as ``nn.Dropout`` does. ``p`` is applied to 1/65536
    resolution (exact for 0.25 and 0.5).
    """

    def __init__(self, p: float, generator: torch.Generator) -> None:
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.p == 1:
            return x * 0.0
        return x * _dropout_mask(x.shape, self.p, self.generator, x.device).to(x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _dropout_mask(shape: Sequence[int], p: float, generator: torch.Generator,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """A float32 dropout mask: 0 with probability ~``p``, else ``1 / (1 - p)``.

    Draws 64 random bits per four elements and compares 16-bit lanes with a
    threshold: on a CPU several times faster than ``bernoulli_``, which draws one
    random number per element. ``p`` is rounded to a multiple of 1/65536 and the
    scale follows the rounded value, so the mask has mean 1 exactly in expectation.
    """
    count = math.prod(shape)
    dropped = round(p * 65536)
    if not 0 < dropped < 65536:
        raise ValueError(f"p must be in (0, 1) at 1/65536 resolution, got {p}")
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=device)
    words.random_(-2**63, None, generator=generator)  # all 64 bits uniform
    lanes = words.view(torch.int16)[:count].view(tuple(shape))
    return lanes.float().ge_(dropped - 32768).mul_(65536 / (65536 - dropped))


def _seed_dropouts(model: nn.Module, generator: torch.Generator) -> int:
    """Replace every ``nn.Dropout`` in ``model`` by a :class:`_SeededDropout`; how many."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, _SeededDropout(child.p, generator))
                replaced += 1
    return replaced


def _draws_from_global_rng(model: nn.Module, data: _Data) -> bool:
    """Whether a training-mode forward pass of ``model`` uses the global generator."""
    probe = copy.deepcopy(model)
    _seed_dropouts(probe, torch.Generator(device=data.images.device))
    with torch.random.fork_rng(devices=_rng_devices(data.images.device)):
        before = _global_rng_state(data.images.device)
        with torch.no_grad():
            probe(_to_float(data.images[:2]))
        after = _global_rng_state(data.images.device)
    return any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def _rng_devices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def _global_rng_state(device: torch.device) -> list[torch.Tensor]:
    states = [torch.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return states


@contextlib.contextmanager
def _global_rng_seeded(seed: int, device: torch.device, enabled: bool) -> Iterator[None]:
    """Fork the global generators and seed them from ``seed`` (a no-op when disabled)."""
    if not enabled:
        yield
        return
    with torch.random.fork_rng(devices=_rng_devices(device)):
        torch.manual_seed(seed)
        yield
