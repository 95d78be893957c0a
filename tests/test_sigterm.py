"""SIGTERM, what a batch system sends before it kills a job, stops a run as Ctrl-C does:
finished jobs kept, the resume command printed, the directory released; exit 143."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from benchlab.jobs import expand
from benchlab.lock import LOCK_NAME
from benchlab.plugins import default_registry
from benchlab.suite import load_suite

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"epoch_time_s", "images_per_s", "attack_time_s", "explain_images_per_s"}
TOY = """\
name: toy
dataset: {name: toy, train_size: 96, test_size: 64}
models: [{name: tiny}]
train: {runs: 2, epochs: 1, batch_size: 32}
attacks: [{name: slow_noise, eps: [0.1]}]
explainers: [{name: intensity}]
evaluate: {test_size: 32, explain_size: 16, count: 4}
"""


def _toy_cli(*args: str, env: dict[str, str], pause: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "tests" / "toy_cli.py"), *args],
                            cwd=ROOT, env={**os.environ, **env, "BENCHLAB_TEST_PAUSE": str(pause)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _measurements(out: Path) -> pd.DataFrame:
    frame = pd.read_csv(out / "results.csv")
    frame = frame[~frame["metric"].isin(TIMING)].drop(columns=["job"])
    return frame.sort_values(list(frame.columns[:-1]), na_position="first").reset_index(drop=True)


def _wait_for_jobs(out: Path, proc: subprocess.Popen, count: int, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((out / "jobs").glob("*.json"))) >= count:
            return
        time.sleep(0.1)
    pytest.fail(f"the run ended or stalled before {count} jobs finished: "
                f"{proc.communicate()[1] if proc.poll() is not None else ''}")


def _the_one_line(stderr: str) -> str:
    """The stderr of an interrupted run, less the lines of the jobs that finished."""
    assert "Traceback" not in stderr, stderr
    [line] = [line for line in stderr.splitlines()
              if line.strip() and not line.startswith("done ")]
    return line


def test_sigterm_keeps_finished_jobs_prints_the_resume_command_and_exits_143(tmp_path):
    suite = tmp_path / "toy.yaml"
    suite.write_text(TOY)
    env = {"BENCHLAB_CACHE": str(tmp_path / "cache")}
    reference = _toy_cli("run", str(suite), "--out", str(tmp_path / "reference"),
                         "--device", "cpu", env=env, pause=0)
    assert reference.wait(timeout=300) == 0, reference.communicate()[1]

    out = tmp_path / "terminated"
    proc = _toy_cli("run", str(suite), "--out", str(out), "--device", "cpu",
                    env={"BENCHLAB_CACHE": str(tmp_path / "other-cache")}, pause=3)
    _wait_for_jobs(out, proc, 2)  # both models trained: an attack is in its pause
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    line = _the_one_line(stderr)
    kept = pd.read_csv(out / "jobs.csv")
    assert len(kept) >= 2 and (kept["status"] == "ok").all()
    assert line == (f"benchlab: terminated (SIGTERM); {len(kept)} finished job(s) are kept in "
                    f"{out}. Continue with: benchlab run --resume {out} --device cpu")
    assert stdout.strip().splitlines()[-1] == str(out)
    assert not (out / LOCK_NAME).exists()

    hint = line.split("Continue with: ")[1]
    resumed = _toy_cli(*shlex.split(hint)[1:], env=env, pause=0)
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert f"{len(kept)} already done" in stderr
    pd.testing.assert_frame_equal(_measurements(out), _measurements(tmp_path / "reference"))


def test_sigterm_outside_a_run_is_one_line_and_143(tmp_path):
    """A command other than run (here: a validate waiting on its input) ends the same way."""
    fifo = tmp_path / "suite.yaml"
    os.mkfifo(fifo)
    proc = subprocess.Popen([sys.executable, "-m", "benchlab.cli", "validate", str(fifo)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while True:  # a writer can open the pipe once the command has opened it to read
        try:
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
    try:
        proc.send_signal(signal.SIGTERM)  # it waits for the suite's text
        _, stderr = proc.communicate(timeout=60)
    finally:
        os.close(writer)
    assert proc.returncode == 143
    assert stderr.strip().splitlines() == ["benchlab: terminated (SIGTERM)"]


DASK_SMALL = ["dataset.train_size=1000", "dataset.test_size=300", "train.epochs=1",
              "train.runs=2", "models=[{name: cnn}]", "attacks=[{name: fgsm, eps: [0.1, 0.3]}]",
              "evaluate.test_size=200", "evaluate.explain_size=50", "evaluate.count=5"]


@pytest.mark.slow
@pytest.mark.parametrize("to", ["the client", "the process group"])
def test_sigterm_stops_a_dask_run_and_its_cluster_in_order(tmp_path, to):
    """``kill -TERM PID`` reaches the client alone; a batch system may signal every
    process of the job, the LocalCluster's workers included. Either way the client
    shuts the cluster down, says how to resume, and the resumed run completes."""
    pytest.importorskip("distributed")
    out = tmp_path / "terminated"
    env = {**os.environ, "BENCHLAB_CACHE": str(tmp_path / "cache")}
    args = ["run", "suites/fgsm_gradcam.yaml", *[f"--set={s}" for s in DASK_SMALL],
            "--device", "cpu", "--executor", "dask", "--workers", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "benchlab.cli", *args, "--out", str(out)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    group = proc.pid  # start_new_session: the group of the run and of its workers
    _wait_for_jobs(out, proc, 1)
    if to == "the client":
        proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(group, signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    line = _the_one_line(stderr)
    assert line.startswith("benchlab: terminated (SIGTERM);")
    hint = line.split("Continue with: ")[1]
    assert hint == f"benchlab run --resume {out} --device cpu --executor dask --workers 2"
    assert not (out / LOCK_NAME).exists()
    deadline = time.monotonic() + 30  # the workers' processes end with the run
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    else:
        os.killpg(group, signal.SIGKILL)
        pytest.fail("worker processes outlived the terminated run")

    resumed = subprocess.run([sys.executable, "-m", "benchlab.cli", *shlex.split(hint)[1:]],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "already done" in resumed.stderr
    suite = load_suite(str(ROOT / "suites" / "fgsm_gradcam.yaml"), default_registry(),
                       DASK_SMALL)
    jobs = pd.read_csv(out / "jobs.csv")
    assert len(jobs) == len(expand(suite)) and (jobs["status"] == "ok").all()
