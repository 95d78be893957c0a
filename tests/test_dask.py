"""The Dask executor on a real LocalCluster (2 worker processes, 1 thread each) and real MNIST.

The cluster is started once for the module; every run connects to it through its
scheduler address, as a run on a remote cluster would.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from benchlab import runner
from benchlab.cache import ModelCache
from benchlab.jobs import expand
from benchlab.plugins import default_registry
from benchlab.suite import load_suite

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"epoch_time_s", "images_per_s", "attack_time_s", "explain_images_per_s"}
# 2 seeds of one model, one attack, one explainer: every kind of job and a dependency chain
SMALL = ["dataset.train_size=1000", "dataset.test_size=300", "train.epochs=1", "train.runs=2",
         "models=[{name: cnn}]", "attacks=[{name: fgsm, eps: [0.1, 0.3]}]",
         "evaluate.test_size=200", "evaluate.explain_size=50", "evaluate.count=5"]


def _suite(*extra: str):
    return load_suite(str(ROOT / "suites" / "fgsm_gradcam.yaml"), default_registry(),
                      [*SMALL, *extra])


def _measurements(out: Path) -> pd.DataFrame:
    frame = pd.read_csv(out / "results.csv")
    frame = frame[~frame["metric"].isin(TIMING)]
    return frame.sort_values(list(frame.columns[:-1]), na_position="first").reset_index(drop=True)


@pytest.fixture(scope="module")
def cluster():
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 2}):
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      dashboard_address=None, silence_logs=50) as c:
            yield c


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    outcome = runner.run_suite(_suite(), default_registry(), out, device="cpu",
                               cache=ModelCache(out / "cache"), log=lambda s: None)
    assert not outcome.failed
    return out


def _dask(cluster):
    from benchlab.executors.dask import DaskExecutor

    return DaskExecutor.factory("cpu", scheduler=cluster.scheduler_address)


@pytest.mark.slow
def test_dask_run_gives_the_local_results(tmp_path, cluster, local_reference):
    out = tmp_path / "dask"
    env = {**os.environ, "BENCHLAB_CACHE": str(tmp_path / "cache")}
    args = [f"--set={s}" for s in SMALL]
    result = subprocess.run(
        [sys.executable, "-m", "benchlab.cli", "run", "suites/fgsm_gradcam.yaml", *args,
         "--device", "cpu", "--out", str(out), "--executor", "dask",
         "--scheduler", cluster.scheduler_address],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    pd.testing.assert_frame_equal(_measurements(out), _measurements(local_reference))
    jobs = pd.read_csv(out / "jobs.csv")
    workers = set(cluster.scheduler_info["workers"])
    ran_on = {where.split(" ")[0] for where in jobs["where"]}
    assert ran_on <= workers and len(jobs) == len(expand(_suite()))
    # stderr is a pipe: one line per finished job instead of a progress bar
    assert sum(line.startswith("done ") for line in result.stderr.splitlines()) == len(jobs)
    # the client wrote the model cache: a second run trains nothing
    again = runner.run_suite(_suite(), default_registry(), tmp_path / "again", device="cpu",
                             cache=ModelCache(tmp_path / "cache"), log=lambda s: None)
    assert not again.failed
    train = pd.read_csv(tmp_path / "again" / "jobs.csv").query("kind == 'train'")
    assert (train["where"] == "model cache").all()  # served by the cache, not trained


@pytest.mark.slow
def test_a_worker_killed_mid_job_loses_nothing(tmp_path, cluster, local_reference):
    client = distributed.Client(cluster.scheduler_address, set_as_default=False)
    killed: list[str] = []

    def kill_a_training_worker() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for address, keys in client.processing().items():
                if any(str(k).startswith("train-") for k in keys):
                    time.sleep(1.0)  # well into the epoch
                    pid = client.run(os.getpid, workers=[address])[address]
                    os.kill(pid, signal.SIGKILL)
                    killed.append(address)
                    return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_a_training_worker, daemon=True)
    killer.start()
    try:
        outcome = runner.run_suite(_suite(), default_registry(), tmp_path / "out",
                                   device="cpu", cache=ModelCache(tmp_path / "cache"),
                                   log=lambda s: None, executor=_dask(cluster))
    finally:
        killer.join(timeout=5)
    assert killed, "no training task was seen running"
    assert not outcome.failed and len(outcome.ran) == len(expand(_suite()))
    pd.testing.assert_frame_equal(_measurements(tmp_path / "out"), _measurements(local_reference))
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it
    client.close()


@pytest.mark.slow
def test_a_run_alone_gives_what_it_gives_in_a_pack(tmp_path, local_reference):
    """Seed 1 trained alone (runs=1) equals seed 1 trained in a pack of two (runs=2),
    which the test above pins equal to seed 1 trained on a worker."""
    alone = runner.run_suite(_suite("train.runs=1"), default_registry(), tmp_path / "alone",
                             device="cpu", cache=ModelCache(tmp_path / "cache"),
                             log=lambda s: None)
    assert not alone.failed
    packed = _measurements(local_reference)
    packed = packed[packed["run"] == 0].reset_index(drop=True)
    one = _measurements(tmp_path / "alone")
    assert len(one) > 0 and set(one["metric"]) >= {"test_acc", "accuracy", "cam_similarity"}
    pd.testing.assert_frame_equal(one, packed)


def test_unreachable_scheduler_is_one_line_and_exit_2(tmp_path):
    env = {**os.environ, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "benchlab.cli", "run", "suites/bn_vs_plain.yaml",
         "--executor", "dask", "--scheduler", "tcp://127.0.0.1:9", "--out", str(tmp_path / "o")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "benchlab: --scheduler tcp://127.0.0.1:9: no Dask scheduler reachable there within "
        "2 s (OSError)"]
    assert time.monotonic() - started < 60
    assert not (tmp_path / "o" / "suite.yaml").exists()  # nothing of a run was written


def test_a_scheduler_file_is_read_and_cuda_without_a_gpu_worker_is_refused(tmp_path, cluster):
    from benchlab.executors.dask import DaskExecutor, ExecutorError

    file = tmp_path / "scheduler.json"
    file.write_text(f'{{"address": "{cluster.scheduler_address}", "type": "Scheduler"}}')
    executor = DaskExecutor("cpu", scheduler=str(file))
    try:
        assert set(executor.describe()["workers"]) == set(cluster.scheduler_info["workers"])
        assert executor.device_type == "cpu"
    finally:
        executor.close()
    with pytest.raises(ExecutorError, match="no worker of the cluster advertises a GPU"):
        DaskExecutor("cuda", scheduler=cluster.scheduler_address)


def test_without_dask_the_executor_says_what_to_install(monkeypatch):
    from benchlab.executors import dask as dask_executor

    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(dask_executor.ExecutorError, match=r"pip install 'benchlab\[dask\]'"):
        dask_executor.DaskExecutor("cpu")


@pytest.mark.slow
def test_ctrl_c_stops_the_cluster_it_started_and_resume_completes(tmp_path, local_reference):
    """Ctrl-C in a terminal reaches the whole foreground process group: the client and
    the LocalCluster's worker processes. The run must stop in one message, leave no
    process behind, and resume to the results of an uninterrupted run."""
    out = tmp_path / "interrupted"
    env = {**os.environ, "BENCHLAB_CACHE": str(tmp_path / "cache")}
    args = ["run", "suites/fgsm_gradcam.yaml", *[f"--set={s}" for s in SMALL],
            "--device", "cpu", "--executor", "dask", "--workers", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchlab.cli", *args, "--out", str(out)], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    group = proc.pid  # start_new_session: the group of the run and of its workers
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if list((out / "jobs").glob("*.json")):  # a job is done, others are running
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1]
    os.killpg(group, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    # nothing on screen but the finished jobs and the interruption: no worker's traceback,
    # no log line of Dask's
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert all(line.startswith("done ") for line in lines[:-1]), stderr
    assert lines[-1].startswith("benchlab: interrupted;"), stderr
    hint = lines[-1].split("Continue with: ")[1]
    assert hint == f"benchlab run --resume {out} --device cpu --executor dask --workers 2"
    assert stdout.strip().splitlines()[-1] == str(out)
    deadline = time.monotonic() + 30  # the workers' processes end with the run
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    else:
        os.killpg(group, signal.SIGKILL)
        pytest.fail("worker processes outlived the interrupted run")

    resumed = subprocess.run([sys.executable, "-m", "benchlab.cli", *shlex.split(hint)[1:]],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "already done" in resumed.stderr
    pd.testing.assert_frame_equal(_measurements(out), _measurements(local_reference),
                                  check_exact=False, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_workers_of_a_cluster_benchlab_starts_ignore_ctrl_c_even_after_a_restart():
    from benchlab.executors.dask import DaskExecutor

    def state():
        import os
        import signal
        return os.getpid(), signal.getsignal(signal.SIGINT) == signal.SIG_IGN

    import dask

    from benchlab.executors.dask import LOST_WORKER_TIMEOUT

    before = dask.config.get("distributed.deploy.lost-worker-timeout")
    executor = DaskExecutor("cpu", workers=1)
    try:
        # the cluster waits for a slow restart instead of closing the nanny after 15 s
        assert dask.config.get("distributed.deploy.lost-worker-timeout") == LOST_WORKER_TIMEOUT
        ((pid, ignored),) = executor.client.run(state).values()
        assert ignored
        os.kill(pid, signal.SIGKILL)  # the nanny starts a new worker process
        deadline, now = time.monotonic() + 60, None
        while time.monotonic() < deadline and now is None:
            try:
                got = list(executor.client.run(state).values())
            except Exception:  # noqa: BLE001 - the worker is still coming back
                got = []
            if got and got[0][0] != pid:
                now = got[0]
            time.sleep(0.5)
        assert now is not None, "the worker was not restarted"
        assert now[1], "a restarted worker would die of Ctrl-C"
    finally:
        executor.close()
    assert dask.config.get("distributed.deploy.lost-worker-timeout") == before
