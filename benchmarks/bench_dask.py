"""The local executor against a Dask LocalCluster on the same machine, and Dask's cost per job.

    python benchmarks/bench_dask.py
    python benchmarks/bench_dask.py --model cnn_bn --runs 4 --train-size 60000 --precision bf16

Measures, on real MNIST from the data root, with a fresh model cache each time:

1. the wall time of a suite of ``--runs`` seeds x ``--epochs`` epochs of one model
   with ``--executor local`` (this process, packs of one run per core);
2. the same suite on a ``LocalCluster`` of one single-threaded worker process per
   core (cluster start-up timed apart), and that the two ``results.csv`` agree;
3. Dask's overhead per job, on that idle cluster: a task that receives a
   scattered trained model's weights and returns a product of the size of a
   train job's (the weights and epoch records) and does nothing else, submitted
   and collected one at a time, ``--null-jobs`` times; plus scattering the
   weights once. Set against the measured time of a one-epoch training job it
   says what share of a job Dask costs, to extrapolate to larger clusters.

Wall times are of single runs (n = 1); the overhead is a mean over the null jobs
with its standard deviation. Run it alone on the machine (``flock``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchlab import runner
from benchlab.cache import ModelCache
from benchlab.plugins import default_registry
from benchlab.suite import load_suite

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"epoch_time_s", "images_per_s", "attack_time_s", "explain_images_per_s",
          "step_eval_time_s"}


def _echo(state: dict, product_of: dict) -> dict:
    """A null job: touches its input, returns a product as large as a train job's."""
    return {"state_dict": {k: v.clone() for k, v in product_of.items()},
            "epochs": [{"epoch": 1.0, "test_acc": float(len(state))}]}


class _Kept:
    """The executor, left open after the run for the null jobs."""

    def __init__(self, executor):
        self._executor = executor

    def __getattr__(self, name):
        return getattr(self._executor, name)

    def close(self) -> None:
        pass


def _measurements(out: Path) -> pd.DataFrame:
    frame = pd.read_csv(out / "results.csv")
    frame = frame[~frame["metric"].isin(TIMING)]
    return frame.sort_values(list(frame.columns[:-1]), na_position="first").reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-size", type=int, default=20000)
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--workers", type=int, default=None, help="default: one per core")
    parser.add_argument("--null-jobs", type=int, default=20)
    args = parser.parse_args(argv)

    import os

    from benchlab.executors.dask import DaskExecutor

    registry = default_registry()
    overrides = [f"models=[{{name: {args.model}}}]", f"train.runs={args.runs}",
                 f"train.epochs={args.epochs}", f"train.precision={args.precision}",
                 f"dataset.train_size={args.train_size}", f"dataset.test_size={args.test_size}"]
    suite = load_suite(str(ROOT / "suites" / "bn_vs_plain.yaml"), registry, overrides)
    workers = args.workers or os.cpu_count() or 1
    print(f"suite: bn_vs_plain with {' '.join(overrides)}; {workers} workers x 1 thread")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        local = runner.run_suite(suite, registry, tmp / "local", device="cpu",
                                 cache=ModelCache(tmp / "cache-local"), log=lambda s: None)
        local_s = time.perf_counter() - started
        assert not local.failed, local.failed

        started = time.perf_counter()
        executor = DaskExecutor("cpu", workers=workers)  # the LocalCluster benchlab starts
        client = executor.client
        client.wait_for_workers(workers)
        startup_s = time.perf_counter() - started
        try:
            started = time.perf_counter()
            on_dask = runner.run_suite(
                suite, registry, tmp / "dask", device="cpu",
                cache=ModelCache(tmp / "cache-dask"), log=lambda s: None,
                executor=lambda **_: _Kept(executor))
            dask_s = time.perf_counter() - started
            assert not on_dask.failed, on_dask.failed
            same = _measurements(tmp / "local").equals(_measurements(tmp / "dask"))

            jobs = pd.read_csv(tmp / "dask" / "jobs.csv")
            train_s = jobs.loc[jobs["kind"] == "train", "seconds"]
            rows = pd.read_csv(tmp / "dask" / "results.csv")
            epoch_s = rows.loc[rows["metric"] == "epoch_time_s", "value"]
            state = ModelCache(tmp / "cache-dask")
            key = next(p.name for p in (tmp / "cache-dask").glob("*/*") if p.is_dir())
            weights = state.load(key)[0]
            megabytes = sum(t.numel() * t.element_size() for t in weights.values()) / 1e6

            started = time.perf_counter()
            (shared,) = client.scatter([weights], hash=False)
            scatter_s = time.perf_counter() - started
            rounds = []
            for _ in range(args.null_jobs):
                started = time.perf_counter()
                client.submit(_echo, shared, weights, pure=False).result()
                rounds.append(time.perf_counter() - started)
        finally:
            executor.close()

    per_job = statistics.mean(rounds)
    spread = statistics.stdev(rounds) if len(rounds) > 1 else float("nan")
    job = statistics.mean(train_s)
    print(f"local executor:       {local_s:8.1f} s wall (n=1)")
    print(f"LocalCluster:         {dask_s:8.1f} s wall (n=1), plus {startup_s:.1f} s to start "
          f"{workers} workers")
    print(f"results.csv equal (timing metrics aside): {same}")
    print(f"train job on a worker: {job:.2f} s mean over {len(train_s)} jobs "
          f"({args.epochs} epoch(s) of {args.train_size} images, {args.precision})")
    epoch, epoch_sd = statistics.mean(epoch_s), statistics.stdev(epoch_s)
    print(f"  of which training: {epoch:.2f} ± {epoch_sd:.2f} s per epoch (mean ± std, "
          f"n={len(epoch_s)}); the rest (evaluation on {args.test_size} test images, "
          f"set-up): {job - epoch * args.epochs:.2f} s")
    print(f"weights: {megabytes:.2f} MB, scattered once in {scatter_s * 1000:.1f} ms")
    print(f"Dask overhead per job (submit, weights in, train-sized product back, collect): "
          f"{per_job * 1000:.1f} ± {spread * 1000:.1f} ms (mean ± std, n={len(rounds)}), "
          f"{100 * per_job / job:.2f} % of this train job; "
          f"{100 * per_job / (job * 60000 / args.train_size / args.epochs):.3f} % of a "
          f"one-epoch job on the full 60,000 images")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
