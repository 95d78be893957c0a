"""Where one training step's time goes: ``torch.profiler`` over steps of ``cnn`` or
``cnn_bn`` trained as ``benchlab run`` trains a run (one intra-op thread, batch 64,
channels-last, the run's seeded dropout masks, fused SGD, bf16 autocast when asked).

    python benchmarks/profile_step.py --precision bf16
    python benchmarks/profile_step.py --precision fp32 --model cnn --steps 60

Prints the step time, its FLOP rate against the one-thread matmul rate measured in the
same process, and the operators by self time. Synthetic batches of MNIST's shape (the
cost of a step does not depend on the pixel values). Run it on an otherwise idle
machine: other load changes every number.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

import benchlab_plugins.cnn as cnn
from benchlab.components import DatasetInfo
from benchlab.training.config import TrainConfig
from benchlab.training.randomness import seed_dropouts
from benchlab.training.run import _optimizer, _Step, prepare
from bench_training import BATCH, matmul_gflops, training_flops  # a sibling script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["cnn", "cnn_bn"], default="cnn_bn")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    parser.add_argument("--steps", type=int, default=60, help="timed steps (30 profiled)")
    args = parser.parse_args()

    torch.set_num_threads(1)
    device = torch.device("cpu")
    info = DatasetInfo("mnist", 10, (1, 28, 28), (0.1307,), (0.3081,))
    build = cnn.build_cnn_bn if args.model == "cnn_bn" else cnn.build_cnn
    params = cnn.CNNBNParams() if args.model == "cnn_bn" else cnn.CNNParams()
    model = prepare(lambda: build(info, params), 0, device)
    seed_dropouts(model, torch.Generator().manual_seed(0))
    config = TrainConfig(epochs=1, precision=args.precision)
    step = _Step(model, _optimizer(model, config, device), config, device, True)
    step.steps = 10**6  # a constant learning rate: the schedule does not matter here
    images = torch.randint(0, 256, (args.steps, BATCH, 1, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (args.steps, BATCH))
    for i in range(10):
        step(images[i % args.steps], labels[i % args.steps], i)
    start = time.perf_counter()
    for i in range(args.steps):
        step(images[i], labels[i], i)
    seconds = (time.perf_counter() - start) / args.steps
    peak = matmul_gflops(torch.bfloat16 if args.precision == "bf16" else torch.float32)
    rate = BATCH * training_flops(model, info.shape) / seconds / 1e9
    print(f"{args.model} {args.precision}, one thread: {seconds * 1e3:.1f} ms a step, "
          f"{BATCH / seconds:.0f} images/s, {rate:.0f} GFLOP/s = {rate / peak:.0%} of the "
          f"one-thread {args.precision} matmul rate ({peak:.0f} GFLOP/s)")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(min(30, args.steps)):
            step(images[i], labels[i], i)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
