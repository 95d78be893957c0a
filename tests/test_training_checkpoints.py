"""Checkpoints inside a training run: a run continued from any checkpoint ends exactly as
the uninterrupted run, alone, in a pack, with learning curves, Adam and bf16."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
import torch
from conftest import quadrants
from torch import nn

from benchlab.components import DatasetInfo
from benchlab.training import Checkpointing, RunResult, TrainConfig, learning_rate, train_runs
from benchlab.training.checkpoint import check
from benchlab_plugins.cnn import CNNParams, build_cnn_bn

INFO = DatasetInfo("quadrants", 4, (1, 12, 12), (0.3,), (0.35,))
TRAIN = quadrants(320, seed=0, side=12, noise=60, bright=180)  # 5 steps of 64 per epoch
TEST = quadrants(100, seed=1, side=12, noise=60, bright=180)
THREE = TrainConfig(epochs=3, batch_size=64, test_batch_size=100)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):  # tests/conftest.py
    yield


def cnn_bn() -> nn.Module:
    return build_cnn_bn(INFO, CNNParams())


class GlobalNoise(nn.Module):
    """Draws from the global generator in training: trained alone, the global one seeded."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(144, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            x = x + 0.1 * torch.randn_like(x)
        return self.net(x)


def non_timing(result: RunResult) -> tuple:
    epochs = [(r.epoch, r.train_loss, r.train_acc, r.test_loss, r.test_acc) for r in result.epochs]
    steps = [(s.step, s.epoch, s.test_loss, s.test_acc) for s in result.steps]
    return result.seed, epochs, steps


def assert_identical(a: list[RunResult], b: list[RunResult]) -> None:
    assert [non_timing(r) for r in a] == [non_timing(r) for r in b]
    for x, y in zip(a, b, strict=True):
        assert x.state_dict.keys() == y.state_dict.keys()
        for name in x.state_dict:
            assert torch.equal(x.state_dict[name], y.state_dict[name]), name


def through_bytes(state: dict) -> dict:
    """What a checkpoint becomes after a trip through a file: torch.save, safe load."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def collect(build, config: TrainConfig, seeds: list[int], pack: int, every: int | None = None,
            curve=None) -> tuple[list[RunResult], list[tuple[int, dict]]]:
    saved: list[tuple[int, dict]] = []
    results = train_runs(build, TRAIN, TEST, config, seeds, pack=pack, curve_split=curve,
                         checkpoints=Checkpointing(save=lambda i, s: saved.append((i, s)),
                                                   every=every))
    return results, saved


@pytest.mark.parametrize("pack", [1, 2])
def test_a_run_continued_from_each_epoch_checkpoint_ends_bit_identical(pack):
    plain = train_runs(cnn_bn, TRAIN, TEST, THREE, [3, 4], pack=pack)
    full, saved = collect(cnn_bn, THREE, [3, 4], pack)
    assert_identical(plain, full)  # taking checkpoints changes nothing
    # one after epochs 1 and 2 of each run, none after the last
    assert sorted((i, s["position"]["epoch"]) for i, s in saved) == [(0, 1), (0, 2), (1, 1),
                                                                    (1, 2)]
    for epoch in (1, 2):
        resume = [through_bytes(next(s for i, s in saved if i == run
                                     and s["position"]["epoch"] == epoch)) for run in (0, 1)]
        again = train_runs(cnn_bn, TRAIN, TEST, THREE, [3, 4], pack=pack,
                           checkpoints=Checkpointing(resume=resume))
        assert_identical(plain, again)


def test_mid_epoch_checkpoints_every_n_steps_with_a_curve_resume_bit_identical():
    config = replace(THREE, eval_every=2)
    curve = TEST.head(40)
    plain = train_runs(cnn_bn, TRAIN, TEST, config, [5], pack=1, curve_split=curve)
    full, saved = collect(cnn_bn, config, [5], pack=1, every=3, curve=curve)
    assert_identical(plain, full)
    positions = [(s["position"]["epoch"], s["position"]["batch"]) for _, s in saved]
    # steps 3, 6, 9, 12 inside epochs (5 steps each); epoch ends after 1 and 2
    assert positions == [(0, 3), (1, 0), (1, 1), (1, 4), (2, 0), (2, 2)]
    for _, state in saved:
        (again,) = train_runs(cnn_bn, TRAIN, TEST, config, [5], pack=1, curve_split=curve,
                              checkpoints=Checkpointing(resume=[through_bytes(state)]))
        assert_identical(plain, [again])


def test_adam_bf16_and_the_global_generator_resume_bit_identical():
    config = replace(THREE, optimizer="adam", lr=1e-3, precision="bf16")
    for build in (cnn_bn, GlobalNoise):
        plain = train_runs(build, TRAIN, TEST, config, [7], pack=1)
        _, saved = collect(build, config, [7], pack=1, every=4)
        assert len(saved) >= 3
        for _, state in saved:
            (again,) = train_runs(build, TRAIN, TEST, config, [7], pack=1,
                                  checkpoints=Checkpointing(resume=[through_bytes(state)]))
            assert_identical(plain, [again])


def test_a_checkpoint_of_another_seed_or_configuration_is_refused():
    _, saved = collect(cnn_bn, THREE, [3], pack=1)
    state = saved[0][1]
    check(state, 3, THREE)
    with pytest.raises(ValueError, match="seed 3, not of seed 4"):
        check(state, 4, THREE)
    with pytest.raises(ValueError, match="another training configuration"):
        check(state, 3, replace(THREE, lr=0.02))
    with pytest.raises(ValueError, match="format"):
        check({"format": 99}, 3, THREE)
    with pytest.raises(ValueError, match="seed"):
        train_runs(cnn_bn, TRAIN, TEST, THREE, [4], pack=1,
                   checkpoints=Checkpointing(resume=[state]))


def test_checkpoint_every_must_be_positive():
    with pytest.raises(ValueError, match="every"):
        Checkpointing(every=0)


def test_the_cyclic_schedule_rises_to_lr_and_falls_to_zero_and_resumes_bit_identical():
    config = replace(THREE, lr_schedule="cyclic", lr=0.05)
    steps = 15  # 3 epochs of 5 steps
    rates = [learning_rate(config, t, steps) for t in range(1, steps + 1)]
    assert rates[0] == pytest.approx(0.05 / 6) and max(rates) == pytest.approx(0.05)
    assert rates.index(max(rates)) == 5 and rates[-1] == 0.0  # step 6 = 2/5 of 15
    assert all(a < b for a, b in zip(rates[:6], rates[1:6])) and \
        all(a > b for a, b in zip(rates[5:], rates[6:]))
    assert learning_rate(THREE, 7, steps) == THREE.lr
    plain = train_runs(cnn_bn, TRAIN, TEST, config, [2], pack=1)
    constant = train_runs(cnn_bn, TRAIN, TEST, replace(config, lr_schedule="constant"), [2],
                          pack=1)
    assert not torch.equal(plain[0].state_dict["fc2.weight"], constant[0].state_dict["fc2.weight"])
    _, saved = collect(cnn_bn, config, [2], pack=1, every=4)
    assert len(saved) >= 3
    for _, state in saved:
        (again,) = train_runs(cnn_bn, TRAIN, TEST, config, [2], pack=1,
                              checkpoints=Checkpointing(resume=[through_bytes(state)]))
        assert_identical(plain, [again])
