"""What a run shows while it runs: a progress bar on a terminal, one line per job elsewhere.

The bar counts epochs of train jobs and whole attack and explain jobs. When stderr
is not a terminal (a file, a pipe, a batch system's log) there is no bar, and each
finished job prints one line with where it ran, its headline number and its time.
In a Jupyter notebook there is a bar: a widget where ipywidgets is installed, text
otherwise. A failed job always prints one line, with where its traceback was kept.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

from benchlab.jobs import Job

__all__ = ["Progress"]

_HEADLINE = ("test_acc", "accuracy", "cam_similarity")


class Progress:
    def __init__(self, name: str):
        bar, disable = (_notebook_bar(), False) if _in_notebook() else (tqdm, None)
        self.bar = bar(total=0, unit="step", desc=name, disable=disable, file=sys.stderr,
                       dynamic_ncols=True)

    def expect(self, jobs: Iterable[Job]) -> None:
        """The jobs still to run: an epoch of training or a job is one step."""
        self.bar.total = sum(j.train.epochs if j.kind == "train" else 1 for j in jobs)
        self.bar.refresh()

    def more(self, jobs: Iterable[Job]) -> None:
        """Jobs added while the run is under way (the next look's runs)."""
        self.bar.total = (self.bar.total or 0) + sum(
            j.train.epochs if j.kind == "train" else 1 for j in jobs)
        self.bar.refresh()

    def advance(self, steps: int = 1) -> None:
        self.bar.update(steps)

    def finished(self, job: Job, rows: list[dict[str, Any]], seconds: float,
                 where: dict[str, str]) -> None:
        if self.bar.disable and where and "reused" not in where:
            # no progress bar (stderr is a file or a pipe): one line per finished job
            print(f"done {job.id} on {describe_where(where)}: {_headline(rows)} "
                  f"in {seconds:.1f} s", file=sys.stderr, flush=True)

    def failed(self, job: Job, message: str, log_path: str | None = None) -> None:
        note = f" (traceback: {log_path})" if log_path else ""
        self.bar.write(f"FAILED {job.id}: {message}{note}", file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def _in_notebook() -> bool:
    """In a Jupyter kernel (whose stderr is no terminal, though its output is shown)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def _notebook_bar():
    try:
        import ipywidgets  # noqa: F401 - the notebook bar is drawn with it
        from tqdm.notebook import tqdm as bar
    except ImportError:
        from tqdm.std import tqdm as bar
    return bar


def describe_where(where: dict[str, str]) -> str:
    """``worker on host (pid N), device`` for jobs.csv and the console."""
    if not where:
        return ""
    if "reused" in where:  # not run: its trained model came from there
        return where["reused"]
    return (f"{where.get('worker', 'local')} on {where.get('host', '?')} "
            f"(pid {where.get('pid', '?')}), {where.get('device', '?')}")


def _headline(rows: list[dict[str, Any]]) -> str:
    """A job's headline number: its last test accuracy, attacked accuracy or similarity."""
    for metric in _HEADLINE:
        values = [r for r in rows if r["metric"] == metric]
        if values:
            last = values[-1]
            at = f" at eps {last['eps']:g}" if last.get("eps") else ""
            return f"{metric} {last['value']:.4f}{at}"
    return f"{len(rows)} rows"
