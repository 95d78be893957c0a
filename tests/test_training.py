"""The training engine: seeding, packs of runs, metrics, precision."""

from __future__ import annotations

import math
import threading
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from conftest import quadrants
from torch import nn

from benchlab.components import DatasetInfo, DatasetSplit
from benchlab.training import EpochRecord, RunResult, TrainConfig, evaluate, pack_size, train_runs
from benchlab.training.randomness import SeededDropout as _SeededDropout
from benchlab.training.randomness import dropout_mask as _dropout_mask
from benchlab_plugins.cnn import CNNParams, build_cnn, build_cnn_bn

# Small images keep the real architecture (BatchNorm, two dropouts) but make it cheap.
INFO = DatasetInfo("quadrants", 4, (1, 12, 12), (0.3,), (0.35,))
ONE_EPOCH = TrainConfig(epochs=1, batch_size=64, test_batch_size=100)


TRAIN = quadrants(512, seed=0, side=12, noise=60, bright=180)
TEST = quadrants(200, seed=1, side=12, noise=60, bright=180)


def cnn_bn() -> nn.Module:
    return build_cnn_bn(INFO, CNNParams())


@pytest.fixture(autouse=True)
def threads():
    """One intra-op thread unless a test asks for more; restored afterwards.

    Runs alone then compute like runs in a pack, and a test suite sharing the
    machine with other processes does not stall on OpenMP barriers.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch.set_num_threads
    torch.set_num_threads(before)


def metrics(record: EpochRecord) -> tuple[float, float, float, float]:
    return record.train_loss, record.train_acc, record.test_loss, record.test_acc


def assert_same_runs(a: list[RunResult], b: list[RunResult], rtol: float, atol: float) -> None:
    assert [r.seed for r in a] == [r.seed for r in b]
    for x, y in zip(a, b, strict=True):
        for ex, ey in zip(x.epochs, y.epochs, strict=True):
            assert metrics(ex) == pytest.approx(metrics(ey), rel=rtol, abs=atol)
        assert x.state_dict.keys() == y.state_dict.keys()
        for name in x.state_dict:
            torch.testing.assert_close(x.state_dict[name], y.state_dict[name],
                                       rtol=rtol, atol=atol, msg=name)


# -- packs ------------------------------------------------------------------------------

def test_a_pack_trains_each_run_exactly_as_alone_with_the_same_threads():
    # With one intra-op thread everywhere the kernels are identical, so any
    # difference could only come from shared randomness or state between runs.
    alone = train_runs(cnn_bn, TRAIN, TEST, ONE_EPOCH, seeds=[5, 6, 7], pack=1)
    packed = train_runs(cnn_bn, TRAIN, TEST, ONE_EPOCH, seeds=[5, 6, 7], pack=3)
    assert_same_runs(alone, packed, rtol=0, atol=0)


def test_a_pack_matches_runs_trained_one_by_one_on_all_threads(threads):
    # One run alone uses every thread, a run in a pack one: kernels split their
    # sums differently, so results agree to float32 rounding amplified over 4 steps.
    threads(2)
    train = TRAIN.head(256)
    alone = train_runs(cnn_bn, train, TEST, ONE_EPOCH, seeds=[5, 6], pack=1)
    packed = train_runs(cnn_bn, train, TEST, ONE_EPOCH, seeds=[5, 6], pack=2)
    assert_same_runs(alone, packed, rtol=1e-3, atol=1e-4)


def test_runs_in_a_pack_differ_from_each_other():
    a, b = train_runs(cnn_bn, TRAIN, TEST, ONE_EPOCH, seeds=[1, 2], pack=2)
    assert not torch.equal(a.state_dict["fc1.weight"], b.state_dict["fc1.weight"])
    assert metrics(a.epochs[0]) != metrics(b.epochs[0])


@pytest.mark.parametrize("pack", [1, 2])
def test_same_seed_twice_gives_identical_results(pack):
    first = train_runs(cnn_bn, TRAIN, TEST, ONE_EPOCH, seeds=[3, 4], pack=pack)
    second = train_runs(cnn_bn, TRAIN, TEST, ONE_EPOCH, seeds=[3, 4], pack=pack)
    assert_same_runs(first, second, rtol=0, atol=0)


def test_seed_alone_does_not_depend_on_its_neighbours():
    (alone,) = train_runs(cnn_bn, TRAIN, TEST, ONE_EPOCH, seeds=[9], pack=1)
    among = train_runs(cnn_bn, TRAIN, TEST, ONE_EPOCH, seeds=[8, 9], pack=2)[1]
    assert_same_runs([alone], [among], rtol=0, atol=0)


def cnn() -> nn.Module:
    return build_cnn(INFO, CNNParams())


def test_runs_of_different_models_in_one_pack_train_exactly_as_alone():
    builds, seeds = [cnn, cnn_bn, cnn], [3, 3, 4]
    packed = train_runs(builds, TRAIN, TEST, ONE_EPOCH, seeds=seeds, pack=3)
    alone = [train_runs(b, TRAIN, TEST, ONE_EPOCH, seeds=[s], pack=1)[0]
             for b, s in zip(builds, seeds, strict=True)]
    assert_same_runs(alone, packed, rtol=0, atol=0)
    assert "bn1.weight" in packed[1].state_dict and "bn1.weight" not in packed[0].state_dict


class Explodes(nn.Module):
    """Fails on its second training step."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(144, 4)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.training and self.calls > 2:
            raise RuntimeError("boom")
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("pack", [1, 3])
def test_a_failing_run_of_a_mixed_pack_is_named_by_its_index(pack):
    with pytest.raises(RuntimeError, match="boom") as caught:
        train_runs([cnn, Explodes, cnn_bn], TRAIN, TEST, ONE_EPOCH, seeds=[1, 2, 3], pack=pack)
    assert caught.value.benchlab_run == 1
    with pytest.raises(ValueError, match="got 2 builds for 3 seeds"):
        train_runs([cnn, cnn], TRAIN, TEST, ONE_EPOCH, seeds=[1, 2, 3])


class GlobalNoiseNet(nn.Module):
    """Draws from the global generator in forward, which no pack could reproduce."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(144, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.dropout2d(x, 0.2, self.training).flatten(1))


def test_model_using_the_global_generator_is_trained_alone_and_reproducibly():
    first = train_runs(GlobalNoiseNet, TRAIN, TEST, ONE_EPOCH, seeds=[1, 2], pack=2)
    second = train_runs(GlobalNoiseNet, TRAIN, TEST, ONE_EPOCH, seeds=[1, 2], pack=2)
    assert_same_runs(first, second, rtol=0, atol=0)
    # trained one at a time: the throughput is that of one run, not of a pack of two
    record = first[0].epochs[0]
    assert record.images_per_s == pytest.approx(len(TRAIN) / record.epoch_time_s)


def test_pack_throughput_counts_every_run_of_the_pack():
    results = train_runs(cnn_bn, TRAIN, TEST, ONE_EPOCH, seeds=[1, 2], pack=2)
    for result in results:
        record = result.epochs[0]
        assert record.images_per_s == pytest.approx(2 * len(TRAIN) / record.epoch_time_s)


def test_pack_size(threads):
    config = TrainConfig()
    threads(2)
    assert pack_size(config, "cpu") == 2
    threads(1)
    assert pack_size(config, "cpu") == 1
    assert pack_size(config, torch.device("cuda")) == 1


def test_on_epoch_is_called_in_the_calling_thread_for_every_epoch_of_every_run():
    calls = []

    def on_epoch(index: int, record: EpochRecord) -> None:
        calls.append((index, record.epoch, threading.current_thread() is threading.main_thread()))

    config = replace(ONE_EPOCH, epochs=2)
    results = train_runs(cnn_bn, TRAIN.head(128), TEST, config, seeds=[4, 5, 6], pack=2,
                         on_epoch=on_epoch)
    assert sorted(calls) == [(i, e, True) for i in range(3) for e in (1, 2)]
    assert [r.seed for r in results] == [4, 5, 6]
    assert [[e.epoch for e in r.epochs] for r in results] == [[1, 2]] * 3


def test_a_failing_callback_stops_the_pack_and_restores_the_threads(threads):
    threads(2)

    class Stop(Exception):
        pass

    def on_epoch(index: int, record: EpochRecord) -> None:
        raise Stop

    with pytest.raises(Stop):
        train_runs(cnn_bn, TRAIN, TEST, replace(ONE_EPOCH, epochs=3), seeds=[1, 2], pack=2,
                   on_epoch=on_epoch)
    assert torch.get_num_threads() == 2


# -- what a run computes ------------------------------------------------------------------

def test_training_learns_a_learnable_problem():
    config = TrainConfig(epochs=3, batch_size=32, test_batch_size=100)
    (result,) = train_runs(cnn_bn, TRAIN, TEST, config, seeds=[0], pack=1)
    torch.manual_seed(0)
    untrained = cnn_bn()
    _, before = evaluate(untrained, TEST)
    accuracies = [e.test_acc for e in result.epochs]
    assert before < 0.5
    assert accuracies[-1] > 0.95
    assert result.epochs[-1].train_loss < result.epochs[0].train_loss


def test_returned_weights_load_into_a_fresh_model_and_reproduce_the_test_metrics():
    (result,) = train_runs(cnn_bn, TRAIN, TEST, ONE_EPOCH, seeds=[2], pack=1)
    model = cnn_bn()
    model.load_state_dict(result.state_dict)  # strict
    assert all(t.device.type == "cpu" and t.is_contiguous() for t in result.state_dict.values())
    loss, accuracy = evaluate(model, TEST, batch_size=37)
    last = result.epochs[-1]
    assert (loss, accuracy) == pytest.approx((last.test_loss, last.test_acc), rel=1e-5)
    assert result.state_dict["bn1.num_batches_tracked"].item() == math.ceil(512 / 64)


def test_model_initialisation_follows_the_seed():
    (result,) = train_runs(cnn_bn, TRAIN.head(64), TEST, ONE_EPOCH, seeds=[11], pack=1)
    torch.manual_seed(11)
    initial = cnn_bn().state_dict()
    # one SGD step from the seeded initialisation: lr * gradient, a small change
    change = (result.state_dict["fc2.weight"] - initial["fc2.weight"]).abs().max()
    assert 0 < change < 0.05


def test_bf16_runs_and_gives_finite_metrics():
    config = replace(ONE_EPOCH, precision="bf16")
    (result,) = train_runs(cnn_bn, TRAIN, TEST, config, seeds=[0], pack=1)
    record = result.epochs[0]
    assert all(math.isfinite(v) for v in metrics(record))
    assert 0 <= record.train_acc <= 1 and 0 <= record.test_acc <= 1
    assert all(t.dtype in (torch.float32, torch.int64) for t in result.state_dict.values())


def test_adam_and_a_model_without_dropout_or_batchnorm():
    def plain() -> nn.Module:
        return build_cnn(INFO, CNNParams(dropout1=0.0, dropout2=0.0))

    config = replace(ONE_EPOCH, optimizer="adam", lr=1e-3, epochs=2)
    (result,) = train_runs(plain, TRAIN, TEST, config, seeds=[0], pack=2)
    assert result.epochs[-1].train_loss < result.epochs[0].train_loss


def test_train_runs_without_seeds_returns_nothing():
    assert train_runs(cnn_bn, TRAIN, TEST, ONE_EPOCH, seeds=[]) == []


@pytest.mark.parametrize("change", [{"epochs": 0}, {"batch_size": 0}, {"lr": 0.0},
                                    {"momentum": 1.0}, {"optimizer": "rmsprop"},
                                    {"precision": "fp16"}])
def test_invalid_configs_are_rejected(change):
    with pytest.raises(ValueError):
        TrainConfig(**change)


# -- evaluate -----------------------------------------------------------------------------

class FixedLogits(nn.Module):
    """Logits (2x, 0) for every image with mean pixel x: predicts 0 when x > 0."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.mean(dim=(1, 2, 3))
        return torch.stack([2 * x, torch.zeros_like(x)], dim=1)


def test_evaluate_matches_hand_computed_loss_and_accuracy():
    images = torch.stack([torch.full((1, 2, 2), v, dtype=torch.uint8) for v in (255, 0, 51)])
    split = DatasetSplit(images, torch.tensor([0, 0, 1]))
    # pixel means 1, 0, 0.2 -> logits (2, 0), (0, 0), (0.4, 0); predictions 0, 0 (tie), 0
    expected = (math.log(1 + math.exp(-2)) + math.log(2) + math.log(1 + math.exp(0.4))) / 3
    model = FixedLogits().train()
    loss, accuracy = evaluate(model, split, batch_size=2)
    assert loss == pytest.approx(expected, rel=1e-6)
    assert accuracy == pytest.approx(2 / 3)
    assert model.training  # mode restored


# -- dropout --------------------------------------------------------------------------------

def test_dropout_mask_values_rate_and_reproducibility():
    mask = _dropout_mask((200, 500), 0.25, torch.Generator().manual_seed(0))
    assert mask.unique().tolist() == pytest.approx([0.0, 4 / 3])
    assert (mask == 0).float().mean().item() == pytest.approx(0.25, abs=0.005)
    assert mask.mean().item() == pytest.approx(1.0, abs=0.01)
    again = _dropout_mask((200, 500), 0.25, torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)
    # the 16-bit lanes of one 64-bit draw are independent: no lane is biased
    lanes = (mask.flatten()[:100000].view(-1, 4) == 0).float().mean(dim=0)
    assert lanes.tolist() == pytest.approx([0.25] * 4, abs=0.01)


@pytest.mark.parametrize("p", [0.0, 1.0, 1e-6])
def test_dropout_mask_rejects_probabilities_it_cannot_represent(p):
    with pytest.raises(ValueError):
        _dropout_mask((4,), p, torch.Generator())


def test_seeded_dropout_behaves_like_dropout():
    layer = _SeededDropout(0.5, torch.Generator().manual_seed(1))
    x = torch.ones(1000, 10)
    out = layer(x)
    assert set(out.unique().tolist()) == {0.0, 2.0}
    assert layer.eval()(x) is x
    assert torch.equal(_SeededDropout(1.0, torch.Generator()).train()(x), torch.zeros_like(x))
    assert _SeededDropout(0.0, torch.Generator()).train()(x) is x


# -- learning curves at step resolution ------------------------------------------------

def test_step_evaluation_leaves_training_unchanged_and_records_the_curve():
    plain = train_runs(cnn_bn, TRAIN, TEST, replace(ONE_EPOCH, epochs=2), seeds=[3, 4], pack=2)
    curve_split = TEST.head(50)
    config = replace(ONE_EPOCH, epochs=2, eval_every=3)
    traced = train_runs(cnn_bn, TRAIN, TEST, config, seeds=[3, 4], pack=2,
                        curve_split=curve_split)
    assert_same_runs(plain, traced, rtol=0, atol=0)  # evaluation touches no weight or RNG
    assert all(not r.steps for r in plain)
    steps_per_epoch = 512 // 64  # 8 steps per epoch, 16 in all: evaluated at 0, 3, ..., 15
    for result in traced:
        assert [s.step for s in result.steps] == [0, 3, 6, 9, 12, 15]
        assert [s.epoch for s in result.steps] == [s / steps_per_epoch for s in (0, 3, 6, 9, 12, 15)]
        assert all(s.eval_time_s > 0 for s in result.steps)
    # step 0 is the freshly initialised model, evaluated on the evaluation set
    torch.manual_seed(3)
    loss, accuracy = evaluate(cnn_bn(), curve_split)
    first = traced[0].steps[0]
    assert (first.test_loss, first.test_acc) == pytest.approx((loss, accuracy), rel=1e-5)


def test_the_last_curve_point_is_the_trained_model_on_the_evaluation_set():
    config = replace(ONE_EPOCH, eval_every=4)  # 8 steps: the last evaluation is after step 8
    (result,) = train_runs(cnn_bn, TRAIN, TEST, config, seeds=[2], pack=1)
    assert [s.step for s in result.steps] == [0, 4, 8] and result.steps[-1].epoch == 1.0
    model = cnn_bn()
    model.load_state_dict(result.state_dict)
    # without curve_split the curve is evaluated on the test split
    assert result.steps[-1].test_acc == pytest.approx(evaluate(model, TEST)[1])
    assert result.steps[-1].test_acc == pytest.approx(result.epochs[-1].test_acc)


def test_eval_every_must_be_positive():
    with pytest.raises(ValueError, match="eval_every"):
        TrainConfig(eval_every=0)


def test_a_bf16_curve_is_evaluated_in_bf16_and_agrees_with_the_float32_evaluation():
    config = replace(ONE_EPOCH, eval_every=8, precision="bf16")
    (result,) = train_runs(cnn_bn, TRAIN, TEST, config, seeds=[2], pack=1)
    last = result.steps[-1]
    assert last.step == 8 and math.isfinite(last.test_loss)
    # the same trained model: bf16 and float32 evaluations differ by rounding only
    assert last.test_acc == pytest.approx(result.epochs[-1].test_acc, abs=0.03)
    assert last.test_loss == pytest.approx(result.epochs[-1].test_loss, rel=0.05)


# -- evaluation on the cores a lone run leaves idle ------------------------------------------

@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_evaluation_shared_over_threads_gives_the_one_thread_result_exactly(precision):
    (trained,) = train_runs(cnn_bn, TRAIN, TEST, ONE_EPOCH, seeds=[3], pack=1)
    model = cnn_bn()
    model.load_state_dict(trained.state_dict)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        alone = evaluate(model, TEST, batch_size=30)  # 7 batches, the last one short
        shared = evaluate(model, TEST, batch_size=30, workers=3)
        fp32 = evaluate(model, TEST, batch_size=30, workers=1) if precision == "fp32" else None
    assert shared == alone  # to the last bit, not approximately
    assert torch.get_num_threads() == 1
    if precision == "bf16":  # the caller's autocast reached the worker threads
        assert evaluate(model, TEST, batch_size=30, workers=3) != shared
    else:
        assert fp32 == alone


def test_a_lone_run_evaluated_on_the_idle_core_trains_exactly_as_on_one_thread(threads,
                                                                                 monkeypatch):
    """A process with two threads trains a lone run on one (``threads=1``) and
    evaluates it on both: every metric and weight is the one-thread process's."""
    import benchlab.training.run as run_module
    shared = []
    original = run_module._in_threads
    monkeypatch.setattr(run_module, "_in_threads",
                        lambda work, items, workers: shared.append(workers)
                        or original(work, items, workers))
    config = replace(ONE_EPOCH, eval_every=4, test_batch_size=50)
    one = train_runs(cnn_bn, TRAIN, TEST, config, seeds=[4], pack=1, threads=1)
    assert shared == []  # one thread in the process: nothing to share
    threads(2)
    two = train_runs(cnn_bn, TRAIN, TEST, config, seeds=[4], pack=1, threads=1)
    assert torch.get_num_threads() == 2
    assert shared and set(shared) == {2}  # the curve's and the epoch's evaluations
    assert_same_runs(one, two, rtol=0, atol=0)
    assert [s.test_loss for s in one[0].steps] == [s.test_loss for s in two[0].steps]
