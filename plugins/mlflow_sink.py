"""``mlflow``: a benchlab run logged to MLflow (``benchlab run ... --track mlflow``).

Needs the ``mlflow`` extra (``pip install 'benchlab[mlflow]'``); the library is
imported only when a run is tracked. What it logs:

- **one MLflow run per benchlab run**, in the experiment named by
  ``MLFLOW_EXPERIMENT_NAME`` or else after the suite; the suite's settings as its
  parameters (``train.lr``, ``models.0.name``, ...); at the end the run
  directory's summary, tables and plots as artifacts, and its status (FINISHED,
  FAILED when a job failed, KILLED when interrupted);
- **one nested run per job** (tag ``benchlab.job``): the job's settings as
  parameters (``model.params.width``, ``attack.name``, ``seed``, ...) and its rows
  of ``results.csv`` as metrics: per-epoch metrics at step = epoch, learning
  curves (``step_test_acc``, ...) at step = the optimisation step, a metric
  measured at an ε as ``accuracy/eps:0.1``; a value that is undefined (empty in
  ``results.csv``, such as a success rate over no correctly classified image) is
  not logged.

Where: ``MLFLOW_TRACKING_URI`` (a server, ``sqlite:///...``), else a
local store in the run directory, ``DIR/tracking/mlflow/mlflow.db`` with its
artifacts beside it (open it with ``mlflow ui --backend-store-uri sqlite:///...``).

Resuming: the MLflow run id, the store and which jobs are logged are kept in
``DIR/tracking/mlflow.json``; ``--resume`` reattaches to that run, in that store,
logs only the jobs not logged yet, and replaces the nested run of a job whose
logging was cut short, so nothing is logged twice.

Unless they are set, ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` is set to 2 and
``MLFLOW_HTTP_REQUEST_TIMEOUT`` to 20 seconds: an unreachable server is said in
seconds rather than after MLflow's minutes of retries.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import Field

import benchlab
from benchlab import Params
from benchlab.sinks import JobRecorded, RunEnded, RunStarted, SinkState

INSTALL = "pip install 'benchlab[mlflow]'"
_STATUS = {"finished": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
_KEY = re.compile(r"[^\w\-. /:]")  # the characters MLflow accepts in a key
_PARAM_VALUE = 6000  # MLflow's longest parameter value
_BATCH = 100  # parameters per call (MLflow's limit), metrics per call below its 1000


class MlflowParams(Params):
    """Parameters of the ``mlflow`` sink."""

    tracking_uri: str | None = Field(
        default=None, description="default MLFLOW_TRACKING_URI, else a local store in the "
                                  "run directory")
    experiment: str | None = Field(
        default=None, description="default MLFLOW_EXPERIMENT_NAME, else the suite's name")


class MlflowSink:
    """A benchlab run as an MLflow run with one nested run per job."""

    def __init__(self, params: Any, state: SinkState):
        try:
            from mlflow.tracking import MlflowClient
        except ModuleNotFoundError as exc:
            if exc.name not in ("mlflow", "mlflow.tracking"):
                raise
            raise ImportError(f"the mlflow sink needs mlflow, which is not installed; "
                              f"install it with: {INSTALL}") from None
        for name, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"),
                            ("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")):
            os.environ.setdefault(name, value)
        self.state = state
        self.local = False
        uri = state.data.get("tracking_uri") or params.tracking_uri \
            or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            state.directory.mkdir(parents=True, exist_ok=True)
            uri, self.local = f"sqlite:///{state.directory / 'mlflow.db'}", True
        self.uri = uri
        self.experiment = params.experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME")
        self.client = MlflowClient(tracking_uri=uri)
        self.run_id: str | None = state.data.get("run_id")
        self.experiment_id: str | None = state.data.get("experiment_id")
        self.jobs: dict[str, str] = dict(state.data.get("jobs", {}))
        self.reattached = False

    def _save(self) -> None:
        self.state.save({"tracking_uri": self.uri, "experiment_id": self.experiment_id,
                         "run_id": self.run_id, "jobs": self.jobs})

    def start(self, run: RunStarted) -> None:
        if self.run_id is not None:
            self.client.get_run(self.run_id)  # raises, naming the run, if it is gone
            self.client.update_run(self.run_id, status="RUNNING")
            self.client.set_tag(self.run_id, "benchlab.resumed",
                                str(int(_tag(self.client, self.run_id, "benchlab.resumed")) + 1))
            self.reattached = True
            return
        name = self.experiment or run.name
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            self.experiment_id = found.experiment_id
        else:
            where = (self.state.directory / "artifacts").as_uri() if self.local else None
            self.experiment_id = self.client.create_experiment(name, artifact_location=where)
        created = self.client.create_run(
            self.experiment_id, run_name=f"{run.name} {run.directory.name}",
            tags={"benchlab.directory": str(run.directory.resolve()),
                  "benchlab.suite": run.name, "benchlab.resumed": "0"})
        self.run_id = created.info.run_id
        self._save()  # before anything else: a run interrupted from here on reattaches
        _log_params(self.client, self.run_id, flatten(run.suite))

    def record(self, job: JobRecorded) -> None:
        if job.id in self.jobs or self.run_id is None:
            return
        if self.reattached:  # a nested run whose logging was cut short: replaced
            for partial in self._children(job.id):
                self.client.delete_run(partial)
        tags = {"mlflow.parentRunId": self.run_id, "benchlab.job": job.id,
                "benchlab.kind": job.kind, "benchlab.status": job.status,
                "benchlab.where": job.where or "not said"}
        if job.message:
            tags["benchlab.message"] = job.message[:_PARAM_VALUE]
        child = self.client.create_run(self.experiment_id, run_name=job.id, tags=tags).info.run_id
        _log_params(self.client, child, {**flatten(job.spec), "seconds": job.seconds})
        metrics = list(_metrics(job.rows))
        for i in range(0, len(metrics), 10 * _BATCH):
            self.client.log_batch(child, metrics=metrics[i:i + 10 * _BATCH])
        self.client.set_terminated(child, "FINISHED" if job.status == "ok" else "FAILED")
        self.jobs[job.id] = child
        self._save()

    def _children(self, job_id: str) -> list[str]:
        query = (f"tags.mlflow.parentRunId = '{self.run_id}' and "
                 f"tags.`benchlab.job` = '{job_id}'")
        return [r.info.run_id for r in self.client.search_runs([self.experiment_id], query)]

    def end(self, run: RunEnded) -> None:
        if self.run_id is None:
            return
        for path in run.files:
            self.client.log_artifact(self.run_id, str(path))
        for key, value in (("ran", run.ran), ("failed", run.failed), ("skipped", run.skipped)):
            self.client.set_tag(self.run_id, f"benchlab.jobs_{key}", str(value))
        self.client.set_terminated(self.run_id, _STATUS[run.status])


def _tag(client: Any, run_id: str, key: str) -> str:
    return client.get_run(run_id).data.tags.get(key, "0")


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings as MLflow parameters: dotted keys, list items by index, and a
    list of numbers (ε) as one value."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)) and value and \
                all(isinstance(v, Mapping) for v in value):
            for i, item in enumerate(value):
                flat.update(flatten(item, f"{name}.{i}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = ", ".join(str(v) for v in value)
        elif value is not None:
            flat[name] = str(value)
    return {_KEY.sub("_", k)[:250]: v[:_PARAM_VALUE] for k, v in flat.items()}


def _log_params(client: Any, run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)) for k, v in params.items()]
    for i in range(0, len(items), _BATCH):
        client.log_batch(run_id, params=items[i:i + _BATCH])


def metric_key(row: Mapping[str, Any]) -> str:
    """``accuracy``, or ``accuracy/eps:0.1`` for a measurement at an ε."""
    key = str(row["metric"])
    if row.get("eps") is not None:
        key += f"/eps:{float(row['eps']):g}"
    return _KEY.sub("_", key)


def metric_step(row: Mapping[str, Any]) -> int:
    """A learning-curve point at its optimisation step, an epoch's metric at its epoch."""
    for column in ("step", "epoch"):
        if row.get(column) is not None:
            return int(row[column])
    return 0


def _metrics(rows: Any) -> Iterator[Any]:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    for row in rows:
        value = row["value"]
        if value is not None and not math.isnan(value):  # undefined: not a measurement
            yield Metric(metric_key(row), float(value), now, metric_step(row))


@benchlab.hookimpl
def register_sinks(register):
    register("mlflow", MlflowSink, params=MlflowParams,
             description="one MLflow run per benchlab run, a nested run per job")
