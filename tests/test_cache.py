"""The model cache: digests on every entry, damaged entries are misses, saves are race-free."""

from __future__ import annotations

import json
import logging
import multiprocessing
import time

import pytest
import torch

from benchlab.cache import DIGESTS, ModelCache

KEY = "ab" + "0" * 22


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"fc.weight": torch.randn(4, 8, generator=g), "fc.bias": torch.randn(4, generator=g)}


def _metrics(epochs: int = 2) -> list[dict[str, float]]:
    return [{"epoch": float(e), "train_loss": 0.5, "train_acc": 0.8, "test_loss": 0.4,
             "test_acc": 0.796, "epoch_time_s": 1.0, "images_per_s": 100.0}
            for e in range(1, epochs + 1)]


@pytest.fixture
def cache(tmp_path) -> ModelCache:
    c = ModelCache(tmp_path / "cache")
    c.save(KEY, _state(), _metrics(), {"model": "tiny"})
    return c


def test_a_saved_entry_loads_back_exactly(cache):
    state, metrics = cache.load(KEY)
    assert metrics == _metrics()
    assert all(torch.equal(state[k], v) for k, v in _state().items())
    assert json.loads((cache.path(KEY) / DIGESTS).read_text()).keys() == {
        "model.pt", "metrics.json", "identity.json"}


def test_a_flipped_byte_in_the_weights_is_a_miss_with_a_warning(cache, caplog):
    path = cache.path(KEY) / "model.pt"
    blob = bytearray(path.read_bytes())
    blob[-40] ^= 0x01  # inside the tensor data: torch.load alone would accept it
    path.write_bytes(bytes(blob))
    with caplog.at_level(logging.WARNING, logger="benchlab.cache"):
        assert cache.load(KEY) is None
    assert str(cache.path(KEY)) in caplog.text and "model.pt" in caplog.text


def test_edited_metrics_are_a_miss(cache):
    path = cache.path(KEY) / "metrics.json"
    path.write_text(path.read_text().replace("0.796", "0.9999"))
    assert cache.load(KEY) is None


def test_an_entry_without_digests_is_a_miss(cache):
    (cache.path(KEY) / DIGESTS).unlink()
    assert cache.load(KEY) is None


@pytest.mark.parametrize("metrics", [{"epoch": 1}, [], [{"epoch": 1.0}], [{"test_acc": "x"}],
                                     [{**_metrics(1)[0], "test_acc": float("nan")}],
                                     _metrics(2)[1:]])
def test_metrics_of_the_wrong_shape_are_a_miss_even_with_good_digests(tmp_path, metrics):
    cache = ModelCache(tmp_path)
    cache.save(KEY, _state(), metrics, {})
    assert cache.load(KEY) is None


def test_a_foreign_state_dict_is_a_miss(tmp_path):
    cache = ModelCache(tmp_path)
    cache.save(KEY, {"conv.weight": torch.zeros(2, 2)}, _metrics(), {})
    assert cache.load(KEY, like=_state()) is None
    cache.save("cd" + KEY[2:], {**_state(), "fc.bias": torch.zeros(5)}, _metrics(), {})
    assert cache.load("cd" + KEY[2:], like=_state()) is None
    assert cache.load("cd" + KEY[2:]) is not None  # without a model to compare, it decodes


def test_saving_over_a_damaged_entry_replaces_it(cache):
    (cache.path(KEY) / "model.pt").write_bytes(b"garbage")
    cache.save(KEY, _state(1), _metrics(), {})
    state, _ = cache.load(KEY)
    assert torch.equal(state["fc.bias"], _state(1)["fc.bias"])
    assert [p.name for p in cache.path(KEY).parent.iterdir()] == [KEY]  # nothing left aside


def test_saving_over_a_valid_entry_keeps_it(cache):
    cache.save(KEY, _state(1), _metrics(), {})
    state, _ = cache.load(KEY)
    assert torch.equal(state["fc.bias"], _state()["fc.bias"])


def _hammer(root, seed, barrier, results):
    cache = ModelCache(root)
    barrier.wait()
    saves = loads = 0
    deadline = time.monotonic() + 1.5
    errors = []
    while time.monotonic() < deadline:
        try:
            cache.save(KEY, _state(seed), _metrics(), {"writer": seed})
            saves += 1
            loads += cache.load(KEY) is not None
        except Exception as exc:  # noqa: BLE001 - counted, the test fails on any
            errors.append(repr(exc))
    results.put((saves, loads, errors[:3]))


def test_four_processes_saving_and_loading_one_key_never_fail(tmp_path):
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(tmp_path, i, barrier, results)) for i in range(4)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    saves = sum(o[0] for o in outcomes)
    assert [o[2] for o in outcomes] == [[]] * 4
    assert saves > 20 and sum(o[1] for o in outcomes) == saves  # every load after a save hits
    leftovers = [p.name for p in (tmp_path / KEY[:2]).iterdir() if p.name != KEY]
    assert leftovers == []
