"""What learning curves at step resolution cost: training with and without ``eval_every``.

    python benchmarks/bench_step_eval.py
    python benchmarks/bench_step_eval.py --sizes 500 1000 2000 --every 100 --rounds 3

Trains ``cnn_bn`` on the first ``--images`` MNIST training images, one epoch, with
``train_runs`` exactly as a suite does (a pack of runs side by side, one per core),
in float32 and bfloat16, without a learning curve and with one evaluated every
``--every`` steps on the first N test images for each N of ``--sizes``. The
variants run in interleaved rounds so that load from other processes hits all
alike. Reported per variant (median over rounds):

* ``wall s``: the whole ``train_runs`` call (its end-of-epoch evaluation on 1000
  test images included in every variant);
* ``eval ms``: one learning-curve evaluation, from the runs' own records;
* ``step ms``: one training step (``epoch_time_s`` / steps; evaluations excluded);
* ``cost``: ``eval ms / (every x step ms)``, the share of training time the curve
  adds at this ``every``, and ``wall +``: the same read off the wall times (it
  includes the evaluation at step 0, so it is a little higher on a short run).

Uses real MNIST from the data root; fetch it first (``benchlab data fetch mnist``).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Sequence

import torch

from benchlab.components import DatasetSplit
from benchlab.data import data_root
from benchlab.training import TrainConfig, pack_size, train_runs


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn_bn")
    parser.add_argument("--images", type=int, default=12800, help="training images (1 epoch)")
    parser.add_argument("--every", type=int, default=100, help="eval_every, in steps")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000],
                        help="evaluation set sizes (the first N test images)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)

    from benchlab.plugins import default_registry

    registry = default_registry()
    component = registry.get("model", args.model)
    dataset = registry.get("dataset", "mnist").obj
    info, params = dataset.info, component.validate_params({})
    train = dataset.load("train", data_root()).head(args.images)
    test = dataset.load("test", data_root())
    end_of_epoch = test.head(1000)

    def build() -> torch.nn.Module:
        return component.obj(info, params)

    variants = [(p, s) for p in args.precisions for s in [None, *args.sizes]]
    pack = pack_size(TrainConfig(), "cpu")
    seeds = list(range(1, pack + 1))
    steps = math.ceil(len(train) / 64)
    walls: dict[tuple[str, int | None], list[float]] = {v: [] for v in variants}
    evals: dict[tuple[str, int | None], list[float]] = {v: [] for v in variants}
    step_ms: dict[tuple[str, int | None], list[float]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for precision, size in variants:
            config = TrainConfig(epochs=1, precision=precision,
                                 eval_every=args.every if size else None)
            curve: DatasetSplit | None = test.head(size) if size else None
            started = time.perf_counter()
            runs = train_runs(build, train, end_of_epoch, config, seeds, pack=pack,
                              curve_split=curve)
            walls[(precision, size)].append(time.perf_counter() - started)
            step_ms[(precision, size)] += [r.epochs[0].epoch_time_s / steps * 1000 for r in runs]
            evals[(precision, size)] += [s.eval_time_s * 1000 for r in runs for s in r.steps]

    try:
        load = f"load average {os.getloadavg()[0]:.1f}"
    except OSError:
        load = "load average unknown"
    print(f"{args.model}, {len(train)} training images ({steps} steps), pack of {pack}, "
          f"eval_every {args.every}, {args.rounds} rounds; torch {torch.__version__}; {load}")
    print("| precision | evaluation set | wall s | eval ms | step ms | cost | wall + |")
    print("|---|---|---|---|---|---|---|")
    for precision, size in variants:
        wall = statistics.median(walls[(precision, size)])
        base = statistics.median(walls[(precision, None)])
        step = statistics.median(step_ms[(precision, size)])
        if size is None:
            print(f"| {precision} | none | {wall:.1f} | – | {step:.1f} | – | – |")
            continue
        each = statistics.median(evals[(precision, size)])
        cost = each / (args.every * step)
        print(f"| {precision} | first {size} test images | {wall:.1f} | {each:.0f} | "
              f"{step:.1f} | {cost:.1%} | {wall / base - 1:+.1%} |")


if __name__ == "__main__":
    main()
