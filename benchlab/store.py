"""The output directory of a run: one file per finished job, consolidated tables.

Every job's rows are written when the job finishes, atomically (a temporary file
renamed into place), and its status file is written last, with the SHA-256 of the
job's rows file and artifact: a job counts as finished only when its status file
exists and its files still match those digests. An interrupted run therefore
keeps every finished job; ``--resume`` re-runs exactly the jobs without one, and
the jobs whose files were damaged since, naming each. A job's artifact must also
decode as the tensors it was saved as: one that does not is damage of its job,
so that resuming redoes the job instead of failing the jobs that read it again
and again. A status file may only name files inside the run directory.

``results.csv`` and ``jobs.csv`` grow by one job's lines as each job finishes, so
writing them costs what the job produced, not what the run holds; they are
rebuilt from the job files (in job order) at the start and the end of a run and
by ``benchlab report``.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
import torch

from benchlab.files import atomic_write_bytes, atomic_write_text
from benchlab.tensors import UnreadableTensors, load_tensors

# Columns of results.csv: what names the measurement, then the measurement.
# ``step``: the optimisation step of a learning-curve point (empty for other rows).
COLUMNS = ["job", "model", "dataset", "run", "seed", "epoch", "step", "attack", "eps",
           "explainer", "metric", "value"]


@dataclass(frozen=True)
class JobRecord:
    id: str
    kind: str
    status: str  # "ok" or "failed"
    message: str
    seconds: float
    where: str = ""  # the worker, host and device it ran on


_READ = {"dtype": {"attack": str, "explainer": str}}


class RunStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.jobs_dir = self.root / "jobs"
        self.artifacts_dir = self.root / "artifacts"

    # -- jobs -----------------------------------------------------------------
    def _status(self, path: Path) -> tuple[JobRecord, dict[str, str]] | None:
        try:
            data = json.loads(path.read_text())
            record = JobRecord(**{f.name: data[f.name] for f in fields(JobRecord)
                                  if f.name in data})
        except (OSError, ValueError, TypeError, KeyError):
            return None  # a damaged status file: the job simply runs again
        digests = data.get("digests")
        return record, digests if isinstance(digests, dict) else {}

    def records(self) -> dict[str, JobRecord]:
        """Every job with a readable status file, finished ok or failed."""
        records = {}
        if self.jobs_dir.is_dir():
            for path in sorted(self.jobs_dir.glob("*.json")):
                status = self._status(path)
                if status is not None:
                    records[path.stem] = status[0]
        return records

    def damage(self, job_id: str) -> str | None:
        """Why job ``job_id``, recorded as ok, cannot be trusted; None when its files verify."""
        try:
            self._verify(job_id)
        except _Damaged as exc:
            return str(exc)
        return None

    def _verify(self, job_id: str) -> dict[str, torch.Tensor] | None:
        """Check the files of job ``job_id`` against its status file; its artifact's tensors
        when the status names one. Raises :class:`_Damaged` saying what is wrong."""
        path = self.jobs_dir / f"{job_id}.json"
        status = self._status(path)
        if status is None:
            raise _Damaged(f"{path} is unreadable")
        record, digests = status
        if record.status != "ok":
            return None
        rows = f"jobs/{job_id}.csv"
        if rows not in digests:
            raise _Damaged(f"{path} holds no digests (written by an older version)")
        tensors = None
        for name, expected in digests.items():
            target = self._inside(name)
            if target is None:
                raise _Damaged(f"{path} names {name!r}, which is not a file inside the run "
                               "directory")
            try:
                blob = target.read_bytes()
            except FileNotFoundError:
                raise _Damaged(f"{target} is missing") from None
            except OSError as exc:
                raise _Damaged(f"{target} cannot be read: {exc.strerror or exc}") from None
            if _sha256(blob) != expected:
                raise _Damaged(f"{target} does not match its digest")
            if target == self.artifact(job_id):
                tensors = _decode(target, blob)
        return tensors

    def _inside(self, name: object) -> Path | None:
        """The file that ``name``, from a status file, names in the run directory; None for
        anything else: an absolute path, one through ``..``, a link that leads out."""
        if not isinstance(name, str) or not name or "\0" in name:
            return None
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts:
            return None
        path = self.root / relative
        try:
            inside = path.resolve().is_relative_to(self.root.resolve())
        except (OSError, RuntimeError):  # a loop of links
            return None
        return path if inside else None

    def verified(self) -> tuple[set[str], dict[str, str]]:
        """Jobs finished ok whose files verify, and the others recorded ok: id -> what is wrong."""
        good, damaged = set(), {}
        for job_id, record in self.records().items():
            if record.status != "ok":
                continue
            problem = self.damage(job_id)
            if problem is None:
                good.add(job_id)
            else:
                damaged[job_id] = problem
        return good, damaged

    def finished_ok(self) -> set[str]:
        return self.verified()[0]

    def save_job(self, record: JobRecord, rows: Iterable[Mapping[str, Any]]) -> None:
        """Write a finished job: its rows, then its status with the digests of its files.

        The job's artifact, if it has one, must already be written.
        """
        blob = pd.DataFrame(list(rows), columns=COLUMNS).to_csv(index=False).encode("utf-8")
        atomic_write_bytes(self.jobs_dir / f"{record.id}.csv", blob)
        digests = {f"jobs/{record.id}.csv": _sha256(blob)}
        artifact = self.artifact(record.id)
        if record.status == "ok" and artifact.exists():
            digests[f"artifacts/{record.id}.pt"] = _sha256(artifact.read_bytes())
        atomic_write_text(self.jobs_dir / f"{record.id}.json",
                          json.dumps({**asdict(record), "digests": digests}))
        self._append(record, blob)

    def forget(self, job_id: str) -> None:
        for suffix in (".json", ".csv", ".log"):
            (self.jobs_dir / f"{job_id}{suffix}").unlink(missing_ok=True)

    def save_log(self, job_id: str, text: str) -> Path:
        """Keep the full traceback of a failed job; returns where."""
        path = self.jobs_dir / f"{job_id}.log"
        atomic_write_text(path, text)
        return path

    # -- tables ---------------------------------------------------------------
    def collect(self, order: Iterable[str] | None = None,
                jobs: set[str] | None = None) -> pd.DataFrame:
        """The rows of the jobs finished ok whose files verify (of ``jobs``), in job order."""
        good = self.finished_ok() if jobs is None else jobs
        ids = [i for i in (order or sorted(good)) if i in good]
        frames = []
        for job_id in ids:
            frame = pd.read_csv(self.jobs_dir / f"{job_id}.csv", **_READ)
            if not frame.empty:
                frames.append(frame)
        if not frames:
            return pd.DataFrame(columns=COLUMNS)
        # reindex: rows of jobs finished before the step column existed
        return pd.concat([f.reindex(columns=COLUMNS) for f in frames], ignore_index=True)

    def write_results(self, order: Iterable[str] | None = None,
                      jobs: set[str] | None = None) -> pd.DataFrame:
        """Rebuild results.csv and jobs.csv from the job files (``jobs`` only, when given)."""
        good = self.finished_ok() if jobs is None else jobs
        frame = self.collect(order, good)
        atomic_write_text(self.root / "results.csv", frame.to_csv(index=False))
        # failed jobs are listed too, except when rebuilding before the pending ones run
        keep = [r for r in self.records().values()
                if r.id in good or (jobs is None and r.status != "ok")]
        statuses = pd.DataFrame([asdict(r) for r in keep],
                                columns=[f.name for f in fields(JobRecord)])
        atomic_write_text(self.root / "jobs.csv", statuses.to_csv(index=False))
        return frame

    def _append(self, record: JobRecord, rows_csv: bytes) -> None:
        """Add one job's lines to results.csv and jobs.csv (created with their headers)."""
        header, _, body = rows_csv.partition(b"\n")
        _append_lines(self.root / "results.csv", header + b"\n", body)
        status = pd.DataFrame([asdict(record)]).to_csv(index=False).encode("utf-8")
        header, _, line = status.partition(b"\n")
        _append_lines(self.root / "jobs.csv", header + b"\n", line)

    def artifact(self, job_id: str) -> Path:
        return self.artifacts_dir / f"{job_id}.pt"

    def save_artifact(self, job_id: str, product: Mapping[str, Any]) -> None:
        """Keep a job's product (tensors only), written whole or not at all."""
        buffer = io.BytesIO()
        torch.save(dict(product), buffer)
        atomic_write_bytes(self.artifact(job_id), buffer.getbuffer())

    def load_artifact(self, job_id: str) -> dict[str, Any]:
        """The product of job ``job_id``, once its files verify; ValueError saying why not,
        in one line (the library's full text is the exception's cause)."""
        try:
            tensors = self._verify(job_id)
        except _Damaged as exc:
            raise ValueError(str(exc)) from exc.__cause__
        if tensors is not None:
            return tensors
        path = self.artifact(job_id)
        try:
            return _decode(path, path.read_bytes())
        except OSError as exc:
            raise ValueError(f"{path} cannot be read: {exc.strerror or exc}") from exc
        except _Damaged as exc:
            raise ValueError(str(exc)) from exc.__cause__


class _Damaged(Exception):
    """A job's files do not verify: one line saying which and how."""


def _decode(path: Path, blob: bytes) -> dict[str, torch.Tensor]:
    """The tensors saved in ``blob`` (read from ``path``), loaded as plain data only.

    A failure is :class:`_Damaged` in one line; the library's full text is in the
    run's log file and is the exception's cause.
    """
    try:
        data = load_tensors(blob, str(path))
    except UnreadableTensors as exc:
        raise _Damaged(f"{path} cannot be decoded ({exc})") from exc.__cause__
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()):
        raise _Damaged(f"{path} does not hold a mapping of names to tensors")
    return data


def _sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def _append_lines(path: Path, header: bytes, lines: bytes) -> None:
    if not path.exists():
        atomic_write_bytes(path, header + lines)
    elif lines:
        with open(path, "ab") as fh:
            fh.write(lines)


def read_results(root: Path) -> pd.DataFrame:
    frame = pd.read_csv(Path(root) / "results.csv", dtype={"attack": str, "explainer": str})
    if "step" not in frame.columns:  # written before learning curves existed
        frame.insert(frame.columns.get_loc("epoch") + 1, "step", float("nan"))
    return frame
