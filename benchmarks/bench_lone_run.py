"""What a run trained alone costs, and the evaluation batch size.

    python benchmarks/bench_lone_run.py
    python benchmarks/bench_lone_run.py --train-size 20000 --rounds 3

A train job of ``benchlab run`` is training plus evaluation: the test split after
every epoch and, with learning curves, the evaluation set every ``eval_every`` steps.
Every run trains on one intra-op thread (results do not depend on scheduling), so
a run trained alone on a 2-core machine leaves a core idle while it trains; its
evaluations share their batches over the idle cores (``training.evaluate``'s
``workers``, bit-identical results). Measured here, in one process and interleaved
rounds, for ``cnn_bn`` on real MNIST, one epoch of ``--train-size`` images, the
whole test split after it and a curve point every 100 steps on its first 1000:

* ``lone, 1 core``: the run alone in a process limited to one thread (how a lone
  run computed before its evaluations used the idle core);
* ``lone``: the run alone in a process with every core (what ``benchlab run`` does);
* ``pack of 2``: two runs side by side, wall time per run (the rate a lone run is
  compared with: the machine fully used);

and, with ``--batch-sizes``, images/s of one evaluation of the test split on one
thread at each batch size (the per-epoch evaluation's and the curve's batch is
``train.test_batch_size``; attack jobs predict at ``evaluate.batch_size``).
Uses real MNIST from the data root; fetch it first.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
from bench_training import load, machine

from benchlab.components import DatasetSplit
from benchlab.data import data_root
from benchlab.training import TrainConfig, evaluate, train_runs


def _mnist(train: bool) -> DatasetSplit:
    from torchvision import datasets
    data = datasets.MNIST(str(data_root()), train=train, download=False)
    return DatasetSplit(data.data.unsqueeze(1).contiguous(), data.targets)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-size", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="*",
                        default=[32, 64, 128, 256, 500, 1000])
    args = parser.parse_args(argv)

    from benchlab.plugins import default_registry
    registry = default_registry()
    component = registry.get("model", "cnn_bn")
    info = registry.get("dataset", "mnist").obj.info
    params = component.validate_params({})

    def build() -> torch.nn.Module:
        return component.obj(info, params)

    full = _mnist(True)
    train = DatasetSplit(full.images[:args.train_size], full.labels[:args.train_size])
    test = _mnist(False)
    curve = DatasetSplit(test.images[:1000], test.labels[:1000])
    config = replace(TrainConfig(epochs=1), eval_every=100)
    cores = torch.get_num_threads()
    print(f"# {machine()}")
    print(f"# cnn_bn, 1 epoch of {len(train)} images, batch 64, test split of {len(test)} "
          f"after it, curve every 100 steps on 1000 images (batch {config.test_batch_size})")

    def job(runs: int, process_threads: int) -> Callable[[], float]:
        def seconds_per_run() -> float:
            torch.set_num_threads(process_threads)
            try:
                start = time.perf_counter()
                train_runs(build, train, test, config, seeds=list(range(1, runs + 1)),
                           pack=runs, curve_split=curve, threads=1)
                return (time.perf_counter() - start) / runs
            finally:
                torch.set_num_threads(cores)
        return seconds_per_run

    variants = {"lone, 1 core": job(1, 1), "lone": job(1, cores), "pack of 2": job(2, cores)}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, run in variants.items():
            times[name].append(run())
    print("\n| variant | seconds per run, best | median (range) | x 'lone, 1 core' (best) |")
    print("|---|---|---|---|")
    base = min(times["lone, 1 core"])
    for name, values in times.items():
        print(f"| {name} | {min(values):.1f} | {statistics.median(values):.1f} "
              f"({min(values):.1f}-{max(values):.1f}) | {base / min(values):.2f} |")

    if args.batch_sizes:
        torch.set_num_threads(1)
        model = build().eval()
        print(f"\n| evaluation batch (1 thread, {len(test)} images) | images/s, best of "
              f"{args.rounds} |")
        print("|---|---|")
        for size in args.batch_sizes:
            evaluate(model, DatasetSplit(test.images[:size * 2], test.labels[:size * 2]), size)
            best = 0.0
            for _ in range(args.rounds):
                start = time.perf_counter()
                evaluate(model, test, size)
                best = max(best, len(test) / (time.perf_counter() - start))
            print(f"| {size} | {best:.0f} |")
        torch.set_num_threads(cores)
    print(f"\n# {load()} at the end")


if __name__ == "__main__":
    main()
