"""What each training procedure costs per epoch against the standard step, one process.

    python benchmarks/bench_procedures.py
    python benchmarks/bench_procedures.py --model cnn --images 6000 --rounds 3 --steps 40

Trains a pack of runs (one per core, one thread each, as ``benchlab run`` does) of
one model on real MNIST for one epoch with each built-in procedure, in interleaved
rounds, and prints per procedure: the fastest round's training images per second
(the pack's throughput), its time relative to ``standard`` within the same round
(median over rounds), the forward and backward passes per step the procedure
declares (``passes=`` at registration), and the seconds a full 60,000-image epoch
would take at that rate. ``pgd_at`` and ``trades`` run with ``--steps`` attack steps
(the papers' MNIST setting is 40; their cost grows with it, as their passes say).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence

from bench_checkpoint import machine

from benchlab.components import DatasetInfo, DatasetSplit
from benchlab.execute.train import bind_procedure
from benchlab.training import THREADS_PER_RUN, TrainConfig, pack_size, train_runs


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn_bn", choices=["cnn", "cnn_bn"])
    parser.add_argument("--images", type=int, default=3000,
                        help="training images of the epoch (default 3000)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10,
                        help="attack steps of pgd_at and trades (default 10)")
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args(argv)

    from benchlab.data import data_root
    from benchlab.plugins import default_registry

    registry = default_registry()
    mnist = registry.get("dataset", "mnist").obj
    info: DatasetInfo = mnist.info
    model = registry.get("model", args.model)
    model_params = model.validate_params({})
    train: DatasetSplit = mnist.load("train", data_root()).head(args.images)
    test: DatasetSplit = mnist.load("test", data_root()).head(500)
    config = TrainConfig(epochs=1, batch_size=args.batch_size, test_batch_size=500,
                         optimizer="adam", lr=1e-3)
    pack = pack_size(config, "cpu") // THREADS_PER_RUN
    seeds = list(range(1, pack + 1))

    given = {"standard": {}, "fgsm_at": {"eps": 0.3},
             "pgd_at": {"eps": 0.3, "steps": args.steps, "alpha": 2.5 * 0.3 / args.steps},
             "trades": {"eps": 0.3, "steps": args.steps, "alpha": 2.5 * 0.3 / args.steps}}
    procedures, passes = {}, {}
    for name, values in given.items():
        component = registry.get("procedure", name)
        params = component.validate_params(values)
        procedures[name] = bind_procedure(component, params)
        declared = component.extra.get("passes", 1)
        passes[name] = declared(params) if callable(declared) else declared

    def build():
        return model.obj(info, model_params)

    train_runs(build, train.head(400), test, config, seeds, pack=pack,
               threads=THREADS_PER_RUN, procedure=procedures["fgsm_at"])  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in procedures}
    ratios: dict[str, list[float]] = {name: [] for name in procedures}
    for _ in range(args.rounds):
        seconds = {}
        for name, procedure in procedures.items():
            results = train_runs(build, train, test, config, seeds, pack=pack,
                                 threads=THREADS_PER_RUN, procedure=procedure)
            seconds[name] = results[0].epochs[0].epoch_time_s
        for name, s in seconds.items():
            rates[name].append(pack * args.images / s)
            ratios[name].append(s / seconds["standard"])

    print(f"# {machine()}")
    print(f"# {args.model}, {pack} runs side by side, one epoch of {args.images} images, "
          f"batch {args.batch_size}, Adam; pgd_at and trades with {args.steps} steps; "
          f"{args.rounds} interleaved rounds")
    print(f"{'procedure':<10} {'passes/step':>11} {'images/s':>9} {'x standard':>11} "
          f"{'s per 60k-image epoch of one run':>33}")
    for name in procedures:
        best = max(rates[name])
        print(f"{name:<10} {passes[name]:>11} {best:>9.0f} "
              f"{statistics.median(ratios[name]):>11.2f} {60000 * pack / best:>33.0f}")


if __name__ == "__main__":
    main()
