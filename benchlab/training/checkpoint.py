"""A run's state between two optimisation steps: what a checkpoint holds, how one is
taken, and how a run continues from it.

A checkpoint holds everything a run's remaining steps depend on: the weights and
buffers, the optimiser's state, the state of every generator the run draws from
(its own, its mask generator on an accelerator, the global one when it was
seeded), the records and learning curve so far and, taken inside an epoch, that
epoch's order and running sums. A run continued from one computes exactly what the
uninterrupted run would have: the same weights, records and curve, bit for bit
(the wall times of the steps aside).

A checkpoint is a plain dict of tensors, numbers, strings and lists, which
``torch.load(..., weights_only=True)`` reads back without running any code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from benchlab.training.config import EpochRecord, StepRecord, TrainConfig

FORMAT = 1

State = dict[str, Any]


@dataclass(frozen=True)
class Checkpointing:
    """How :func:`~benchlab.training.train_runs` hands out checkpoints and resumes.

    ``save(i, state)`` is called in the calling thread with a checkpoint of run
    ``i``: at the end of every epoch but the last and, with ``every`` set, after
    every ``every`` optimisation steps (counted across epochs). ``resume[i]``, when
    given and not None, is the checkpoint run ``i`` continues from.
    """

    save: Callable[[int, State], None] | None = None
    every: int | None = None
    resume: Sequence[State | None] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.every is not None and self.every < 1:
            raise ValueError(f"checkpoint every must be >= 1 step (or None), got {self.every}")

    def start(self, i: int) -> State | None:
        return self.resume[i] if i < len(self.resume) else None


@dataclass
class Position:
    """Where a run is: epochs finished, and batches trained of the epoch under way."""

    epoch: int = 0  # epochs finished
    batch: int = 0  # of the current epoch, trained
    step: int = 0  # optimisation steps taken in all


@dataclass
class Partial:
    """An epoch under way: its order and the running sums of its training metrics."""

    order: torch.Tensor
    loss_sum: torch.Tensor
    correct: torch.Tensor


def cpu_copy(value: Any) -> Any:
    """``value`` with every tensor copied to the CPU (nested dicts, lists, tuples), in its
    memory format: a fused optimiser reads a state tensor in the layout of its parameter."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: cpu_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(cpu_copy(v) for v in value)
    return value


def take(*, seed: int, config: TrainConfig, position: Position, model: torch.nn.Module,
         optimizer: torch.optim.Optimizer, generators: Sequence[torch.Generator],
         global_rng: Sequence[torch.Tensor] | None, records: Sequence[EpochRecord],
         curve: dict[str, Any] | None, partial: Partial | None) -> State:
    """A checkpoint of a run (everything copied: training may go on at once)."""
    return {
        "format": FORMAT,
        "seed": seed,
        "config": asdict(config),
        "position": asdict(position),
        "model": cpu_copy(model.state_dict()),
        "optimizer": cpu_copy(optimizer.state_dict()),
        "generators": [g.get_state() for g in generators],
        "global_rng": None if global_rng is None else [t.clone() for t in global_rng],
        "records": [asdict(r) for r in records],
        "curve": cpu_copy(curve),
        "partial": None if partial is None else cpu_copy(asdict(partial)),
    }


def check(state: State, seed: int, config: TrainConfig) -> None:
    """Raise ValueError unless ``state`` is a checkpoint of this run and configuration."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"not a checkpoint of format {FORMAT}")
    if state.get("seed") != seed:
        raise ValueError(f"a checkpoint of seed {state.get('seed')}, not of seed {seed}")
    if state.get("config") != asdict(config):
        raise ValueError("a checkpoint of another training configuration")


def records_of(state: State) -> list[EpochRecord]:
    return [EpochRecord(**r) for r in state["records"]]


def steps_of(curve: dict[str, Any]) -> list[StepRecord]:
    return [StepRecord(**r) for r in curve["records"]]
