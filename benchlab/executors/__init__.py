"""Where jobs run: the executors the runner hands its tasks to.

An executor takes :class:`Task` objects (one train pack, one attack or one explain
job with its inputs), runs them with the job functions of :mod:`benchlab.execute`
and hands back each task's results as it finishes (``contract.py``). ``local.py``
runs tasks in this process, ``dask.py`` on a Dask cluster. It knows nothing of what a job
computes or of the run directory; the runner decides what is ready to run and is
the only writer of results.
"""

from benchlab.executors.contract import Done, Executor, Task, run_task

__all__ = ["Done", "Executor", "Task", "run_task"]
