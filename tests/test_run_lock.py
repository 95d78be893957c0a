"""One process writes a run directory at a time: two runs started at once leave one
run and one clean error; a lock left by a dead process is taken over."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from benchlab import cli, execute
from benchlab.lock import LOCK_NAME, Holder, LockHeld, RunLock, _boot_id, _start_ticks

ROOT = Path(__file__).resolve().parents[1]
TOY = """\
name: toy
dataset: {name: toy, train_size: 96, test_size: 64}
models: [{name: tiny}]
train: {runs: 1, epochs: 1, batch_size: 32}
attacks: [{name: slow_noise, eps: [0.1]}]
explainers: [{name: intensity}]
evaluate: {test_size: 32, explain_size: 16, count: 4}
"""


def _toy_cli(*args: str, env: dict[str, str], pause: float = 0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "tests" / "toy_cli.py"), *args],
                            cwd=ROOT, env={**os.environ, **env,
                                           "BENCHLAB_TEST_PAUSE": str(pause)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(autouse=True)
def _own_model_cache(isolated_cache):
    """Each test trains its models into its own cache (the first run's lines say so)."""
    return isolated_cache


def _lines(text: str) -> list[str]:
    return [line for line in text.strip().splitlines()
            if line.strip() and not line.startswith("done ")]


@pytest.fixture
def toy_suite(tmp_path):
    suite = tmp_path / "toy.yaml"
    suite.write_text(TOY)
    return suite


@pytest.fixture
def toy_cli(monkeypatch, toy_suite):
    sys.path.insert(0, str(ROOT / "tests"))
    import toy_cli as module

    registry = module.registry()
    monkeypatch.setattr(cli, "_registry", lambda: registry)
    monkeypatch.setenv("BENCHLAB_TEST_PAUSE", "0")
    return toy_suite


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _write_lock(directory: Path, holder: Holder) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    path.write_text(holder.to_json())
    return path


def _holder(pid: int, **kw) -> Holder:
    return Holder(pid, kw.pop("host", socket.gethostname()), "2025-01-01T00:00:00Z",
                  "benchlab run", kw.pop("boot", None), kw.pop("ticks", _start_ticks(pid)),
                  "0123456789abcdef")


def test_two_runs_started_at_once_on_one_out_leave_one_run_and_one_error(tmp_path, toy_suite):
    out = tmp_path / "out"
    env = {"BENCHLAB_CACHE": str(tmp_path / "cache")}
    # the same suite but for its eps: a mixed directory would show both
    first = _toy_cli("run", str(toy_suite), "--out", str(out), "--device", "cpu",
                     env=env, pause=3)
    second = _toy_cli("run", str(toy_suite), "--set", "attacks.0.eps=[0.2]", "--out", str(out),
                      "--device", "cpu", env=env, pause=3)
    outputs = {proc: proc.communicate(timeout=300) for proc in (first, second)}
    assert sorted(proc.returncode for proc in outputs) == [0, 2], outputs
    winner = first if first.returncode == 0 else second
    loser = second if winner is first else first
    [line] = _lines(outputs[loser][1])
    assert line.startswith(f"benchlab: {out}: in use by another benchlab process "
                           f"(pid {winner.pid}@{socket.gethostname()}, benchlab run since ")
    assert line.endswith("wait for it to finish, or stop it, and try again")

    # one coherent run: the winner's suite, and only its jobs and its eps
    eps = 0.1 if winner is first else 0.2
    assert yaml.safe_load((out / "suite.yaml").read_text())["attacks"][0]["eps"] == [eps]
    results = pd.read_csv(out / "results.csv")
    assert set(results["eps"].dropna()) == {0.0, eps}  # 0: the clean images
    jobs = pd.read_csv(out / "jobs.csv")
    assert sorted(jobs["id"]) == ["attack-tiny-r00-slow_noise",
                                   "explain-tiny-r00-slow_noise-intensity", "train-tiny-r00"]
    assert (jobs["status"] == "ok").all()
    assert not (out / LOCK_NAME).exists()  # released at the end


@pytest.mark.slow
def test_a_run_starting_a_dask_cluster_has_claimed_its_directory_before(tmp_path):
    """The case that mixed two runs: one of them starts a LocalCluster first, which
    takes seconds; the directory is claimed before the cluster starts."""
    out = tmp_path / "out"
    env = {**os.environ, "BENCHLAB_CACHE": str(tmp_path / "cache")}
    small = ["dataset.train_size=300", "dataset.test_size=100", "train.runs=1",
             "train.epochs=1", "train.eval_every=null", "models=[{name: cnn}]"]
    args = ["run", "suites/bn_vs_plain.yaml", *[f"--set={s}" for s in small],
            "--device", "cpu", "--out", str(out)]
    procs = [subprocess.Popen([sys.executable, "-m", "benchlab.cli", *args, *extra], cwd=ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
             for extra in (["--executor", "dask", "--workers", "2"], ["--set=train.seed=7"])]
    outputs = {proc: proc.communicate(timeout=600) for proc in procs}
    assert sorted(proc.returncode for proc in procs) == [0, 2], outputs
    winner, loser = sorted(procs, key=lambda proc: proc.returncode)
    [line] = _lines(outputs[loser][1])
    assert f"benchlab: {out}: in use by another benchlab process (pid {winner.pid}@" in line
    seed = 1 if winner is procs[0] else 7
    assert yaml.safe_load((out / "suite.yaml").read_text())["train"]["seed"] == seed
    assert set(pd.read_csv(out / "results.csv")["seed"]) == {seed}


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_note(toy_cli, tmp_path, capsys):
    out = tmp_path / "out"
    pid = _dead_pid()
    _write_lock(out, _holder(pid, ticks=None))  # killed before it wrote anything else
    assert cli.main(["run", str(toy_cli), "--out", str(out), "--device", "cpu"]) == 0
    err = _lines(capsys.readouterr().err)
    assert err[0] == (f"benchlab: {out}: took over the lock of pid {pid}@"
                      f"{socket.gethostname()}, benchlab run since 2025-01-01T00:00:00Z, "
                      "which no longer runs")
    assert err[1].startswith("ran 3 job(s): 3 ok")
    assert not (out / LOCK_NAME).exists()


def test_a_stale_lock_is_neither_damage_nor_clutter_for_resume_and_report(toy_cli, tmp_path,
                                                                          capsys):
    out = tmp_path / "out"
    assert cli.main(["run", str(toy_cli), "--out", str(out), "--device", "cpu"]) == 0
    capsys.readouterr()
    _write_lock(out, _holder(_dead_pid()))
    assert cli.main(["run", "--resume", str(out), "--device", "cpu"]) == 0
    err = _lines(capsys.readouterr().err)
    assert "took over the lock" in err[0]
    assert err[1].startswith("ran 0 job(s): 0 ok, 0 failed; 3 already done")
    assert len(err) == 2  # nothing named damaged or unknown
    _write_lock(out, _holder(_dead_pid()))
    assert cli.main(["report", str(out)]) == 0
    assert [line for line in _lines(capsys.readouterr().err) if "lock" not in line] == []
    assert not (out / LOCK_NAME).exists()


@pytest.mark.parametrize("command", ["resume", "report", "run"])
def test_a_lock_of_a_live_process_is_refused_in_one_line(toy_cli, tmp_path, capsys, command):
    out = tmp_path / "out"
    assert cli.main(["run", str(toy_cli), "--out", str(out), "--device", "cpu"]) == 0
    capsys.readouterr()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = _write_lock(out, _holder(other.pid))
        before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
        args = {"resume": ["run", "--resume", str(out)], "report": ["report", str(out)],
                "run": ["run", str(toy_cli), "--out", str(out)]}[command]
        assert cli.main(args) == 2
    finally:
        other.kill()
        other.wait()
    assert _lines(capsys.readouterr().err) == [
        f"benchlab: {out}: in use by another benchlab process (pid {other.pid}@"
        f"{socket.gethostname()}, benchlab run since 2025-01-01T00:00:00Z); wait for it to "
        "finish, or stop it, and try again"]
    assert lock.exists()  # the holder's lock stays, and nothing else was touched
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_a_lock_from_another_host_is_refused_and_says_how_to_clear_it(tmp_path):
    path = _write_lock(tmp_path, _holder(os.getpid(), host="node-7"))
    with pytest.raises(LockHeld) as info:
        RunLock(tmp_path).acquire()
    assert str(info.value) == (
        f"{tmp_path}: in use by a benchlab process on another host (pid {os.getpid()}@node-7, "
        f"benchlab run since 2025-01-01T00:00:00Z); if it no longer runs there, delete {path} "
        "and try again")


def test_a_reused_pid_or_a_reboot_does_not_keep_a_lock_alive(tmp_path):
    ticks = _start_ticks(os.getpid())
    if ticks is None or _boot_id() is None:
        pytest.skip("no process start times or boot id here (not Linux)")
    # this very process holds it: refused
    _write_lock(tmp_path, _holder(os.getpid()))
    with pytest.raises(LockHeld, match="in use by another benchlab process"):
        RunLock(tmp_path).acquire()
    # the same pid, but a process started at another time: the holder is gone
    for stale in (_holder(os.getpid(), ticks=ticks + 1), _holder(os.getpid(), boot="an-old-boot")):
        _write_lock(tmp_path, stale)
        lock = RunLock(tmp_path)
        assert lock.acquire() == stale
        assert Holder.from_json((tmp_path / LOCK_NAME).read_text()) == lock.holder
        lock.release()
        assert not (tmp_path / LOCK_NAME).exists()


def test_a_lock_file_that_names_no_holder_is_refused_not_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text("{not json")
    with pytest.raises(LockHeld, match=r"\.lock is not a lock file .*delete it and try again"):
        RunLock(tmp_path).acquire()


def test_the_lock_names_its_holder_and_is_released_once(tmp_path):
    lock = RunLock(tmp_path, "benchlab report")
    assert lock.acquire() is None
    holder = Holder.from_json((tmp_path / LOCK_NAME).read_text())
    assert (holder.pid, holder.host, holder.command) == (os.getpid(), socket.gethostname(),
                                                         "benchlab report")
    assert time.strptime(holder.started, "%Y-%m-%dT%H:%M:%SZ")
    with pytest.raises(LockHeld):
        RunLock(tmp_path).acquire()
    lock.release()
    lock.release()
    assert list(tmp_path.iterdir()) == []


def test_the_lock_is_released_on_failure_usage_errors_and_ctrl_c(toy_cli, tmp_path,
                                                                 monkeypatch):
    out = tmp_path / "usage"
    # refused after the claim: --workers without --executor dask
    assert cli.main(["run", str(toy_cli), "--out", str(out), "--workers", "2"]) == 2
    assert list(out.iterdir()) == []

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(execute, "attack", interrupted)
    out = tmp_path / "interrupted"
    assert cli.main(["run", str(toy_cli), "--out", str(out), "--device", "cpu"]) == 130
    assert (out / "suite.yaml").exists() and not (out / LOCK_NAME).exists()

    def broken(*args, **kwargs):
        raise RuntimeError("a broken attack")

    monkeypatch.setattr(execute, "attack", broken)
    assert cli.main(["run", "--resume", str(out), "--device", "cpu"]) == 1
    assert not (out / LOCK_NAME).exists()
