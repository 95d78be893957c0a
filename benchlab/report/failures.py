"""The "Failures" section: the jobs that failed, with their one-line message."""

from __future__ import annotations

from pathlib import Path

from benchlab.report.loading import failed_jobs
from benchlab.report.markdown import table

__all__ = ["section"]


def section(out: Path) -> list[str]:
    """The section, empty when no job failed (or the run has no jobs table)."""
    jobs = failed_jobs(out)
    if jobs is None or jobs[0].empty:
        return []
    failed, total = jobs
    return ["## Failures", "", f"{len(failed)} of {total} job(s) failed; every other job "
            "kept its results.", "",
            table(failed[["id", "message"]].rename(columns={"id": "job"}))]
