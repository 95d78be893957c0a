"""The batched trainer (stacked parameters, vmap): the per-run trainer's results, on a CPU."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import quadrants
from torch import nn

from benchlab.components import DatasetInfo
from benchlab.training import (
    BATCHED_RUNS,
    TrainConfig,
    batched_by_default,
    runs_per_task,
    train_runs,
)
from benchlab.training.batched import MaskedDropout, batchable, dropout_calls
from benchlab_plugins.cnn import CNNBNParams, CNNParams, build_cnn, build_cnn_bn

INFO = DatasetInfo("quadrants", 4, (1, 12, 12), (0.3,), (0.35,))
TRAIN = quadrants(200, seed=0, side=12, noise=60, bright=180)
TEST = quadrants(96, seed=1, side=12, noise=60, bright=180)
# 200 images in batches of 32: 7 steps an epoch, the last one of 8 images
SGD = TrainConfig(epochs=2, batch_size=32, test_batch_size=40, lr=0.05, momentum=0.9,
                  eval_every=3)
SEEDS = [3, 11, 12]


def cnn() -> nn.Module:
    return build_cnn(INFO, CNNParams())


def cnn_bn() -> nn.Module:
    return build_cnn_bn(INFO, CNNBNParams())


@pytest.fixture(autouse=True)
def _one_thread(one_thread):  # tests/conftest.py
    yield


def assert_close_runs(batched, alone, atol=2e-5):
    assert [r.seed for r in batched] == [r.seed for r in alone]
    for b, a in zip(batched, alone, strict=True):
        assert len(b.epochs) == len(a.epochs)
        for eb, ea in zip(b.epochs, a.epochs, strict=True):
            assert eb.epoch == ea.epoch
            for name in ("train_loss", "train_acc", "test_loss", "test_acc"):
                assert getattr(eb, name) == pytest.approx(getattr(ea, name), abs=atol), name
        assert [(s.step, s.epoch) for s in b.steps] == [(s.step, s.epoch) for s in a.steps]
        for sb, sa in zip(b.steps, a.steps, strict=True):
            assert (sb.test_loss, sb.test_acc) == pytest.approx((sa.test_loss, sa.test_acc),
                                                                abs=atol)
        assert list(b.state_dict) == list(a.state_dict)
        for name, tensor in a.state_dict.items():
            assert b.state_dict[name].dtype == tensor.dtype, name
            torch.testing.assert_close(b.state_dict[name], tensor, rtol=1e-4, atol=atol,
                                       msg=name)


@pytest.mark.parametrize("build", [cnn, cnn_bn], ids=["cnn", "cnn_bn"])
def test_batched_runs_equal_runs_trained_alone_at_fp32(build):
    alone = train_runs(build, TRAIN, TEST, SGD, SEEDS, pack=1, batched=False)
    batched = train_runs(build, TRAIN, TEST, SGD, SEEDS, batched=True)
    assert_close_runs(batched, alone)
    # the runs differ from each other (their own seeds, orders and masks), and moved
    first, second = (r.state_dict["fc2.weight"] for r in batched[:2])
    assert not torch.allclose(first, second, atol=1e-3)
    assert batched[0].steps[0].test_acc != batched[0].steps[-1].test_acc
    if build is cnn_bn:  # BatchNorm's running statistics are each run's own
        for b, a in zip(batched, alone, strict=True):
            assert int(b.state_dict["bn1.num_batches_tracked"]) == 2 * 7
            torch.testing.assert_close(b.state_dict["bn2.running_var"],
                                       a.state_dict["bn2.running_var"], rtol=1e-4, atol=2e-5)


def test_mixed_models_and_a_cyclic_schedule_are_batched_per_model():
    config = replace(SGD, lr_schedule="cyclic", eval_every=None)
    builds = [cnn, cnn_bn, cnn, cnn_bn]
    seeds = [1, 1, 2, 2]
    alone = train_runs(builds, TRAIN, TEST, config, seeds, pack=1, batched=False)
    got = []
    batched = train_runs(builds, TRAIN, TEST, config, seeds, batched=True,
                         on_epoch=lambda i, record: got.append((i, record.epoch)))
    assert_close_runs(batched, alone)
    assert "bn1.weight" in batched[1].state_dict and "bn1.weight" not in batched[0].state_dict
    assert sorted(got) == [(i, e) for i in range(4) for e in (1, 2)]
    # the throughput of a batch counts every run trained in it
    record = batched[0].epochs[0]
    assert record.images_per_s == pytest.approx(2 * len(TRAIN) / record.epoch_time_s)


def test_adam_is_batched_too():
    config = replace(SGD, optimizer="adam", lr=0.002, eval_every=None)
    assert_close_runs(train_runs(cnn, TRAIN, TEST, config, SEEDS[:2], batched=True),
                      train_runs(cnn, TRAIN, TEST, config, SEEDS[:2], pack=1, batched=False))
    # With BatchNorm, the gradient of conv2's bias is zero but for rounding, which Adam
    # normalises into full steps: parameters move apart, the metrics do not.
    alone = train_runs(cnn_bn, TRAIN, TEST, config, SEEDS[:1], pack=1, batched=False)
    batched = train_runs(cnn_bn, TRAIN, TEST, config, SEEDS[:1], batched=True)
    assert batched[0].epochs[-1].test_loss == pytest.approx(alone[0].epochs[-1].test_loss,
                                                            abs=1e-3)


def test_batched_bf16_trains_close_to_the_per_run_bf16_path():
    config = replace(SGD, precision="bf16", epochs=1)
    alone = train_runs(cnn_bn, TRAIN, TEST, config, SEEDS[:2], pack=1, batched=False)
    batched = train_runs(cnn_bn, TRAIN, TEST, config, SEEDS[:2], batched=True)
    for b, a in zip(batched, alone, strict=True):
        assert b.epochs[0].test_loss == pytest.approx(a.epochs[0].test_loss, abs=0.05)


def test_dropout_calls_and_the_masked_dropout():
    model = cnn_bn().train()
    calls = dropout_calls(model, torch.rand(5, 1, 12, 12))
    assert [(name, p) for name, p, _ in calls] == [("dropout1", 0.25), ("dropout2", 0.5)]
    assert calls[0][2] == (5, 64, 4, 4) and calls[1][2] == (5, 128)
    assert batchable(model, torch.rand(5, 1, 12, 12)) is None
    layer = MaskedDropout(0.5)
    layer.mask = torch.tensor([0.0, 2.0])
    assert layer(torch.tensor([3.0, 4.0])).tolist() == [0.0, 8.0]
    assert layer.eval()(torch.tensor([3.0, 4.0])).tolist() == [3.0, 4.0]


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(144, 4)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.drop(x.flatten(1))))


def test_a_model_calling_one_dropout_twice_is_trained_alone_and_identically():
    assert batchable(Twice(), torch.rand(2, 1, 12, 12)) is not None
    config = replace(SGD, eval_every=None, epochs=1)
    alone = train_runs(Twice, TRAIN, TEST, config, [1, 2], pack=1, batched=False)
    fallen_back = train_runs(Twice, TRAIN, TEST, config, [1, 2], batched=True)
    for b, a in zip(fallen_back, alone, strict=True):
        assert b.epochs[0].test_loss == a.epochs[0].test_loss


def test_batching_is_the_default_on_cuda_only():
    assert not batched_by_default("cpu")
    assert batched_by_default("cuda") and not batched_by_default("cuda", standard_step=False)
    assert runs_per_task(SGD, "cuda") == BATCHED_RUNS
    assert runs_per_task(SGD, "cpu") == torch.get_num_threads()


def test_the_cache_key_names_the_batched_trainer_on_cuda_only(monkeypatch):
    from benchlab import identity
    from benchlab.jobs import expand
    from benchlab.plugins import default_registry
    from benchlab.suite import validate_suite

    registry = default_registry()
    suite = {"name": "key", "dataset": {"name": "mnist", "train_size": 100, "test_size": 50},
             "models": [{"name": "cnn_bn"},
                        {"name": "cnn_bn", "label": "fast",
                         "procedure": {"name": "fgsm_at", "eps": 0.1}}],
             "train": {"epochs": 1}}
    plain, adversarial = [j for j in expand(validate_suite(suite, registry))
                          if j.kind == "train"]
    monkeypatch.setattr(identity, "weights_code", lambda *a, **k: {"fixed": 1})
    cpu = identity.model_identity(plain, registry, "cpu")["compute"]
    assert set(cpu) == {"device", "torch", "threads_per_run"}  # as before batching existed
    assert identity.model_identity(plain, registry, "cuda")["compute"]["trainer"] == "batched"
    assert "trainer" not in identity.model_identity(adversarial, registry, "cuda")["compute"]


def test_the_masks_of_a_step_are_each_runs_own_per_run_draws():
    from benchlab.training.batched import _Masks
    from benchlab.training.randomness import dropout_mask

    model = cnn_bn().train()
    masks = _Masks(model, torch.rand(8, 1, 12, 12), 8)
    drawn = masks.draw([torch.Generator().manual_seed(s) for s in (1, 2)], 5, "cpu")
    for r, seed in enumerate((1, 2)):
        g = torch.Generator().manual_seed(seed)
        assert torch.equal(drawn["dropout1.mask"][r], dropout_mask((5, 64, 4, 4), 0.25, g))
        assert torch.equal(drawn["dropout2.mask"][r], dropout_mask((5, 128), 0.5, g))


def test_bench_gpu_runs_end_to_end_on_the_cpu(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"
    done = subprocess.run([sys.executable, str(script), "--out", str(tmp_path), "--dry-run",
                           "--no-study"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert report["tiny"] and report["matmul_tflop_per_s"]["bf16"] > 0
    paths = {(r["model"], r["precision"], r["path"]) for r in report["rates"]}
    assert ("cnn_bn", "bf16", "batched") in paths and ("cnn", "fp32", "per-run") in paths
    assert all(r["images_per_s"] > 0 and 0 < r["fraction_of_bf16_peak"] for r in report["rates"])
    assert report["study"] == {"skipped": "--no-study"}
    if not __import__("torch").cuda.is_available():
        refused = subprocess.run([sys.executable, str(script), "--out", str(tmp_path)],
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2 and refused.stdout == ""
        assert refused.stderr.count("\n") == 1 and "no CUDA device" in refused.stderr


def test_on_real_mnist_the_batched_runs_match_the_per_run_ones(mnist_root):
    from benchlab.plugins import default_registry

    mnist = default_registry().get("dataset", "mnist").obj
    train, test = mnist.load("train", mnist_root).head(1024), mnist.load("test", mnist_root)
    config = TrainConfig(epochs=1, eval_every=8, test_batch_size=250)
    build = lambda: build_cnn_bn(mnist.info, CNNBNParams())  # noqa: E731
    alone = train_runs(build, train, test.head(500), config, [1, 2], pack=1, batched=False,
                       curve_split=test.head(250))
    batched = train_runs(build, train, test.head(500), config, [1, 2], batched=True,
                         curve_split=test.head(250))
    # vmapped (grouped) convolutions round differently from one run's, and over 16 steps
    # of real data that grows (measured: train loss 7e-4 apart, 3 of 1024 training
    # predictions): the same training to within that, not to the last digits
    for b, a in zip(batched, alone, strict=True):
        for eb, ea in zip(b.epochs, a.epochs, strict=True):
            assert eb.train_loss == pytest.approx(ea.train_loss, rel=5e-3)
            assert eb.train_acc == pytest.approx(ea.train_acc, abs=0.01)
            assert eb.test_loss == pytest.approx(ea.test_loss, rel=5e-3)
            assert eb.test_acc == pytest.approx(ea.test_acc, abs=0.01)
        assert [s.step for s in b.steps] == [s.step for s in a.steps]
    assert batched[0].epochs[0].test_acc > 0.5  # it learned (chance: 0.1)
