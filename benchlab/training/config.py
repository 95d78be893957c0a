"""What a training run is given and what it gives back: configuration and records."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch

# Every training run on a CPU computes with one intra-op thread, alone, in a pack or on
# a one-thread cluster worker: thread counts change float rounding, and the difference
# compounds over epochs (seed 1 of cnn on 10,000 MNIST images, 1 epoch: test loss
# 0.290907 with 2 threads, 0.288377 with 1 thread alone and in a pack of 2, measured).
THREADS_PER_RUN = 1


@dataclass(frozen=True)
class TrainConfig:
    """How every run of a configuration is trained (the original experiment's defaults).

    ``momentum`` applies to SGD only; Adam uses its default betas. ``lr_schedule``
    "cyclic" sets step t's learning rate (t = 1 .. T, all epochs' steps) to
    ``lr * min(t / (0.4 T), (T - t) / (0.6 T))``: up from 0 over the first 2/5 of the
    steps, down to 0 at the last (see :func:`learning_rate`). ``precision="bf16"``
    runs forward and backward under bfloat16 autocast with float32 master weights.
    ``eval_every`` (optimisation steps; None: off) evaluates each run on a fixed
    evaluation set at step 0 and after every ``eval_every`` steps, for learning
    curves at step resolution (:class:`StepRecord`). It never changes the weights.
    ``test_batch_size`` (both evaluations) "auto": the device's fastest batch, or 1000
    for a model whose predictions depend on their batch (:mod:`benchlab.inference`).
    """

    epochs: int = 14
    batch_size: int = 64
    lr: float = 0.01
    lr_schedule: Literal["constant", "cyclic"] = "constant"
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = 0.9
    test_batch_size: int | Literal["auto"] = "auto"  # see benchlab.inference
    precision: Literal["fp32", "bf16"] = "fp32"
    eval_every: int | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1 or (self.test_batch_size != "auto"
                                   and self.test_batch_size < 1):
            raise ValueError("batch sizes must be >= 1")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.lr_schedule not in ("constant", "cyclic"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cyclic', got "
                             f"{self.lr_schedule!r}")
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
    the epoch's ``epoch_time_s``. ``robust_acc``: for a run trained adversarially,
    the accuracy on the same images under a short PGD at the procedure's ε
    (:func:`benchlab.training.run.robust_accuracy`), which shows catastrophic
    overfitting; None otherwise.
    """

    step: int
    epoch: float
    test_loss: float
    test_acc: float
    eval_time_s: float
    #: accuracy under a short PGD (runs trained adversarially; None: not measured)
    robust_acc: float | None = None


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


#: on a CUDA device, how many runs of one configuration a caller should hand
#: :func:`~benchlab.training.train_runs` at once: they are trained as one vmapped batch
#: per model (:mod:`benchlab.training.batched`), so a study's runs are best handed together
BATCHED_RUNS = 128


def batched_by_default(device: torch.device | str, standard_step: bool = True) -> bool:
    """Whether :func:`~benchlab.training.train_runs` trains the runs of a model as one
    vmapped batch when not told: on a CUDA device, for the standard step. Never on a
    CPU (grouped convolutions are slower there than packs of threads: see
    :mod:`benchlab.training`), so CPU results and cache keys stay the per-run ones."""
    return torch.device(device).type == "cuda" and standard_step


def runs_per_task(config: TrainConfig, device: torch.device | str) -> int:
    """How many runs of ``config`` a caller should hand :func:`train_runs` at once on
    ``device``: :func:`pack_size` on a CPU, :data:`BATCHED_RUNS` on a CUDA device."""
    if batched_by_default(device):
        return BATCHED_RUNS
    return pack_size(config, device)


def set_learning_rate(optimizer: torch.optim.Optimizer, config: TrainConfig, step: int,
                      steps: int) -> None:
    """Give every parameter group the learning rate of step ``step`` (1-based) of
    ``steps``; nothing to do for a constant schedule, whose rate the optimiser holds."""
    if config.lr_schedule == "constant":
        return
    lr = learning_rate(config, step, steps)
    for group in optimizer.param_groups:
        group["lr"] = lr


def learning_rate(config: TrainConfig, step: int, steps: int) -> float:
    """The learning rate of optimisation step ``step`` (1-based) of ``steps`` in all."""
    if config.lr_schedule == "constant":
        return config.lr
    peak = 0.4 * steps
    return config.lr * max(0.0, min(step / peak, (steps - step) / (steps - peak)))
