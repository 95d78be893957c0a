"""One training run: data in memory, the optimisation step, epochs, learning curves, and
the evaluation of a model on a split."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

import torch
import torch.nn.functional as F
from torch import nn

import benchlab.training.checkpoint as checkpoint
from benchlab import inference
from benchlab.components import DatasetSplit
from benchlab.training.config import (
    EpochRecord,
    RunResult,
    StepRecord,
    TrainConfig,
    set_learning_rate,
)
from benchlab.training.randomness import (
    global_rng_seeded,
    global_rng_state,
    seed_dropouts,
    set_global_rng_state,
)


def evaluate(model: nn.Module, split: DatasetSplit, batch_size: int = 1000,
             device: torch.device | str = "cpu", workers: int = 1) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``split``, in eval mode, with
    float32 logits (under the caller's autocast, if any).

    ``workers`` > 1 (CPU): the batches are shared out over that many threads, one
    intra-op thread each, so that cores a run's training leaves idle evaluate it. Every
    batch is computed exactly as alone and the sums are taken in batch order, so the
    result is the same to the last bit for any number of workers. The model's
    train/eval mode is restored afterwards.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    starts = list(range(0, len(split), batch_size))
    # the caller's autocast, carried into the worker threads (autocast is per thread)
    settings = {"device_type": device.type, "enabled": torch.is_autocast_enabled(device.type),
                "dtype": torch.get_autocast_dtype(device.type)}

    def batch(begin: int) -> tuple[torch.Tensor, torch.Tensor]:
        # inference mode and autocast are per thread: entered here, in whichever runs it
        with torch.inference_mode(), torch.autocast(**settings):
            images = to_float(split.images[begin:begin + batch_size].to(device))
            labels = split.labels[begin:begin + batch_size].to(device)
            logits = model(images).float()
            return (F.cross_entropy(logits, labels, reduction="sum"),
                    (logits.argmax(dim=1) == labels).sum())

    try:
        if workers > 1 and device.type == "cpu" and len(starts) > 1:
            parts = _in_threads(batch, starts, workers)
        else:
            parts = [batch(begin) for begin in starts]
        with torch.inference_mode():
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            for loss, hits in parts:  # in batch order, as one thread would add them
                loss_sum += loss
                correct += hits
    finally:
        model.train(was_training)
    return loss_sum.item() / len(split), correct.item() / len(split)


def _in_threads(work: Callable[[int], tuple[torch.Tensor, torch.Tensor]], items: list[int],
                workers: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``[work(x) for x in items]`` on ``workers`` threads, one intra-op thread each."""
    def one_thread(x: int) -> tuple[torch.Tensor, torch.Tensor]:
        torch.set_num_threads(1)  # this thread's OpenMP team: one thread
        return work(x)

    with ThreadPoolExecutor(min(workers, len(items)),
                            thread_name_prefix="benchlab-eval") as pool:
        return list(pool.map(one_thread, items))


#: the attack a learning curve of an adversarially trained run is also evaluated under:
#: PGD of this many steps of 2.5 * eps / steps from the clean image (no random start,
#: so the curve draws nothing and needs no generator)
CURVE_PGD_STEPS = 10


def robust_accuracy(model: nn.Module, split: DatasetSplit, eps: float, batch_size: int = 1000,
                    device: torch.device | str = "cpu", steps: int = CURVE_PGD_STEPS) -> float:
    """Accuracy of ``model`` on ``split`` under an L∞ PGD of radius ``eps`` (eval mode).

    A short attack that shows catastrophic overfitting (Wong et al. 2020): an FGSM-trained
    model whose accuracy under it falls towards 0 while its FGSM accuracy rises. Leaves no
    ``.grad`` on the parameters; the model's train/eval mode is restored afterwards.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    alpha = 2.5 * eps / steps
    correct = torch.zeros((), dtype=torch.int64, device=device)
    try:
        for begin in range(0, len(split), batch_size):
            images = to_float(split.images[begin:begin + batch_size].to(device))
            labels = split.labels[begin:begin + batch_size].to(device)
            adversarial = images
            for _ in range(steps):
                adversarial = adversarial.detach().requires_grad_(True)
                with torch.enable_grad():
                    loss = F.cross_entropy(model(adversarial).float(), labels)
                    (grad,) = torch.autograd.grad(loss, adversarial)
                moved = adversarial.detach() + alpha * grad.sign()
                adversarial = (images + (moved - images).clamp(-eps, eps)).clamp(0.0, 1.0)
            with torch.no_grad():
                correct += (model(adversarial).argmax(dim=1) == labels).sum()
    finally:
        model.train(was_training)
    return correct.item() / len(split)


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


#: ``procedure(model, images, labels, generator, progress) -> (loss, logits)``: one
#: step's loss; ``progress`` is the fraction of the run's optimisation steps done before
#: this one (0 at the first), from the step count, so a resumed run sees the same values
StepLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator, float],
                    tuple[torch.Tensor, torch.Tensor]]


def cross_entropy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                  generator: torch.Generator, params: object = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The standard step's loss: cross-entropy of the model's logits on the batch."""
    del generator, params  # draws nothing
    logits = model(images)
    return F.cross_entropy(logits, labels), logits


def train_run(model: nn.Module, seed: int, data: Data, config: TrainConfig,
              device: torch.device, emit: Callable[[EpochRecord], None], pack: int,
              cancel: threading.Event | None = None, *,
              resume: checkpoint.State | None = None,
              save: Callable[[checkpoint.State], None] | None = None,
              every: int | None = None, procedure: StepLoss | None = None,
              curve_eps: float | None = None, eval_workers: int = 1) -> RunResult:
    """Train one freshly built run for all epochs, with its own generator.

    ``resume``: a checkpoint of this run to continue from. ``save(state)`` is called
    with a checkpoint after every epoch but the last and, with ``every`` set, after
    every ``every`` optimisation steps. ``procedure`` computes each step's loss
    (default: :func:`cross_entropy`); it draws from the run's generator on the
    training device, whose state every checkpoint keeps, so a procedure that keeps
    no state of its own resumes exactly. ``curve_eps``: with a learning curve, also
    record its accuracy under a short PGD of that radius (:func:`robust_accuracy`).
    ``eval_workers``: threads the evaluations share their batches over (:func:`evaluate`;
    the same results for any number).
    """
    generator = torch.Generator().manual_seed(seed)
    # Masks are drawn on the training device; there, a generator of that device.
    mask_generator = generator if device.type == "cpu" else torch.Generator(device).manual_seed(
        int(torch.randint(2**62, (1,), generator=generator)))
    seed_dropouts(model, mask_generator)
    optimizer = _optimizer(model, config, device)
    step = _Step(model, optimizer, config, device, _wants_channels_last(model, device),
                 procedure, mask_generator)
    step.steps = config.epochs * math.ceil(len(data) / config.batch_size)
    eval_batch = inference.batch_size(config.test_batch_size, model, device)
    curve = _Curve(model, data, config, device, eval_batch, curve_eps, eval_workers) \
        if config.eval_every else None
    generators = [generator] if mask_generator is generator else [generator, mask_generator]
    records: list[EpochRecord] = []
    position, partial = checkpoint.Position(), None
    seeded = pack == 1

    def snapshot(partial: checkpoint.Partial | None) -> None:
        if save is not None:
            save(checkpoint.take(
                seed=seed, config=config, position=position, model=model,
                optimizer=optimizer, generators=generators,
                global_rng=global_rng_state(device) if seeded else None, records=records,
                curve=curve.state() if curve is not None else None, partial=partial))

    # Seeding the global generator too makes a model that draws from it (trained
    # only ever alone, see train_runs) reproducible; seeded dropouts never touch it.
    with global_rng_seeded(seed, device, enabled=seeded):
        if resume is not None:
            checkpoint.check(resume, seed, config)
            position, partial = _restore(resume, model, optimizer, generators, device,
                                         seeded, curve)
            records = checkpoint.records_of(resume)
        elif curve is not None:
            curve.evaluate()  # step 0: where every curve starts
        for epoch in range(position.epoch + 1, config.epochs + 1):
            train_loss, train_acc, seconds = _train_epoch(
                step, data, config, generator, cancel, curve, position, partial,
                snapshot if every else None, every)
            partial = None
            test_loss, test_acc = evaluate(model, data.test, eval_batch, device, eval_workers)
            record = EpochRecord(epoch, train_loss, train_acc, test_loss, test_acc,
                                 seconds, pack * len(data) / seconds)
            records.append(record)
            position.epoch, position.batch = epoch, 0
            emit(record)
            if epoch < config.epochs:
                snapshot(None)
    state = {name: t.detach().to("cpu").clone(memory_format=torch.contiguous_format)
             for name, t in model.state_dict().items()}
    return RunResult(seed=seed, epochs=records, state_dict=state,
                     steps=curve.records if curve is not None else [])


def _restore(state: checkpoint.State, model: nn.Module, optimizer: torch.optim.Optimizer,
             generators: list[torch.Generator], device: torch.device, seeded: bool,
             curve: _Curve | None) -> tuple[checkpoint.Position, checkpoint.Partial | None]:
    """Put a run back where checkpoint ``state`` left it; its position and epoch under way."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if len(state["generators"]) != len(generators):
        raise ValueError("a checkpoint taken on another kind of device")
    for generator, saved in zip(generators, state["generators"]):
        generator.set_state(saved)
    if seeded and state["global_rng"] is not None:
        set_global_rng_state(device, state["global_rng"])
    if curve is not None:
        curve.load(state["curve"])
    partial = state["partial"]
    if partial is not None:
        partial = checkpoint.Partial(partial["order"].to(device), partial["loss_sum"].to(device),
                                     partial["correct"].to(device))
    return checkpoint.Position(**state["position"]), partial


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
                 config: TrainConfig, device: torch.device, channels_last: bool,
                 procedure: StepLoss | None = None,
                 generator: torch.Generator | None = None) -> None:
        self.model = model
        self.procedure = procedure
        self.generator = generator
        self.optimizer = optimizer
        self.device = device
        self.autocast = dict(device_type=device.type, dtype=torch.bfloat16,
                             enabled=config.precision == "bf16")
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.config = config
        self.steps = 0  # optimisation steps of the whole run (set by train_run)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, done: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step on the batch, after ``done`` steps of the run."""
        images = to_float(images).contiguous(memory_format=self.memory_format)
        with torch.autocast(**self.autocast):
            if self.procedure is None:
                logits = self.model(images)
                loss = F.cross_entropy(logits, labels)
            else:
                loss, logits = self.procedure(self.model, images, labels, self.generator,
                                              done / self.steps if self.steps else 0.0)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        set_learning_rate(self.optimizer, self.config, done + 1, self.steps)
        self.optimizer.step()
        return loss.detach(), logits.detach()


class _Curve:
    """A run's learning curve: evaluates the model on the evaluation set every
    ``config.eval_every`` optimisation steps, counted across epochs."""

    def __init__(self, model: nn.Module, data: Data, config: TrainConfig,
                 device: torch.device, batch_size: int, robust_eps: float | None = None,
                 workers: int = 1) -> None:
        assert config.eval_every is not None
        self.robust_eps, self.workers = robust_eps, workers
        self.model, self.split, self.device = model, data.curve, device
        self.every, self.batch_size = config.eval_every, batch_size
        self.autocast = dict(device_type=device.type, dtype=torch.bfloat16,
                             enabled=config.precision == "bf16")
        self.steps_per_epoch = math.ceil(len(data) / config.batch_size)
        self.step = 0
        self.seconds = 0.0  # spent evaluating, so far
        self.records: list[StepRecord] = []

    def evaluate(self) -> None:
        start = time.perf_counter()
        robust = None
        with torch.autocast(**self.autocast):
            loss, accuracy = evaluate(self.model, self.split, self.batch_size, self.device,
                                      self.workers)
            if self.robust_eps is not None:
                robust = robust_accuracy(self.model, self.split, self.robust_eps,
                                         self.batch_size, self.device)
        seconds = time.perf_counter() - start
        self.seconds += seconds
        self.records.append(StepRecord(self.step, self.step / self.steps_per_epoch, loss,
                                       accuracy, seconds, robust))

    def state(self) -> dict[str, object]:
        return {"step": self.step, "seconds": self.seconds,
                "records": [asdict(r) for r in self.records]}

    def load(self, state: dict[str, object]) -> None:
        self.step, self.seconds = state["step"], state["seconds"]
        self.records = checkpoint.steps_of(state)

    def stepped(self) -> None:
        self.step += 1
        if self.step % self.every == 0:
            self.evaluate()


def _train_epoch(step: _Step, data: Data, config: TrainConfig, generator: torch.Generator,
                 cancel: threading.Event | None, curve: _Curve | None,
                 position: checkpoint.Position, partial: checkpoint.Partial | None = None,
                 snapshot: Callable[[checkpoint.Partial], None] | None = None,
                 every: int | None = None) -> tuple[float, float, float]:
    """One pass over the training data in a fresh order: (loss, accuracy, seconds).

    ``partial`` continues an epoch a checkpoint was taken in; ``snapshot(partial)``
    is called after every ``every`` steps but at the end of the epoch. The seconds are
    those of the training steps (since the epoch started or continued); evaluations of
    ``curve`` are not counted in them.
    """
    step.model.train()
    n = len(data)
    if partial is None:
        order = torch.randperm(n, generator=generator).to(step.device)
        loss_sum = torch.zeros((), device=step.device)
        correct = torch.zeros((), dtype=torch.int64, device=step.device)
    else:
        order, loss_sum, correct = partial.order, partial.loss_sum, partial.correct
    evaluating = curve.seconds if curve is not None else 0.0
    start = time.perf_counter()
    for begin in range(position.batch * config.batch_size, n, config.batch_size):
        if cancel is not None and cancel.is_set():
            raise Cancelled
        batch = order[begin:begin + config.batch_size]
        labels = data.labels.index_select(0, batch)
        loss, logits = step(data.images.index_select(0, batch), labels, position.step)
        loss_sum.add_(loss, alpha=batch.shape[0])
        correct.add_((logits.argmax(dim=1) == labels).sum())
        if curve is not None:
            curve.stepped()
        position.batch += 1
        position.step += 1
        if snapshot is not None and every and position.step % every == 0 \
                and begin + config.batch_size < n:
            snapshot(checkpoint.Partial(order, loss_sum, correct))
    train_loss, train_acc = loss_sum.item() / n, correct.item() / n  # the epoch's one sync
    seconds = time.perf_counter() - start
    if curve is not None:
        seconds -= curve.seconds - evaluating
    return train_loss, train_acc, seconds


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images to float32 in [0, 1], exactly as :meth:`DatasetSplit.floats`."""
    return images.float().div_(255.0)


