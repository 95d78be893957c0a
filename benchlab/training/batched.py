"""Many runs of one model trained as one: stacked parameters and ``torch.func.vmap``.

For an accelerator, where one small run leaves most of the device idle. The R runs'
parameters and buffers (BatchNorm's running statistics included) are stacked along a
new first dimension (``torch.func.stack_module_state``) and one vmapped
``functional_call`` computes every run's step: a convolution becomes one grouped
convolution over R groups, a linear layer one batched matrix product. The loss of
the step is the sum of the runs' mean losses, so each run's slice of the stacked
gradient is exactly that run's gradient, and a standard optimiser over the stacked
tensors (SGD with momentum, Adam: element-wise updates, one shared step count)
updates each run as its own optimiser would.

Each run keeps its randomness: its model is initialised under its seed, and its own
generators draw its data order (a permutation per epoch) and its dropout masks, in
the order the per-run trainer draws them (:func:`benchlab.training.run.train_run`).
Masks cannot be drawn inside ``vmap`` from R generators, so they are drawn before
each step, run by run, and handed to the model as buffers of the dropout layers.
Evaluation (after each epoch, and the learning curve) is vmapped too, over all runs
on the same images. A run's result equals the per-run trainer's up to float rounding
(different kernels: grouped convolutions, batched products); the CPU tests check it.

What it does not do (:func:`batchable` and ``train_runs`` fall back to one run at a
time): a model that draws from the global generator, a dropout layer called twice in
one forward pass, a training procedure other than the standard step, runs continued
from a checkpoint. It hands out no checkpoints: an interrupted pack starts again.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from benchlab import inference
from benchlab.components import DatasetSplit
from benchlab.training.config import (
    EpochRecord,
    RunResult,
    StepRecord,
    TrainConfig,
    set_learning_rate,
)
from benchlab.training.randomness import SeededDropout, dropout_mask, seed_dropouts
from benchlab.training.run import Cancelled, Data, to_float

#: images one vmapped evaluation computes at most (runs x batch), to bound its memory
EVAL_IMAGES = 65536

Stacked = dict[str, torch.Tensor]


class MaskedDropout(nn.Module):
    """Dropout that multiplies by a mask given as its ``mask`` buffer (drawn outside)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.register_buffer("mask", torch.empty(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.p == 1:
            return x * 0.0
        return x * self.mask.to(x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def dropout_calls(model: nn.Module, images: torch.Tensor) -> list[tuple[str, float,
                                                                          tuple[int, ...]]]:
    """(name, p, input shape) of every dropout call of a training-mode forward pass of
    ``model`` on ``images``, in call order (the order the per-run trainer draws masks)."""
    probe = copy.deepcopy(model).train()
    seed_dropouts(probe, torch.Generator(device=images.device))
    calls: list[tuple[str, float, tuple[int, ...]]] = []
    hooks = []
    for name, module in probe.named_modules():
        if isinstance(module, SeededDropout):
            def record(module: nn.Module, inputs: tuple[torch.Tensor, ...],
                       name: str = name) -> None:
                calls.append((name, module.p, tuple(inputs[0].shape)))
            hooks.append(module.register_forward_pre_hook(record))
    try:
        with torch.no_grad():
            probe(images)
    finally:
        for hook in hooks:
            hook.remove()
    return calls


def batchable(model: nn.Module, images: torch.Tensor) -> str | None:
    """Why ``model`` cannot be trained by :func:`train_batched` (None: it can)."""
    names = [name for name, _, _ in dropout_calls(model, images)]
    if len(set(names)) != len(names):
        return "a dropout layer is called more than once per forward pass"
    return None


class _Masks:
    """The dropout masks of one step, drawn run by run as the per-run trainer draws them."""

    def __init__(self, model: nn.Module, images: torch.Tensor, batch_size: int) -> None:
        self.calls = [(name, p) for name, p, _ in dropout_calls(model, images[:batch_size])]
        self._shapes: dict[int, list[tuple[int, ...]]] = {}
        self._model, self._images = model, images

    def shapes(self, batch: int) -> list[tuple[int, ...]]:
        if batch not in self._shapes:
            self._shapes[batch] = [s for _, _, s in dropout_calls(self._model,
                                                                  self._images[:batch])]
        return self._shapes[batch]

    def draw(self, generators: Sequence[torch.Generator], batch: int,
             device: torch.device) -> Stacked:
        """Each run's masks (R, ...) per dropout layer, equal to :func:`dropout_mask`'s
        draws from the run's generator, with one threshold for all runs."""
        drawn: Stacked = {}
        for (name, p), shape in zip(self.calls, self.shapes(batch), strict=True):
            dropped = round(p * 65536)
            if not 0 < p < 1:
                continue
            if not 0 < dropped < 65536:
                dropout_mask(shape, p, generators[0], device)  # raises the per-run error
            count = math.prod(shape)
            words = torch.empty(len(generators), (count + 3) // 4, dtype=torch.int64,
                                device=device)
            for row, generator in zip(words, generators, strict=True):
                row.random_(-2**63, None, generator=generator)  # one run's 64-bit draws
            lanes = words.view(torch.int16)[:, :count].reshape(len(generators), *shape)
            drawn[f"{name}.mask"] = lanes.float().ge_(dropped - 32768).mul_(
                65536 / (65536 - dropped))
        return drawn


def _template(model: nn.Module) -> nn.Module:
    """A copy of ``model`` on the meta device, its dropouts taking masks as buffers."""
    template = copy.deepcopy(model)
    for parent in list(template.modules()):
        for name, child in list(parent.named_children()):
            if type(child) in (nn.Dropout, SeededDropout):
                setattr(parent, name, MaskedDropout(child.p))
    return template.to("meta")


def _slice(stacked: Stacked, runs: slice) -> Stacked:
    return {name: t[runs] for name, t in stacked.items()}


class _Batch:
    """R runs of one model as stacked tensors, with their step and their evaluation."""

    def __init__(self, models: Sequence[nn.Module], config: TrainConfig,
                 device: torch.device) -> None:
        params, self.buffers = stack_module_state(list(models))
        self.params = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
        self.template = _template(models[0])
        self.config, self.device, self.runs = config, device, len(models)
        fused = device.type in ("cpu", "cuda")
        leaves = list(self.params.values())
        self.optimizer = torch.optim.Adam(leaves, lr=config.lr, fused=fused) \
            if config.optimizer == "adam" else \
            torch.optim.SGD(leaves, lr=config.lr, momentum=config.momentum, fused=fused)
        self.steps = 0  # of the whole run, set by train_batched

        def loss(p: Stacked, b: Stacked, x: torch.Tensor, y: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
            logits = functional_call(self.template, (p, b), (x,))
            return F.cross_entropy(logits, y), logits

        def logits(p: Stacked, b: Stacked, x: torch.Tensor) -> torch.Tensor:
            return functional_call(self.template, (p, b), (x,)).float()

        self._loss = vmap(loss)
        self._logits = vmap(logits, in_dims=(0, 0, None))

    def step(self, images: torch.Tensor, labels: torch.Tensor, masks: Stacked,
             done: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of every run on its batch (R, B, ...): per-run losses and logits."""
        self.template.train()
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                            enabled=self.config.precision == "bf16"):
            losses, logits = self._loss(self.params, {**self.buffers, **masks},
                                        to_float(images), labels)
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        set_learning_rate(self.optimizer, self.config, done + 1, self.steps)
        self.optimizer.step()
        return losses.detach(), logits.detach()

    @torch.inference_mode()
    def evaluate(self, split: DatasetSplit, batch_size: int, autocast: bool = False
                 ) -> tuple[list[float], list[float]]:
        """Every run's mean cross-entropy and accuracy on ``split``, in eval mode."""
        self.template.eval()
        loss_sum = torch.zeros(self.runs, device=self.device)
        correct = torch.zeros(self.runs, dtype=torch.int64, device=self.device)
        chunk = max(1, EVAL_IMAGES // batch_size)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                            enabled=autocast):
            for begin in range(0, len(split), batch_size):
                images = to_float(split.images[begin:begin + batch_size])
                labels = split.labels[begin:begin + batch_size]
                for first in range(0, self.runs, chunk):
                    runs = slice(first, min(first + chunk, self.runs))
                    logits = self._logits(_slice(self.params, runs),
                                          _slice(self.buffers, runs), images)
                    loss_sum[runs] += F.cross_entropy(
                        logits.flatten(0, 1), labels.repeat(logits.shape[0]),
                        reduction="none").view(logits.shape[:2]).sum(1)
                    correct[runs] += (logits.argmax(dim=2) == labels).sum(1)
        self.template.train()
        n = len(split)
        return [v / n for v in loss_sum.tolist()], [v / n for v in correct.tolist()]

    def state_dicts(self, names: Sequence[str]) -> list[dict[str, torch.Tensor]]:
        """Each run's state dict (keys ``names``, in that order), on the CPU."""
        every = {**self.params, **self.buffers}
        return [{name: every[name][r].detach().to("cpu").clone(
                     memory_format=torch.contiguous_format) for name in names}
                for r in range(self.runs)]


def train_batched(models: Sequence[nn.Module], seeds: Sequence[int], data: Data,
                  config: TrainConfig, device: torch.device,
                  emit: Callable[[int, EpochRecord], None],
                  cancel: threading.Event | None = None) -> list[RunResult]:
    """Train freshly prepared ``models`` (one per seed, one architecture) together.

    ``emit(r, record)`` is called after every epoch of run ``r``. Each run draws from
    the generators the per-run trainer gives it: a CPU generator seeded with its seed
    for the data order (and, on a CPU, the masks), on another device a generator of
    that device seeded from the first draw of the CPU one for the masks.
    """
    generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    mask_generators = generators if device.type == "cpu" else [
        torch.Generator(device).manual_seed(int(torch.randint(2**62, (1,), generator=g)))
        for g in generators]
    names = list(models[0].state_dict())
    n, size = len(data), config.batch_size
    masks = _Masks(models[0], to_float(data.images[:size]), size)
    batch = _Batch(models, config, device)
    steps_per_epoch = math.ceil(n / size)
    batch.steps = config.epochs * steps_per_epoch
    runs = len(models)
    curves: list[list[StepRecord]] = [[] for _ in range(runs)]
    records: list[list[EpochRecord]] = [[] for _ in range(runs)]
    done = 0
    eval_batch = inference.batch_size(config.test_batch_size, models[0], device)

    def curve_point() -> float:
        start = time.perf_counter()
        losses, accuracies = batch.evaluate(data.curve, eval_batch,
                                            autocast=config.precision == "bf16")
        seconds = time.perf_counter() - start
        for r in range(runs):
            curves[r].append(StepRecord(done, done / steps_per_epoch, losses[r],
                                        accuracies[r], seconds))
        return seconds

    if config.eval_every:
        curve_point()
    for epoch in range(1, config.epochs + 1):
        orders = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(device)
        loss_sum = torch.zeros(runs, device=device)
        correct = torch.zeros(runs, dtype=torch.int64, device=device)
        evaluating = 0.0
        start = time.perf_counter()
        for begin in range(0, n, size):
            if cancel is not None and cancel.is_set():
                raise Cancelled
            picked = orders[:, begin:begin + size]
            labels = data.labels[picked]
            drawn = masks.draw(mask_generators, picked.shape[1], device)
            losses, logits = batch.step(data.images[picked], labels, drawn, done)
            loss_sum.add_(losses, alpha=picked.shape[1])
            correct.add_((logits.argmax(dim=2) == labels).sum(1))
            done += 1
            if config.eval_every and done % config.eval_every == 0:
                evaluating += curve_point()
        losses_, hits = loss_sum.tolist(), correct.tolist()  # the epoch's one sync
        seconds = time.perf_counter() - start - evaluating
        test_losses, test_accs = batch.evaluate(data.test, eval_batch)
        for r in range(runs):
            record = EpochRecord(epoch, losses_[r] / n, hits[r] / n, test_losses[r],
                                 test_accs[r], seconds, runs * n / seconds)
            records[r].append(record)
            emit(r, record)
    states = batch.state_dicts(names)
    return [RunResult(seed=int(seed), epochs=records[r], state_dict=states[r], steps=curves[r])
            for r, seed in enumerate(seeds)]
