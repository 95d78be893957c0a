"""What checkpoints inside train jobs cost: training with and without them, one process.

    python benchmarks/bench_checkpoint.py
    python benchmarks/bench_checkpoint.py --images 20000 --every 100 --rounds 5

Trains a pack of runs of ``cnn_bn`` (one per core, one thread each, as ``benchlab
run`` does) on real MNIST for two epochs, in interleaved rounds:

* ``off``: no checkpoints;
* ``epoch``: a checkpoint of every run after the first epoch (the default of
  ``benchlab run``), written to a run directory as the runner writes it
  (:class:`benchlab.checkpoints.Checkpoints`: encoded, SHA-256, atomic, fsync);
* ``every N``: also every N optimisation steps (``--checkpoint-every N``).

and prints, per variant, the training time (fastest round, the least disturbed one,
and the median), its ratio to ``off`` within the same round, and the cost of one
checkpoint measured on its own (taking it, encoding it, writing it), from which the
overhead of a full 60,000-image epoch follows. Uses real MNIST from the data root.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from benchlab.checkpoints import Checkpoints
from benchlab.components import DatasetInfo, DatasetSplit
from benchlab.execute import encode_checkpoint
from benchlab.training import THREADS_PER_RUN, Checkpointing, TrainConfig, pack_size, train_runs


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), model)
    except OSError:
        pass
    return (f"{model}; {os.cpu_count()} cores; torch {torch.__version__}; "
            f"load average {os.getloadavg()[0]:.1f}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12000,
                        help="training images per epoch (default 12000)")
    parser.add_argument("--every", type=int, default=50,
                        help="steps between checkpoints of the 'every N' variant")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    from benchlab.data import data_root
    from benchlab.plugins import default_registry

    registry = default_registry()
    mnist = registry.get("dataset", "mnist").obj
    info: DatasetInfo = mnist.info
    component = registry.get("model", "cnn_bn")
    params = component.validate_params({})
    train: DatasetSplit = mnist.load("train", data_root()).head(args.images)
    test: DatasetSplit = mnist.load("test", data_root()).head(1000)
    config = TrainConfig(epochs=2, batch_size=64, test_batch_size=1000)
    pack = pack_size(config, "cpu") // THREADS_PER_RUN
    seeds = list(range(1, pack + 1))
    steps = -(-args.images // config.batch_size)

    def build():
        return component.obj(info, params)

    with tempfile.TemporaryDirectory() as tmp:
        store = Checkpoints(Path(tmp))
        saved: list[float] = []

        def save(i: int, state: dict) -> None:
            start = time.perf_counter()
            store.save(f"train-r{i:02d}", encode_checkpoint(state), "bench")
            saved.append(time.perf_counter() - start)

        variants = {"off": None, "epoch": Checkpointing(save=save),
                    f"every {args.every}": Checkpointing(save=save, every=args.every)}
        times: dict[str, list[float]] = {name: [] for name in variants}
        ratios: dict[str, list[float]] = {name: [] for name in variants}
        counts: dict[str, int] = {}
        train_runs(build, train.head(640), test, config, seeds, pack=pack,
                   threads=THREADS_PER_RUN)  # warm-up
        for _ in range(args.rounds):
            this_round = {}
            for name, checkpoints in variants.items():
                saved.clear()
                results = train_runs(build, train, test, config, seeds, pack=pack,
                                     threads=THREADS_PER_RUN, checkpoints=checkpoints)
                this_round[name] = sum(r.epoch_time_s for r in results[0].epochs)
                counts[name] = len(saved)
            for name, seconds in this_round.items():
                times[name].append(seconds)
                ratios[name].append(seconds / this_round["off"])
        # one checkpoint on its own: take it (in train_runs), encode, hash, write, fsync
        saved.clear()
        train_runs(build, train.head(64 * 40), test, config, seeds, pack=pack,
                   threads=THREADS_PER_RUN, checkpoints=Checkpointing(save=save, every=4))
        one = statistics.median(saved)
        size = (Path(tmp) / "checkpoints" / "train-r00.pt").stat().st_size

    print(f"# {machine()}")
    print(f"# cnn_bn, {pack} runs side by side, {args.images} images x 2 epochs, "
          f"{steps} steps per epoch, {args.rounds} interleaved rounds")
    print(f"{'variant':<12} {'checkpoints':>11} {'best s':>8} {'median s':>9} "
          f"{'x off (median of rounds)':>25}")
    for name in variants:
        print(f"{name:<12} {counts[name]:>11} {min(times[name]):>8.2f} "
              f"{statistics.median(times[name]):>9.2f} {statistics.median(ratios[name]):>25.4f}")
    step = min(times["off"]) / (2 * steps)
    print(f"one checkpoint ({size / 1e6:.1f} MB, written by the pack's thread): {one * 1e3:.1f} ms "
          f"(median of {len(saved)}); one training step of the pack: {step * 1e3:.1f} ms")
    full = -(-60000 // config.batch_size)
    print(f"overhead per checkpoint at the end of a 60,000-image epoch ({full} steps): "
          f"{100 * one / (full * step):.3f}%; every {args.every} steps: "
          f"{100 * one / (args.every * step):.2f}%")


if __name__ == "__main__":
    main()
