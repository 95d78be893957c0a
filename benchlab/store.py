"""The output directory of a run: one file per finished job, consolidated tables.

Every job's rows are written when the job finishes, atomically (a temporary file
renamed into place), and its status file is written last: a job counts as
finished only when its status file exists. An interrupted run therefore keeps
every finished job, and ``--resume`` re-runs exactly the jobs without one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

# Columns of results.csv: what names the measurement, then the measurement.
# ``step``: the optimisation step of a learning-curve point (empty for other rows).
COLUMNS = ["job", "model", "dataset", "run", "seed", "epoch", "step", "attack", "eps",
           "explainer", "metric", "value"]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@dataclass(frozen=True)
class JobRecord:
    id: str
    kind: str
    status: str  # "ok" or "failed"
    message: str
    seconds: float


class RunStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.jobs_dir = self.root / "jobs"
        self.artifacts_dir = self.root / "artifacts"

    # -- jobs -----------------------------------------------------------------
    def records(self) -> dict[str, JobRecord]:
        records = {}
        if self.jobs_dir.is_dir():
            for path in sorted(self.jobs_dir.glob("*.json")):
                try:
                    records[path.stem] = JobRecord(**json.loads(path.read_text()))
                except (ValueError, TypeError):
                    continue  # a damaged status file: the job simply runs again
        return records

    def finished_ok(self) -> set[str]:
        return {job_id for job_id, rec in self.records().items() if rec.status == "ok"}

    def save_job(self, record: JobRecord, rows: Iterable[Mapping[str, Any]]) -> None:
        frame = pd.DataFrame(list(rows), columns=COLUMNS)
        atomic_write_text(self.jobs_dir / f"{record.id}.csv", frame.to_csv(index=False))
        atomic_write_text(self.jobs_dir / f"{record.id}.json", json.dumps(asdict(record)))

    def forget(self, job_id: str) -> None:
        for suffix in (".json", ".csv"):
            (self.jobs_dir / f"{job_id}{suffix}").unlink(missing_ok=True)

    # -- tables ---------------------------------------------------------------
    def collect(self, order: Iterable[str] | None = None) -> pd.DataFrame:
        """All finished jobs' rows, in job order."""
        records = self.records()
        ids = [i for i in (order or sorted(records)) if i in records]
        frames = [pd.read_csv(self.jobs_dir / f"{i}.csv", dtype={"attack": str, "explainer": str})
                  for i in ids if records[i].status == "ok"
                  and (self.jobs_dir / f"{i}.csv").exists()]
        frames = [f for f in frames if not f.empty]
        if not frames:
            return pd.DataFrame(columns=COLUMNS)
        # reindex: rows of jobs finished before the step column existed
        return pd.concat([f.reindex(columns=COLUMNS) for f in frames], ignore_index=True)

    def write_results(self, order: Iterable[str] | None = None) -> pd.DataFrame:
        frame = self.collect(order)
        atomic_write_text(self.root / "results.csv", frame.to_csv(index=False))
        statuses = pd.DataFrame([asdict(r) for r in self.records().values()],
                                columns=["id", "kind", "status", "message", "seconds"])
        atomic_write_text(self.root / "jobs.csv", statuses.to_csv(index=False))
        return frame

    def artifact(self, job_id: str) -> Path:
        return self.artifacts_dir / f"{job_id}.pt"


def read_results(root: Path) -> pd.DataFrame:
    frame = pd.read_csv(Path(root) / "results.csv", dtype={"attack": str, "explainer": str})
    if "step" not in frame.columns:  # written before learning curves existed
        frame.insert(frame.columns.get_loc("epoch") + 1, "step", float("nan"))
    return frame
