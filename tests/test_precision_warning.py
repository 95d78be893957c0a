"""bf16 on a CPU that only emulates it is said at the start of a run."""

from __future__ import annotations

import pytest
import torch

from benchlab import environment
from benchlab.suite import Suite


def _suite(precision: str, model_precision: str | None = None) -> Suite:
    models = [{"name": "cnn"}, {"name": "cnn_bn"}]
    if model_precision:
        models[1]["train"] = {"precision": model_precision}
    return Suite.model_validate({"name": "t", "models": models, "dataset": {"name": "mnist"},
                                 "train": {"precision": precision}})


@pytest.mark.parametrize("hardware", [False, True])
def test_bf16_without_bf16_instructions_is_warned_of(monkeypatch, hardware):
    monkeypatch.setattr(environment, "cpu_has_bf16", lambda: hardware)
    warning = environment.bf16_warning(_suite("bf16"), torch.device("cpu"))
    if hardware:
        assert warning is None
    else:
        assert warning is not None and "cnn, cnn_bn" in warning and "10x slower" in warning
    assert environment.bf16_warning(_suite("fp32"), torch.device("cpu")) is None
    assert environment.bf16_warning(_suite("bf16"), torch.device("cuda")) is None


def test_the_environment_records_whether_the_cpu_has_bf16():
    assert isinstance(environment.cpu_has_bf16(), bool)
