"""The evaluation batch size: the device's fastest unless the model depends on its batch."""

from __future__ import annotations

import pytest
import torch
from conftest import quadrants
from torch import nn

from benchlab import inference
from benchlab.components import DatasetInfo
from benchlab.suite import Suite
from benchlab.training import TrainConfig, evaluate, train_runs
from benchlab_plugins.cnn import CNNBNParams, CNNParams, build_cnn, build_cnn_bn

INFO = DatasetInfo("quadrants", 4, (1, 12, 12), (0.3,), (0.35,))


def test_auto_is_the_devices_fastest_batch_and_a_number_is_kept():
    model = build_cnn(INFO, CNNParams())
    assert inference.batch_size("auto", model, "cpu") == inference.FASTEST["cpu"] == 32
    assert inference.batch_size("auto", model, "cuda") == inference.FASTEST_ELSEWHERE
    assert inference.batch_size(77, model, "cpu") == 77


def test_a_model_that_depends_on_its_batch_keeps_its_fixed_batch():
    running = build_cnn_bn(INFO, CNNBNParams())
    batch = build_cnn_bn(INFO, CNNBNParams(bn_eval="batch"))
    assert not inference.depends_on_batch(running)
    assert inference.depends_on_batch(batch)
    assert inference.batch_size("auto", batch, "cpu") == inference.TEST_BATCH_BEFORE
    assert inference.batch_size("auto", batch, "cpu", fallback=256) == 256
    no_estimates = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False))
    assert inference.depends_on_batch(no_estimates)
    # ... and it really does: its outputs change with the batch it is evaluated in
    images = torch.rand(64, 1, 12, 12)
    batch.eval()
    with torch.no_grad():
        assert not torch.allclose(batch(images)[:32], batch(images[:32]))


def test_evaluation_at_the_fastest_batch_matches_batch_1000_within_rounding(one_thread):
    train, test = quadrants(512, seed=0, side=12), quadrants(1000, seed=1, side=12)
    (result,) = train_runs(lambda: build_cnn_bn(INFO, CNNParams()), train, test,
                           TrainConfig(epochs=1, batch_size=64), seeds=[0])
    model = build_cnn_bn(INFO, CNNParams())
    model.load_state_dict(result.state_dict)
    loss_1000, acc_1000 = evaluate(model, test, 1000)
    loss_auto, acc_auto = evaluate(model, test, inference.fastest_batch("cpu"))
    assert result.epochs[0].test_loss == pytest.approx(loss_auto, rel=0, abs=0)  # trained so
    assert loss_auto == pytest.approx(loss_1000, rel=1e-5)
    assert acc_auto == acc_1000


def test_the_suite_says_auto_by_default_and_rejects_other_words():
    base = {"name": "t", "models": [{"name": "cnn"}], "dataset": {"name": "mnist"}}
    assert Suite.model_validate(base).train.test_batch_size == "auto"
    assert Suite.model_validate({**base, "train": {"test_batch_size": 64}}
                                ).train.test_batch_size == 64
    for bad in (0, "fastest"):
        with pytest.raises(ValueError, match="test_batch_size"):
            Suite.model_validate({**base, "train": {"test_batch_size": bad}})
