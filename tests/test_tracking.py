"""Result sinks (``--track``): the failure policy on fake sinks, and the MLflow sink against a
real tracking server started here and against local stores, through Ctrl-C and --resume."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import types
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import TOY_PROVENANCE, toy_plugin

import benchlab
from benchlab import cli, execute, runner
from benchlab.cache import ModelCache
from benchlab.components import Provenance
from benchlab.plugins import build_registry
from benchlab.sinks import RunEnded
from benchlab.suite import validate_suite
from benchlab.tracking import Trackers
from benchlab_plugins import mlflow_sink

mlflow = pytest.importorskip("mlflow")  # the mlflow extra; .ci/run installs it
from mlflow.tracking import MlflowClient  # noqa: E402

SUITE = {
    "name": "toy",
    "dataset": {"name": "toy", "train_size": 64, "test_size": 32},
    "models": [{"name": "tiny"}],
    "train": {"runs": 2, "epochs": 2, "batch_size": 32, "lr": 0.05},
    "attacks": [{"name": "noise", "eps": [0.1, 0.3]}],
    "explainers": [{"name": "intensity"}],
    "evaluate": {"test_size": 16, "explain_size": 8, "count": 2},
}
JOBS = 6  # 2 train, 2 attack, 2 explain


def _registry(*extra):
    return build_registry([("toy", toy_plugin(), TOY_PROVENANCE),
                           ("mlflow", mlflow_sink, Provenance("mlflow", "benchlab", "0")),
                           *extra], entry_points=False)


@pytest.fixture
def toy(monkeypatch, tmp_path):
    """The command line on the toy components and the mlflow sink; the suite file."""
    registry = _registry()
    monkeypatch.setattr(cli, "_registry", lambda: registry)
    monkeypatch.setenv("BENCHLAB_CACHE", str(tmp_path / "model-cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    suite = tmp_path / "toy.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    return suite


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real MLflow tracking server on localhost (sqlite backend, proxied artifacts)."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [str(mlflow_cli), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts")],
        stdout=open(root / "server.log", "wb"), stderr=subprocess.STDOUT,
        start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while True:
            assert proc.poll() is None, (root / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the MLflow server did not become healthy"
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _interrupt_second_attack(monkeypatch):
    original = execute.attack
    calls = {"n": 0}

    def attack(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(execute, "attack", attack)
    return original


def _runs(client: MlflowClient, out: Path):
    """(the top-level run of run directory ``out``, its nested runs)."""
    state = json.loads((out / "tracking" / "mlflow.json").read_text())
    parent = client.get_run(state["run_id"])
    children = client.search_runs([state["experiment_id"]],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return parent, children


def _check_logged(client: MlflowClient, out: Path, status: str = "FINISHED") -> None:
    """One MLflow run for ``out``, one nested run per job, each metric point once."""
    parent, children = _runs(client, out)
    tops = [r for r in client.search_runs([parent.info.experiment_id])
            if r.data.tags.get("benchlab.directory") == str(out.resolve())]
    assert [r.info.run_id for r in tops] == [parent.info.run_id]
    assert parent.info.status == status
    assert parent.data.params["train.lr"] == "0.05"
    assert parent.data.params["models.0.name"] == "tiny"
    assert parent.data.params["attacks.0.eps"] == "0.1, 0.3"
    jobs = pd.read_csv(out / "jobs.csv")
    by_job = {r.data.tags["benchlab.job"]: r for r in children}
    assert len(children) == len(by_job) == JOBS and set(by_job) == set(jobs["id"])
    train = by_job["train-tiny-r00"]
    assert train.data.params["seed"] == "1" and train.data.params["model.name"] == "tiny"
    history = client.get_metric_history(train.info.run_id, "train_loss")
    assert sorted(m.step for m in history) == [1, 2]  # one point per epoch, never twice
    results = pd.read_csv(out / "results.csv")
    for r in children:
        job = r.data.tags["benchlab.job"]
        rows = results[(results["job"] == job) & results["value"].notna()]
        points = sum(len(client.get_metric_history(r.info.run_id, key)) for key in r.data.metrics)
        assert points == len(rows), job  # every row of results.csv once
    attack = by_job["attack-tiny-r00-noise"]
    (acc,) = client.get_metric_history(attack.info.run_id, "accuracy/eps:0.3")
    expected = results[(results["job"] == "attack-tiny-r00-noise") & (results["metric"] == "accuracy")
                       & (results["eps"] == 0.3)]["value"].item()
    assert acc.value == pytest.approx(expected)
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.md", "results.csv", "suite.yaml", "robustness.png"} <= names


def test_ctrl_c_then_resume_against_a_tracking_server_logs_each_run_and_metric_once(
        server, toy, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", f"resume-{tmp_path.name}")
    out = tmp_path / "run"
    original = _interrupt_second_attack(monkeypatch)
    args = ["run", str(toy), "--out", str(out), "--device", "cpu", "--track", "mlflow"]
    assert cli.main(args) == 130
    err = capsys.readouterr().err
    assert f"Continue with: benchlab run --resume {out} --device cpu --track mlflow" in err
    client = MlflowClient(server)
    parent, children = _runs(client, out)
    assert parent.info.status == "KILLED" and 0 < len(children) < JOBS
    # a job whose logging was cut short (its nested run made, the record not saved)
    state_path = out / "tracking" / "mlflow.json"
    state = json.loads(state_path.read_text())
    state["jobs"].pop("train-tiny-r00")
    state_path.write_text(json.dumps(state))

    monkeypatch.setattr(execute, "attack", original)
    assert cli.main(["run", "--resume", str(out), "--device", "cpu", "--track", "mlflow"]) == 0
    err = capsys.readouterr().err
    assert err.splitlines()[-1].endswith("; tracked with mlflow") and "tracker mlflow failed" not in err
    _check_logged(client, out)
    assert client.get_run(parent.info.run_id).data.tags["benchlab.resumed"] == "1"


# MLflow 3 refuses its file store (maintenance mode) unless MLFLOW_ALLOW_FILE_STORE is set:
# a local sqlite store is what it advises, and what the sink makes by default
@pytest.mark.parametrize("store", ["run directory", "MLFLOW_TRACKING_URI"])
def test_a_local_store_by_default_or_the_one_named_and_a_resume_duplicating_nothing(
        toy, tmp_path, monkeypatch, capsys, store):
    out = tmp_path / "run"
    monkeypatch.chdir(tmp_path)  # where MLflow puts the artifacts of a sqlite store it names
    if store == "MLFLOW_TRACKING_URI":
        uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    else:
        uri = f"sqlite:///{out / 'tracking' / 'mlflow' / 'mlflow.db'}"
    original = _interrupt_second_attack(monkeypatch)
    assert cli.main(["run", str(toy), "--out", str(out), "--device", "cpu",
                     "--track", "mlflow"]) == 130
    monkeypatch.setattr(execute, "attack", original)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the run keeps its store
    assert cli.main(["run", "--resume", str(out), "--device", "cpu", "--track", "mlflow"]) == 0
    capsys.readouterr()
    assert json.loads((out / "tracking" / "mlflow.json").read_text())["tracking_uri"] == uri
    _check_logged(MlflowClient(uri), out)
    if store == "run directory":
        assert (out / "tracking" / "mlflow" / "artifacts").is_dir()
        assert not (tmp_path / "mlruns").exists()  # nothing left in the working directory


def test_an_unreachable_server_costs_nothing_but_one_line(toy, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    out = tmp_path / "run"
    assert cli.main(["run", str(toy), "--out", str(out), "--device", "cpu",
                     "--track", "mlflow"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("tracker mlflow failed (")]
    assert line.endswith(f"`benchlab run --resume {out} --track mlflow` logs what it missed")
    assert "tracked with mlflow until it failed" in err.splitlines()[-1]
    assert set(pd.read_csv(out / "jobs.csv")["status"]) == {"ok"}
    assert pd.read_csv(out / "results.csv")["job"].nunique() == JOBS
    assert "tracker mlflow failed in start" in (out / "run.log").read_text()


def test_mlflow_not_installed_or_an_unknown_sink_is_one_line_before_anything_runs(
        toy, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    assert cli.main(["run", str(toy), "--out", str(tmp_path / "a"), "--track", "mlflow"]) == 2
    assert capsys.readouterr().err.strip() == (
        "benchlab: --track mlflow: the mlflow sink needs mlflow, which is not installed; "
        "install it with: pip install 'benchlab[mlflow]'")
    assert cli.main(["run", str(toy), "--out", str(tmp_path / "b"), "--track", "mlfow"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("benchlab: --track mlfow: unknown sink 'mlfow'") and "mlflow" in err
    assert not (tmp_path / "b" / "results.csv").exists()


# -- the failure policy, on sinks of this file ------------------------------------------

class Recording:
    def __init__(self, params=None, state=None, fail_at: int | None = None):
        self.events: list[tuple[str, object]] = []
        self.fail_at = fail_at

    def _note(self, what, event):
        self.events.append((what, event))
        if self.fail_at is not None and len(self.events) == self.fail_at:
            raise ConnectionError("tracker down\nsecond line")

    def start(self, run):
        self._note("start", run)

    def record(self, job):
        self._note("record", job)

    def end(self, run):
        self._note("end", run)


def test_a_sink_failing_mid_run_is_switched_off_and_resume_tells_it_every_earlier_job(tmp_path):
    registry = _registry()
    suite = validate_suite(SUITE, registry)
    out, lines = tmp_path / "run", []
    flaky = Recording(fail_at=3)  # start, one job, then it fails
    trackers = Trackers([("flaky", flaky)], directory=out, log=lines.append)
    outcome = runner.run_suite(suite, registry, out, device="cpu", log=lambda s: None,
                               cache=ModelCache(tmp_path / "cache"), trackers=trackers)
    trackers.end(RunEnded("finished", len(outcome.ran), 0, 0))
    assert not outcome.failed and len(outcome.ran) == JOBS  # the benchmark lost nothing
    assert len(flaky.events) == 3 and trackers.failed.keys() == {"flaky"}
    assert lines == [f"tracker flaky failed (ConnectionError: tracker down); it is off for the "
                     f"rest of this run, whose results are kept in {out} as usual; `benchlab "
                     f"run --resume {out} --track flaky` logs what it missed"]

    later = Recording()
    runner.run_suite(suite, registry, out, device="cpu", resume=True, log=lambda s: None,
                     cache=ModelCache(tmp_path / "cache"),
                     trackers=Trackers([("later", later)], directory=out))
    (what, started), *recorded = later.events
    assert what == "start" and started.resumed and len(started.jobs) == JOBS
    assert started.suite["train"]["lr"] == 0.05
    assert [e.earlier for _, e in recorded] == [True] * JOBS
    train = next(e for _, e in recorded if e.id == "train-tiny-r00")
    assert train.spec["seed"] == 1 and train.status == "ok"
    assert {r["epoch"] for r in train.rows if r["metric"] == "train_loss"} == {1, 2}
    assert all(r["attack"] is None for r in train.rows)  # empty cells as None, not NaN


def test_a_plugin_registers_a_sink_through_the_hook():
    @benchlab.hookimpl
    def register_sinks(register):
        register("recording", Recording, description="keeps every event")

    module = types.ModuleType("recording_plugin")
    module.register_sinks = register_sinks
    registry = _registry(("recording", module, Provenance("recording", "tests", "0")))
    assert registry.names("sink") == ["mlflow", "recording"]
    assert registry.plugins["recording"].components == {"sink": ["recording"]}


def test_parameters_and_metric_keys_mlflow_accepts():
    flat = mlflow_sink.flatten({"train": {"lr": 0.1}, "models": [{"name": "cnn", "w": None}],
                                "attacks": [{"eps": [0.1, 0.3]}], "odd key=": 1})
    assert flat == {"train.lr": "0.1", "models.0.name": "cnn", "attacks.0.eps": "0.1, 0.3",
                    "odd key_": "1"}
    assert mlflow_sink.metric_key({"metric": "accuracy", "eps": 0.30000000000000004}) \
        == "accuracy/eps:0.3"
    assert mlflow_sink.metric_step({"step": 40, "epoch": 1.0}) == 40
    assert mlflow_sink.metric_step({"step": None, "epoch": 2.0}) == 2
    assert mlflow_sink.metric_step({"step": None, "epoch": None}) == 0
