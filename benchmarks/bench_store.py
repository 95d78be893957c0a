"""Cost of recording one finished job in a run directory that already holds N jobs.

    python benchmarks/bench_store.py
    python benchmarks/bench_store.py --jobs 10 100 570 --rows 40 --repeats 5

For each N, fills a fresh run directory with N finished jobs of ``--rows`` rows
each, then times what the runner does when one more job finishes: ``save_job``
(its rows, its status with digests, and its lines appended to results.csv and
jobs.csv). For comparison it also times ``write_results``, the full rebuild of
results.csv and jobs.csv from every job file, which the runner used to do after
every job and now does once at the start and once at the end of a run. The
median of ``--repeats`` timings counts.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchlab.store import JobRecord, RunStore


def _rows(job_id: str, n: int) -> list[dict]:
    return [{"job": job_id, "model": "cnn", "dataset": "mnist", "run": 0, "seed": 1,
             "epoch": None, "attack": "fgsm", "eps": 0.1 * (i % 3), "explainer": None,
             "metric": f"m{i}", "value": i / 7} for i in range(n)]


def _median_seconds(action, repeats: int) -> float:
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        action(i)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[10, 100, 570])
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"{'jobs in the run':>16} {'save_job (ms)':>14} {'full rebuild (ms)':>18}")
    for n in args.jobs:
        save, rebuild = _measure(n, args.rows, args.repeats)
        print(f"{n:>16} {save * 1000:>14.2f} {rebuild * 1000:>18.1f}")


def _measure(n: int, rows: int, repeats: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(Path(tmp))
        order = [f"attack-cnn-r{i:03d}-fgsm" for i in range(n)]
        for job_id in order:
            store.save_job(JobRecord(job_id, "attack", "ok", "", 1.0), _rows(job_id, rows))

        def save_one(i: int) -> None:
            job_id = f"extra-{i}"
            store.save_job(JobRecord(job_id, "attack", "ok", "", 1.0), _rows(job_id, rows))

        save = _median_seconds(save_one, repeats)
        rebuild = _median_seconds(lambda i: store.write_results(order), repeats)
    return save, rebuild

if __name__ == "__main__":
    main()
