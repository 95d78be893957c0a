"""One training run: data in memory, the optimisation step, epochs, learning curves, and
the evaluation of a model on a split."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from benchlab.components import DatasetSplit
from benchlab.training.config import EpochRecord, RunResult, StepRecord, TrainConfig
from benchlab.training.randomness import global_rng_seeded, seed_dropouts


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
            images = to_float(split.images[begin:begin + batch_size].to(device))
            labels = split.labels[begin:begin + batch_size].to(device)
            logits = model(images).float()
            loss_sum += F.cross_entropy(logits, labels, reduction="sum")
            correct += (logits.argmax(dim=1) == labels).sum()
    finally:
        model.train(was_training)
    return loss_sum.item() / len(split), correct.item() / len(split)


class Data:
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


class Cancelled(Exception):
    """Raised inside a run when the pack it belongs to is abandoned."""


def ignore(*_: object) -> None:
    return None


def train_run(model: nn.Module, seed: int, data: Data, config: TrainConfig,
               device: torch.device, emit: Callable[[EpochRecord], None], pack: int,
               cancel: threading.Event | None = None) -> RunResult:
    """Train one freshly built run for all epochs, with its own generator."""
    generator = torch.Generator().manual_seed(seed)
    # Masks are drawn on the training device; there, a generator of that device.
    mask_generator = generator if device.type == "cpu" else torch.Generator(device).manual_seed(
        int(torch.randint(2**62, (1,), generator=generator)))
    seed_dropouts(model, mask_generator)
    optimizer = _optimizer(model, config, device)
    step = _Step(model, optimizer, config, device, _wants_channels_last(model, device))
    curve = _Curve(model, data, config, device) if config.eval_every else None
    records: list[EpochRecord] = []
    # Seeding the global generator too makes a model that draws from it (trained
    # only ever alone, see train_runs) reproducible; seeded dropouts never touch it.
    with global_rng_seeded(seed, device, enabled=pack == 1):
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


def prepare(build: Callable[[], nn.Module], seed: int, device: torch.device) -> nn.Module:
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
        images = to_float(images).contiguous(memory_format=self.memory_format)
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

    def __init__(self, model: nn.Module, data: Data, config: TrainConfig,
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


def _train_epoch(step: _Step, data: Data, config: TrainConfig, generator: torch.Generator,
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
            raise Cancelled
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


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images to float32 in [0, 1], exactly as :meth:`DatasetSplit.floats`."""
    return images.float().div_(255.0)


