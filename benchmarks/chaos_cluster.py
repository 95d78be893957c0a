"""A suite on a Dask LocalCluster while worker processes are killed with SIGKILL.

    python benchmarks/chaos_cluster.py
    python benchmarks/chaos_cluster.py --jobs 60 --every 4 --kills 6 --workers 2 --epochs 2

The large-scale version of ``tests/test_chaos.py``. Runs about ``--jobs`` jobs
(2 models x N seeds, each trained, attacked with FGSM and explained with
Grad-CAM, on real MNIST from the data root) on a ``LocalCluster`` of
``--workers`` single-threaded worker processes started by the DaskExecutor,
while a thread kills a random worker that is running a job every ``--every``
seconds (only while every worker is up, at most ``--kills`` times). Prints:

- the jobs retried (rescheduled because the worker they were running or queued
  on died, or resubmitted because their weights died with a worker) and the jobs
  failed (out of ``--retries``);
- the wall time of the run (the cluster's start-up apart);
- the epochs trained against the epochs needed: every epoch record a train job
  streams back is counted, so a job killed in epoch 2 of 2 and started again from
  scratch counts 3 for 2 needed. The epoch in progress when a worker dies is
  lost either way and never counted: the redone epochs are the finished ones
  thrown away, which checkpoints inside train jobs save (``--checkpoint-every
  epoch``, the default, as in ``benchlab run``; ``off`` to compare);
- with ``--compare-local``, whether ``results.csv`` (timing metrics aside)
  equals that of the same suite run by the local executor (timed apart).

One run (n = 1): kills are random, so the counts vary from run to run
(``--seed`` picks the victims). Run it alone on the machine (``flock``).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pandas as pd

from benchlab import runner
from benchlab.cache import ModelCache
from benchlab.jobs import expand
from benchlab.plugins import default_registry
from benchlab.suite import load_suite
from benchlab.testing.chaos import Chaos

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"epoch_time_s", "images_per_s", "attack_time_s", "explain_images_per_s",
          "step_eval_time_s"}
MODELS = ("cnn", "cnn_bn")
JOBS_PER_SEED = 3  # train, attack, explain


def machine() -> str:
    """CPU model, cores, library versions and load, for the header of the table."""
    import distributed
    import torch

    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), model)
    except OSError:
        pass
    try:
        load = f"load average {os.getloadavg()[0]:.1f}"
    except OSError:
        load = "load average unknown"
    return (f"{model}; {os.cpu_count()} cores; torch {torch.__version__}; "
            f"distributed {distributed.__version__}; {load}")


def _measurements(out: Path) -> pd.DataFrame:
    frame = pd.read_csv(out / "results.csv")
    frame = frame[~frame["metric"].isin(TIMING)]
    return frame.sort_values(list(frame.columns[:-1]), na_position="first").reset_index(drop=True)


def _kind(job_id: str) -> str:
    return job_id.split("-", 1)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200,
                        help="at least this many jobs (rounded up to whole seeds)")
    parser.add_argument("--workers", type=int, default=None, help="default: one per core")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between kills")
    parser.add_argument("--kills", type=int, default=20, help="at most this many kills")
    parser.add_argument("--retries", type=int, default=3,
                        help="the DaskExecutor's retries (a job fails after retries+1 deaths)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-size", type=int, default=1000)
    parser.add_argument("--test-size", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="of the choice of victims")
    parser.add_argument("--checkpoint-every", choices=["epoch", "off"], default="epoch",
                        help="checkpoints inside train jobs (benchlab run's default: epoch)")
    parser.add_argument("--compare-local", action="store_true",
                        help="also run the suite with the local executor and compare")
    args = parser.parse_args(argv)

    from benchlab.executors.dask import DaskExecutor

    # checkpoints inside train jobs: at the end of every epoch, or none
    run_options: dict[str, object] = {"checkpoint": args.checkpoint_every == "epoch"}

    seeds = -(-args.jobs // (len(MODELS) * JOBS_PER_SEED))
    registry = default_registry()
    overrides = [f"models=[{', '.join(f'{{name: {m}}}' for m in MODELS)}]",
                 f"train.runs={seeds}", f"train.epochs={args.epochs}",
                 f"dataset.train_size={args.train_size}", f"dataset.test_size={args.test_size}",
                 "attacks=[{name: fgsm, eps: [0.1, 0.3]}]", "explainers=[{name: gradcam}]",
                 f"evaluate.test_size={args.test_size}", "evaluate.explain_size=16",
                 "evaluate.count=4"]
    suite = load_suite(str(ROOT / "suites" / "fgsm_gradcam.yaml"), registry, overrides)
    jobs = expand(suite)
    trains = [job for job in jobs if job.kind == "train"]
    workers = args.workers or os.cpu_count() or 1
    print(machine())
    print(f"suite: fgsm_gradcam with {' '.join(overrides)}: {len(jobs)} jobs; {workers} "
          f"workers x 1 thread; a kill every {args.every:g} s (at most {args.kills}); "
          f"retries {args.retries}; checkpoints {args.checkpoint_every}")

    epochs: Counter[str] = Counter()
    made: list[DaskExecutor] = []

    def make(*, on_epoch=None, on_checkpoint=None, **_):
        def counted(job_id: str, record: dict[str, float]) -> None:
            if "step" not in record:  # an epoch's record, not a learning curve's point
                epochs[job_id] += 1
            if on_epoch is not None:
                on_epoch(job_id, record)

        started = time.perf_counter()
        executor = DaskExecutor("cpu", workers=workers, retries=args.retries, on_epoch=counted,
                                on_checkpoint=on_checkpoint)
        executor.client.wait_for_workers(workers, timeout=120)
        executor.startup_s = time.perf_counter() - started
        executor.chaos = Chaos(executor.client.scheduler.address, workers=workers,
                               kills=args.kills, every=args.every, seed=args.seed)
        close = executor.close

        def stop_then_close() -> None:
            executor.chaos.stop()
            close()

        executor.close = stop_then_close
        executor.chaos.start()
        made.append(executor)
        return executor

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        outcome = runner.run_suite(suite, registry, tmp / "dask", device="cpu",
                                   cache=ModelCache(tmp / "cache-dask"), log=lambda s: None,
                                   executor=make, **run_options)
        (executor,) = made
        wall_s = time.perf_counter() - started - executor.startup_s
        same, local_s = None, None
        if args.compare_local:
            started = time.perf_counter()
            local = runner.run_suite(suite, registry, tmp / "local", device="cpu",
                                     cache=ModelCache(tmp / "cache-local"), log=lambda s: None)
            local_s = time.perf_counter() - started
            same = not local.failed and not outcome.failed and \
                _measurements(tmp / "local").equals(_measurements(tmp / "dask"))

    chaos = executor.chaos
    retried = Counter(_kind(task) for task in executor.deaths.hit())
    failed = Counter(_kind(job_id) for job_id in outcome.failed)
    hit_while = Counter(_kind(key) for _, keys in chaos.killed for key in keys)
    needed = args.epochs * len(trains)
    trained = sum(epochs.values())
    rows = [
        ("jobs", f"{len(jobs)} ({len(trains)} train, {len(trains)} attack, "
                 f"{len(jobs) - 2 * len(trains)} explain)"),
        ("workers killed", f"{len(chaos.killed)} (running: "
                           + ", ".join(f"{n} {k}" for k, n in sorted(hit_while.items())) + ")"),
        ("worker deaths seen", str(executor.deaths.workers_lost)),
        ("jobs retried", f"{sum(retried.values())} ("
                         + ", ".join(f"{n} {k}" for k, n in sorted(retried.items())) + ")"),
        ("jobs failed", f"{len(outcome.failed)}" + (" (" + ", ".join(
            f"{n} {k}" for k, n in sorted(failed.items())) + ")" if failed else "")),
        ("wall time", f"{wall_s:.1f} s (n=1), plus {executor.startup_s:.1f} s to start "
                      f"{workers} workers"),
        ("epochs trained / needed", f"{trained} / {needed} ({trained - needed} redone, "
                                    f"{100 * (trained - needed) / max(needed, 1):.1f} %)"),
        ("checkpoints", args.checkpoint_every),
    ]
    if args.compare_local:
        rows.append(("results.csv equal to local", f"{same} (local run {local_s:.1f} s)"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if chaos.error is not None:
        print(f"the killer stopped on {type(chaos.error).__name__}: {chaos.error}")
    for job_id, message in sorted(outcome.failed.items()):
        print(f"  failed {job_id}: {message}")
    return 0 if same is not False and chaos.error is None else 1


if __name__ == "__main__":
    sys.exit(main())
