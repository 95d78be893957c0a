"""Chaos on a real cluster: worker processes killed with SIGKILL while a suite runs.

A ``LocalCluster`` of 2 single-threaded worker processes, started by the
DaskExecutor, runs 24 jobs (train, attack and explain jobs on a small slice of
real MNIST) while a thread kills a random busy worker every few seconds. The
run must complete and give the local executor's results; a job may fail only
by running out of retries, and then its message says how many times its
worker died.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pandas as pd
import pytest

from benchlab import runner
from benchlab.cache import ModelCache
from benchlab.executors.deaths import WorkerDeaths
from benchlab.jobs import expand
from benchlab.plugins import default_registry
from benchlab.suite import load_suite
from benchlab.testing.chaos import Chaos

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"epoch_time_s", "images_per_s", "attack_time_s", "explain_images_per_s",
          "step_eval_time_s"}
# 2 models x 4 seeds, each trained, attacked and explained: 24 jobs of about a second
CHAOS = ["dataset.train_size=500", "dataset.test_size=100", "train.epochs=1", "train.runs=4",
         "attacks=[{name: fgsm, eps: [0.1, 0.3]}]", "explainers=[{name: gradcam}]",
         "evaluate.test_size=100", "evaluate.explain_size=8", "evaluate.count=4"]
KILLS = 4  # at most, one every EVERY seconds, each while the victim is running a job
EVERY = 3.0
RETRIES = 3  # a job fails only if all KILLS kills hit it: all ok is the expected outcome
DIED = re.compile(r"^(?:its worker died (\d+) times?)?(?: and )?(?:the worker holding its "
                  r"inputs died (\d+) times?)? \(allowed: (\d+) retr(?:y|ies)\)")


def _suite(*overrides: str):
    return load_suite(str(ROOT / "suites" / "fgsm_gradcam.yaml"), default_registry(),
                      list(overrides))


def _measurements(out: Path, jobs: set[str] | None = None) -> pd.DataFrame:
    frame = pd.read_csv(out / "results.csv")
    frame = frame[~frame["metric"].isin(TIMING)]
    if jobs is not None:
        frame = frame[frame["job"].isin(jobs)]
    return frame.sort_values(list(frame.columns[:-1]), na_position="first").reset_index(drop=True)


def _chaotic(chaos_of, **options):
    """An executor factory for run_suite: a DaskExecutor with a Chaos thread on its cluster,
    stopped before the cluster is shut down."""
    from benchlab.executors.dask import DaskExecutor

    class ChaoticExecutor(DaskExecutor):
        def close(self) -> None:
            self.chaos.stop()
            super().close()

    made: list[ChaoticExecutor] = []

    def make(*, on_epoch=None, **_):
        executor = ChaoticExecutor("cpu", on_epoch=on_epoch, **options)
        executor.client.wait_for_workers(options.get("workers", 1), timeout=60)
        executor.chaos = chaos_of(executor.client.scheduler.address)
        executor.chaos.start()
        made.append(executor)
        return executor

    return make, made


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory, mnist_root):
    out = tmp_path_factory.mktemp("local")
    outcome = runner.run_suite(_suite(*CHAOS), default_registry(), out, device="cpu",
                               cache=ModelCache(out / "cache"), log=lambda s: None)
    assert not outcome.failed
    return out


@pytest.mark.slow
def test_a_run_survives_workers_killed_every_few_seconds(tmp_path, local_reference):
    pytest.importorskip("distributed")
    suite = _suite(*CHAOS)
    jobs = {job.id: job for job in expand(suite)}
    assert len(jobs) >= 20
    make, made = _chaotic(
        lambda address: Chaos(address, workers=2, kills=KILLS, every=EVERY, seconds=90),
        workers=2, retries=RETRIES)
    started = time.monotonic()
    outcome = runner.run_suite(suite, default_registry(), tmp_path / "out", device="cpu",
                               cache=ModelCache(tmp_path / "cache"), log=lambda s: None,
                               executor=make)
    seconds = time.monotonic() - started
    (executor,) = made
    chaos = executor.chaos
    assert chaos.error is None, chaos.error
    assert chaos.killed, f"no worker was killed while running a job in {seconds:.0f} s"
    assert executor.deaths.workers_lost >= len(chaos.killed)
    assert executor.deaths.hit(), "kills landed, yet no task was run again"

    # every job ends: ok, or failed by running out of retries (and its dependants with it)
    status = pd.read_csv(tmp_path / "out" / "jobs.csv").set_index("id")
    assert set(status.index) == set(jobs)
    died = {j for j, message in outcome.failed.items() if DIED.match(message)}
    for job_id, message in outcome.failed.items():
        job = jobs[job_id]
        assert job_id in died or message in {f"not run: {dep} failed" for dep in died
                                             if dep in (job.train_job, job.attack_job)}, \
            (job_id, message)
    for job_id in died:
        match = DIED.match(outcome.failed[job_id])
        assert int(match[1] or 0) + int(match[2] or 0) > int(match[3]), outcome.failed[job_id]
    ok = set(jobs) - set(outcome.failed)
    assert set(status.index[status["status"] == "ok"]) == ok
    pd.testing.assert_frame_equal(_measurements(tmp_path / "out"),
                                  _measurements(local_reference, ok))
    print(f"chaos: {len(chaos.killed)} kills, {len(executor.deaths.hit())} tasks run again, "
          f"{len(outcome.failed)} failed, {seconds:.0f} s")


@pytest.fixture(scope="module")
def one_worker():
    """A cluster of one worker: a job's input lives where the job runs, and dies with it."""
    distributed = pytest.importorskip("distributed")
    import dask

    # as the DaskExecutor's own cluster: a killed worker's nanny is not closed while the
    # restarted worker is still importing torch on a loaded machine (Dask's 15 s)
    from benchlab.executors.dask import LOST_WORKER_TIMEOUT

    with dask.config.set({"distributed.scheduler.allowed-failures": 1,
                          "distributed.deploy.lost-worker-timeout": LOST_WORKER_TIMEOUT}):
        with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                      dashboard_address=None, silence_logs=50) as cluster:
            yield cluster


def _snipe(one_worker, out: Path, *, aim: str, kills: int, retries: int):
    """One seed of one model (its jobs run one after the other) on ``one_worker``, its
    worker killed whenever it runs the job ``aim``, ``kills`` times."""
    suite = _suite(*CHAOS, "models=[{name: cnn}]", "train.runs=1")
    make, made = _chaotic(
        lambda address: Chaos(address, workers=1, kills=kills, every=0.5, aim=aim,
                              seconds=120),
        scheduler=one_worker.scheduler_address, retries=retries)
    outcome = runner.run_suite(suite, default_registry(), out, device="cpu",
                               cache=ModelCache(out.parent / "cache"), log=lambda s: None,
                               executor=make)
    (executor,) = made
    assert executor.chaos.error is None, executor.chaos.error
    assert [keys[0].rsplit("-", 1)[0] for _, keys in executor.chaos.killed] == [aim] * kills
    return outcome, executor


@pytest.mark.slow
def test_a_job_whose_worker_keeps_dying_says_how_many_times(tmp_path, one_worker):
    # the scheduler's allowed-failures (1) counts here
    outcome, _ = _snipe(one_worker, tmp_path / "out", aim="train-cnn-r00", kills=2, retries=5)
    message = outcome.failed["train-cnn-r00"]
    assert re.fullmatch(r"its worker died 2 times \(allowed: 1 retry\); the last was "
                        r"tcp://127\.0\.0\.1:\d+", message), message
    assert outcome.failed == {"train-cnn-r00": message,
                              "attack-cnn-r00-fgsm": "not run: train-cnn-r00 failed",
                              "explain-cnn-r00-fgsm-gradcam": "not run: train-cnn-r00 failed"}


@pytest.mark.slow
def test_weights_lost_with_a_worker_are_sent_again(tmp_path, one_worker, local_reference):
    """The attack dies with the weights it reads; it is resubmitted with the weights
    scattered again, and the explain job, given the runner's handle on the lost
    weights later, gets the new ones."""
    outcome, executor = _snipe(one_worker, tmp_path / "out", aim="attack-cnn-r00-fgsm",
                               kills=1, retries=1)
    assert not outcome.failed
    assert executor.deaths.lost and executor.deaths.hit() == ["attack-cnn-r00-fgsm"]
    ids = {"train-cnn-r00", "attack-cnn-r00-fgsm", "explain-cnn-r00-fgsm-gradcam"}
    pd.testing.assert_frame_equal(_measurements(tmp_path / "out"),
                                  _measurements(local_reference, ids))


@pytest.mark.slow
def test_a_job_whose_weights_keep_dying_says_how_many_times(tmp_path, one_worker):
    outcome, _ = _snipe(one_worker, tmp_path / "out", aim="attack-cnn-r00-fgsm", kills=2,
                        retries=1)
    assert outcome.failed == {
        "attack-cnn-r00-fgsm": "its worker died 2 times (allowed: 1 retry)",
        "explain-cnn-r00-fgsm-gradcam": "not run: attack-cnn-r00-fgsm failed"}


# ------------------------------------------------------------------ the counting, alone

def _removed(processing=(), lost=(), expected=False):
    return (0.0, {"action": "remove-worker", "processing-tasks": set(processing),
                  "lost-scattered-tasks": set(lost), "expected": expected,
                  "worker": "tcp://127.0.0.1:1"})


def test_worker_deaths_are_counted_per_task_over_all_its_keys():
    deaths = WorkerDeaths()
    deaths.watch("attack-a-1", "attack-a", ["weights-1"])
    deaths.watch("attack-b-1", "attack-b", ["weights-1"])
    deaths.on_event((0.0, {"action": "add-worker"}))
    deaths.on_event(_removed(expected=True, processing=["attack-a-1"]))  # retired: no death
    deaths.on_event(_removed(processing=["attack-a-1"]))
    # the worker holding the weights dies: a-1 ran there, b-1 only lost its input
    deaths.on_event(_removed(processing=["attack-a-1"], lost=["weights-1"]))
    assert deaths.of("attack-a") == (2, 0) and deaths.of("attack-b") == (0, 1)
    assert deaths.lost == {"weights-1"} and deaths.workers_lost == 2
    deaths.done("attack-b-1")
    deaths.watch("attack-b-2", "attack-b", ["weights-2"])  # resubmitted, weights scattered again
    deaths.on_event(_removed(processing=["attack-b-2"]))
    deaths.on_event(_removed(processing=["attack-b-1"]))  # an old key: no longer counted
    assert deaths.of("attack-b") == (1, 1)
    assert deaths.message("attack-b", allowed=2) == (
        "its worker died 1 time and the worker holding its inputs died 1 time "
        "(allowed: 2 retries)")
    # Dask gives up on a key before the event of the death that made it give up arrives
    assert deaths.message("attack-a", allowed=2, killed="attack-a-1") == \
        "its worker died 3 times (allowed: 2 retries)"
    assert deaths.hit() == ["attack-a", "attack-b"]
    assert deaths.message("never-hit", allowed=1) == "its worker died 0 times (allowed: 1 retry)"
