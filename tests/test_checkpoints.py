"""Checkpoints inside train jobs, on real MNIST: a run killed with SIGKILL in the middle of
epoch 2 continues there, and its weights and results.csv are those of the uninterrupted
run; the same with a Dask worker killed mid-epoch; damaged checkpoints are named and
ignored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from benchlab import runner
from benchlab.cache import ModelCache
from benchlab.checkpoints import Checkpoints
from benchlab.identity import model_identity, model_key
from benchlab.jobs import expand
from benchlab.plugins import default_registry
from benchlab.suite import load_suite

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"epoch_time_s", "images_per_s", "attack_time_s", "explain_images_per_s"}
# 3 epochs of 47 steps (3000 images, batch 64), both CNNs, one run each; no curve
SUITE = ["dataset.train_size=3000", "dataset.test_size=500", "train.runs=1",
         "train.epochs=3", "train.eval_every=null"]
EVERY = 20  # steps between checkpoints inside an epoch: at 20, 40, 47 (end), 67, ...


def _suite():
    return load_suite(str(ROOT / "suites" / "bn_vs_plain.yaml"), default_registry(), SUITE)


def _measurements(out: Path) -> pd.DataFrame:
    frame = pd.read_csv(out / "results.csv")
    frame = frame[~frame["metric"].isin(TIMING)]
    return frame.sort_values(list(frame.columns[:-1]), na_position="first").reset_index(drop=True)


def _weights(cache: Path) -> dict[str, dict[str, torch.Tensor]]:
    registry = default_registry()
    found = {}
    for job in expand(_suite()):
        entry = ModelCache(cache).load(model_key(model_identity(job, registry, "cpu")))
        assert entry is not None, job.id
        found[job.id] = entry[0]
    return found


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for job_id in a:
        assert a[job_id].keys() == b[job_id].keys()
        for name in a[job_id]:
            assert torch.equal(a[job_id][name], b[job_id][name]), (job_id, name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, mnist_root):
    """The uninterrupted run, in this process, with checkpoints off."""
    out = tmp_path_factory.mktemp("reference")
    outcome = runner.run_suite(_suite(), default_registry(), out / "run", device="cpu",
                               cache=ModelCache(out / "cache"), log=lambda s: None,
                               checkpoint=False)
    assert not outcome.failed
    assert not (out / "run" / "checkpoints").exists()
    return out


def _updates(folder: Path, seen: dict[str, set[float]], model: str) -> int:
    """Count the distinct checkpoint writes of ``model``'s run seen so far (by the mtimes
    of the .json files)."""
    for path in folder.glob("*.json") if folder.is_dir() else []:
        try:
            seen.setdefault(path.name, set()).add(path.stat().st_mtime_ns)
        except FileNotFoundError:
            pass
    return len(seen.get(f"train-{model}-r00.json", ()))


@pytest.mark.slow
def test_a_run_killed_mid_epoch_2_continues_there_and_ends_identical(tmp_path, reference):
    out, env = tmp_path / "run", {**os.environ, "BENCHLAB_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "benchlab.cli", "run", "suites/bn_vs_plain.yaml",
               *[f"--set={s}" for s in SUITE], "--device", "cpu", "--out", str(out),
               "--checkpoint-every", str(EVERY)]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    seen: dict[str, set[float]] = {}
    deadline = time.monotonic() + 300
    # the slower run, cnn_bn, writes its 4th checkpoint at step 60: epoch 2, batch 13 of 47
    # (cnn, twice as fast, may be in epoch 3 or even finished by then)
    while _updates(out / "checkpoints", seen, "cnn_bn") < 4 and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert _updates(out / "checkpoints", seen, "cnn_bn") >= 4, "no checkpoint written in time"
    assert not (out / "jobs" / "train-cnn_bn-r00.json").exists()  # killed before its end
    cnn_finished = (out / "jobs" / "train-cnn-r00.json").exists()

    again = subprocess.run([sys.executable, "-m", "benchlab.cli", "run", "--resume", str(out),
                            "--device", "cpu", "--checkpoint-every", str(EVERY)],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    lines = {line.split(":")[0]: line for line in again.stderr.splitlines()
             if "continuing from its checkpoint" in line}
    assert set(lines) == {"train-cnn_bn-r00"} | (set() if cnn_finished else {"train-cnn-r00"})
    # where cnn_bn was killed: in epoch 2 (or, on a slow poll, right after it)
    assert "after epoch 1 of 3, step" in lines["train-cnn_bn-r00"] \
        or "after epoch 2 of 3" in lines["train-cnn_bn-r00"], lines
    pd.testing.assert_frame_equal(_measurements(out), _measurements(reference / "run"))
    _assert_same_weights(_weights(tmp_path / "cache"), _weights(reference / "cache"))
    assert not (out / "checkpoints").exists()  # removed as each job finished


@pytest.mark.slow
def test_a_dask_worker_killed_mid_epoch_hands_its_checkpoint_to_the_retry(tmp_path, reference):
    distributed = pytest.importorskip("distributed")
    import dask

    from benchlab.executors.dask import DaskExecutor

    streamed: dict[str, int] = {}
    written: set[str] = set()
    killed: list[str] = []

    with dask.config.set({"distributed.scheduler.allowed-failures": 2}), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                     dashboard_address=None, silence_logs=50) as cluster, \
            distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
        make = DaskExecutor.factory("cpu", scheduler=cluster.scheduler_address)

        def executor(**kw):
            def on_epoch(job_id, record):
                streamed[job_id] = streamed.get(job_id, 0) + 1
                kw["on_epoch"](job_id, record)

            def on_checkpoint(job_id, blob):
                written.add(job_id)
                kw["on_checkpoint"](job_id, blob)
                if job_id == "train-cnn_bn-r00" and not killed and streamed.get(job_id) == 1:
                    # its checkpoint after epoch 1 is on disk: kill its worker in epoch 2
                    threading.Thread(target=kill, args=(job_id,), daemon=True).start()
            return make(**{**kw, "on_epoch": on_epoch, "on_checkpoint": on_checkpoint})

        def kill(job_id: str) -> None:
            time.sleep(0.5)
            for address, keys in client.processing().items():
                if any(str(k).startswith(job_id) for k in keys):
                    os.kill(client.run(os.getpid, workers=[address])[address], signal.SIGKILL)
                    killed.append(address)

        outcome = runner.run_suite(_suite(), default_registry(), tmp_path / "run",
                                   device="cpu", cache=ModelCache(tmp_path / "cache"),
                                   log=lambda s: None, executor=executor)
    assert killed, "the worker training cnn_bn was not found"
    assert not outcome.failed, outcome.failed
    assert written == {"train-cnn-r00", "train-cnn_bn-r00"}  # the client received them
    # the retry started from the checkpoint after epoch 1: no epoch was trained twice
    assert streamed == {"train-cnn-r00": 3, "train-cnn_bn-r00": 3}
    pd.testing.assert_frame_equal(_measurements(tmp_path / "run"),
                                  _measurements(reference / "run"))
    _assert_same_weights(_weights(tmp_path / "cache"), _weights(reference / "cache"))
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("damage", ["flip", "delete_meta", "other_model", "junk_with_digest"])
def test_a_damaged_checkpoint_is_named_and_the_job_trains_from_its_first_epoch(
        tmp_path, mnist_root, damage):
    import hashlib

    out = tmp_path / "run"
    suite = load_suite(str(ROOT / "suites" / "bn_vs_plain.yaml"), default_registry(),
                       [*SUITE, "dataset.train_size=640", "models=[{name: cnn}]"])
    (job,) = [j for j in expand(suite) if j.kind == "train"]
    key = model_key(model_identity(job, default_registry(), "cpu"))
    # a valid checkpoint after epoch 1, from a run that trains one epoch of three
    seen = []
    first = runner.run_suite(suite, default_registry(), tmp_path / "first", device="cpu",
                             cache=ModelCache(tmp_path / "c1"), log=lambda s: None,
                             executor=_recording(seen))
    assert not first.failed and seen
    runner.run_suite(suite, default_registry(), out, device="cpu",
                     cache=ModelCache(tmp_path / "c2"), log=lambda s: None, checkpoint=False,
                     executor=_failing_after_plan)  # a run directory with nothing finished
    store = Checkpoints(out)
    store.save(job.id, seen[0], key)
    data, meta = out / "checkpoints" / f"{job.id}.pt", out / "checkpoints" / f"{job.id}.json"
    if damage == "flip":
        blob = bytearray(data.read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        data.write_bytes(bytes(blob))
        expected = "does not match its digest"
    elif damage == "delete_meta":
        meta.unlink()
        expected = "is missing"
    elif damage == "other_model":
        store.save(job.id, seen[0], "0" * 64)
        expected = "belongs to another model"
    else:  # forged: junk with a matching digest still has to load as a checkpoint
        data.write_bytes(b"junk")
        info = json.loads(meta.read_text())
        meta.write_text(json.dumps({**info, "sha256": hashlib.sha256(b"junk").hexdigest()}))
        expected = "is not a readable checkpoint"
    logged: list[str] = []
    outcome = runner.run_suite(suite, default_registry(), out, device="cpu", resume=True,
                               cache=ModelCache(tmp_path / "c2"), log=logged.append)
    assert not outcome.failed
    (line,) = [m for m in logged if "checkpoint" in m]
    assert line.startswith(f"damaged checkpoint of {job.id}: ") and expected in line, line
    assert line.endswith("training it from its first epoch") and "\n" not in line
    pd.testing.assert_frame_equal(_measurements(out), _measurements(tmp_path / "first"))
    assert not (out / "checkpoints").exists()


def _recording(seen: list[bytes]):
    from benchlab.executors.local import LocalExecutor

    def executor(**kw):
        def on_checkpoint(job_id, blob):
            seen.append(blob)
            kw["on_checkpoint"](job_id, blob)
        return LocalExecutor(**{**kw, "on_checkpoint": on_checkpoint})
    return executor


def _failing_after_plan(**kw):
    from benchlab.executors.local import LocalExecutor

    class Nothing(LocalExecutor):
        def submit(self, task):  # noqa: D102 - runs nothing: every job stays unfinished
            pass

    return Nothing(**kw)
