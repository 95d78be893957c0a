"""Training throughput: the loop users write today against benchlab's ``train_runs``.

    python benchmarks/bench_training.py
    python benchmarks/bench_training.py --model cnn --seconds 60 --alternatives
    python benchmarks/bench_training.py --packs 1 2 3 4 --keep-freed-memory

Measures in one process, on this machine:

* the matrix-multiply rate (2048x2048 float32 and bfloat16 matmuls), the ceiling
  for a model whose cost is convolutions and linear layers;
* the training loop users write today: ``torchvision.datasets.MNIST`` with
  ``ToTensor`` + ``Normalize`` transforms through a ``DataLoader``, batch 64, SGD
  with momentum, the same model;
* ``benchlab.training.train_runs`` in float32 and bfloat16, one run at a time
  (``pack=1``) and in packs of :func:`benchlab.training.pack_size` runs;
* with ``--alternatives``, the intermediate steps and a rejected design:
  in-memory tensors, then channels-last, then ``torch.func.vmap`` over R stacked
  copies of the model (one set of grouped-convolution kernels for R runs);
* with ``--packs``, other pack sizes (how :func:`pack_size` was chosen); with
  ``--keep-freed-memory``, every loop with glibc keeping freed memory, which
  spares the page faults of re-allocating activations each step.

The variants are timed in interleaved rounds, so that load from other processes
hits all of them alike. ``best`` is each loop's fastest round (the least disturbed
one; its ratio is best over best); beside it are the median and range over rounds,
and the ratio to the user loop taken within each round. On a machine shared with
other work, trust ``best`` and look at the spread. A
training image costs 3x the forward FLOPs of the convolution and linear layers
(forward, gradient of the input, gradient of the weights): 72 MFLOP for ``cnn`` and
``cnn_bn`` on 28x28 images. Uses real MNIST from the data root; fetch it first.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from benchlab.components import DatasetInfo, DatasetSplit
from benchlab.environment import cpu_has_bf16
from benchlab.training import THREADS_PER_RUN, TrainConfig, pack_size, train_runs

BATCH = 64
TEST_IMAGES = 1000  # evaluation after the epoch is not part of the timed training


def machine() -> str:
    """CPU model, threads and library versions, for the header of the table."""
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{model}; {torch.get_num_threads()} threads; torch {torch.__version__}; "
            f"CPU capability {torch.backends.cpu.get_cpu_capability()}; {load()}")


def load() -> str:
    """The 1-minute load average: other processes on the machine skew every number."""
    try:
        return f"load average {os.getloadavg()[0]:.1f}"
    except OSError:
        return "load average unknown"


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory instead of returning it to the system.

    A training step frees and re-allocates the same large activation buffers;
    returned to the system, every re-allocation page-faults on first touch. This
    is a process-wide setting (``mallopt``), so it is an option of this script,
    not something the library does behind its caller's back.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
    return bool(libc.mallopt(m_trim_threshold, 1 << 30)) and bool(
        libc.mallopt(m_mmap_threshold, 32 << 20))


def matmul_gflops(dtype: torch.dtype, size: int = 2048, seconds: float = 1.0) -> float:
    """Best rate of ``size`` x ``size`` matrix products within ``seconds``."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    a @ b
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


def training_flops(model: nn.Module, shape: Sequence[int]) -> float:
    """FLOPs of one training image: 3x the multiply-adds x 2 of conv and linear layers."""
    macs = 0

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] \
                * module.kernel_size[1]
            macs += output[0].numel() * per_output
        elif isinstance(module, nn.Linear):
            macs += output[0].numel() * module.in_features

    probe = copy.deepcopy(model).eval()
    hooks = [m.register_forward_hook(count) for m in probe.modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        probe(torch.rand(1, *shape))
    for hook in hooks:
        hook.remove()
    return 3 * 2 * macs


# -- the loops being compared ----------------------------------------------------------

def user_loop(model: nn.Module, dataset: torch.utils.data.Dataset) -> Callable[[int], float]:
    """The loop of the original experiment; returns ``rate(images) -> images/s``."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()

    def rate(images: int) -> float:
        steps = max(1, images // BATCH)
        batches = iter(loader)
        start = time.perf_counter()
        for _ in range(steps):
            data, target = next(batches)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(data), target)
            loss.backward()
            optimizer.step()
        return steps * BATCH / (time.perf_counter() - start)

    return rate


def benchlab_loop(build: Callable[[], nn.Module], train: DatasetSplit, test: DatasetSplit,
                  precision: str, pack: int) -> Callable[[int], float]:
    """``train_runs`` on the first ``images`` training images, ``pack`` seeds at once.

    The rate is the pack's: all images of all runs over the slowest run's epoch time.
    Every run computes on ``THREADS_PER_RUN`` intra-op threads, as in ``benchlab run``
    (a pack of 1 is the cost of a run trained alone; it leaves the other cores idle).
    """
    config = TrainConfig(epochs=1, precision=precision)  # type: ignore[arg-type]

    def rate(images: int) -> float:
        per_run = max(BATCH, images // pack)
        results = train_runs(build, train.head(per_run), test.head(TEST_IMAGES), config,
                             seeds=range(pack), pack=pack, threads=THREADS_PER_RUN)
        return pack * per_run / max(r.epochs[0].epoch_time_s for r in results)

    return rate


def tensor_loop(build: Callable[[], nn.Module], train: DatasetSplit,
                channels_last: bool) -> Callable[[int], float]:
    """In-memory tensors, no DataLoader; optionally channels-last. Native dropout."""
    model = build().train()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def rate(images: int) -> float:
        steps = max(1, images // BATCH)
        order = torch.randperm(len(train))
        start = time.perf_counter()
        for i in range(steps):
            batch = order[i * BATCH:(i + 1) * BATCH]
            x = train.images[batch].float().div_(255).contiguous(memory_format=memory_format)
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), train.labels[batch]).backward()
            optimizer.step()
        return steps * BATCH / (time.perf_counter() - start)

    return rate


def vmap_loop(build: Callable[[], nn.Module], train: DatasetSplit,
              runs: int) -> Callable[[int], float]:
    """``runs`` models stacked and trained by one vmapped step (grouped convolutions)."""
    models = [build().train() for _ in range(runs)]
    params, buffers = stack_module_state(models)  # BatchNorm statistics stacked too
    template = copy.deepcopy(models[0]).to("meta")
    optimizer = torch.optim.SGD(list(params.values()), lr=0.01, momentum=0.9)

    def loss(p: dict, b: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(template, (p, b), (x,)), y)

    step_losses = vmap(loss, randomness="different")

    def rate(images: int) -> float:
        steps = max(1, images // (BATCH * runs))
        orders = [torch.randperm(len(train)) for _ in range(runs)]
        start = time.perf_counter()
        for i in range(steps):
            batch = torch.stack([o[i * BATCH:(i + 1) * BATCH] for o in orders])
            x = train.images[batch].float().div_(255)
            optimizer.zero_grad(set_to_none=True)
            step_losses(params, buffers, x, train.labels[batch]).sum().backward()
            optimizer.step()
        return steps * BATCH * runs / (time.perf_counter() - start)

    return rate


# -- measurement ------------------------------------------------------------------------

def measure(loops: dict[str, Callable[[int], float]], seconds: float, rounds: int
            ) -> dict[str, list[float]]:
    """images/s of every loop in ``rounds`` interleaved rounds of about equal time each.

    A first untimed call per loop pays for kernel selection and warms the caches,
    and gives the rate from which each loop's share of ``seconds`` is sized.
    """
    guess = {name: loop(4 * BATCH * 2) for name, loop in loops.items()}
    slot = seconds / (rounds * len(loops))
    rates: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(rounds):
        for name, loop in loops.items():
            rates[name].append(loop(max(4 * BATCH, int(guess[name] * slot))))
    return rates


def load_mnist(train: bool):
    """torchvision's MNIST from benchlab's data root, as users load it."""
    from torchvision import datasets, transforms

    from benchlab.data import data_root

    transform = transforms.Compose([transforms.ToTensor(),
                                    transforms.Normalize((0.1307,), (0.3081,))])
    return datasets.MNIST(str(data_root()), train=train, download=False, transform=transform)


def summary(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"


def summary_ratio(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn_bn", help="a registered model (cnn, cnn_bn)")
    parser.add_argument("--seconds", type=float, default=40.0,
                        help="total time for the timed rounds (plus one warm-up call each)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--packs", type=int, nargs="+", default=None,
                        help="pack sizes to time (default: 1 and pack_size)")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="glibc only: keep freed memory in the process (all loops)")
    parser.add_argument("--alternatives", action="store_true",
                        help="also time in-memory, channels-last and vmap-packed loops")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.keep_freed_memory and not keep_freed_memory():
        parser.error("--keep-freed-memory needs glibc's mallopt")

    from benchlab.plugins import default_registry

    registry = default_registry()
    component = registry.get("model", args.model)
    info: DatasetInfo = registry.get("dataset", "mnist").obj.info
    params = component.validate_params({})

    def build() -> nn.Module:
        return component.obj(info, params)

    user_data = load_mnist(train=True)
    train = DatasetSplit(user_data.data.unsqueeze(1).contiguous(), user_data.targets)
    test_data = load_mnist(train=False)
    test = DatasetSplit(test_data.data.unsqueeze(1).contiguous(), test_data.targets)

    # The transforms normalise, as in the original; the model must not do it twice.
    user_model = build()
    for name, value in (("mean", 0.0), ("std", 1.0)):
        if isinstance(getattr(user_model, name, None), torch.Tensor):
            getattr(user_model, name).fill_(value)

    flops = training_flops(build(), info.shape)
    packed = pack_size(TrainConfig(), "cpu")
    print(machine())
    print(f"model {args.model}: {flops / 1e6:.1f} MFLOP per training image; batch {BATCH}; "
          f"pack_size {packed}; {args.rounds} rounds of ~{args.seconds:.0f} s in all"
          + ("; freed memory kept (mallopt)" if args.keep_freed_memory else ""))
    gflops = {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16)}

    loops: dict[str, Callable[[int], float]] = {"user loop (DataLoader)": user_loop(
        user_model, user_data)}
    precision_of = {"user loop (DataLoader)": "fp32"}
    if args.alternatives:
        loops["in-memory tensors"] = tensor_loop(build, train, channels_last=False)
        loops["+ channels-last"] = tensor_loop(build, train, channels_last=True)
        loops[f"vmap, {packed} stacked runs"] = vmap_loop(build, train, max(2, packed))
        precision_of.update(dict.fromkeys(list(loops)[1:], "fp32"))
    for precision in ("fp32", "bf16"):
        for pack in sorted(set(args.packs or (1, packed))):
            name = f"train_runs {precision}, pack {pack}"
            loops[name] = benchlab_loop(build, train, test, precision, pack)
            precision_of[name] = precision

    rates = measure(loops, args.seconds, args.rounds)
    # Measured before and after the loops; the faster one was the less disturbed.
    gflops = {"fp32": max(gflops["fp32"], matmul_gflops(torch.float32)),
              "bf16": max(gflops["bf16"], matmul_gflops(torch.bfloat16))}
    print(f"matmul 2048^2 (best of before and after): fp32 {gflops['fp32']:.0f} GFLOP/s, "
          f"bf16 {gflops['bf16']:.1f} GFLOP/s")
    bf16_in_hardware = cpu_has_bf16()
    if not bf16_in_hardware:
        print("this CPU has no bfloat16 instructions (AVX512-BF16 or AMX): bf16 is emulated, "
              "and its 'of matmul' is not a roofline")
    reference = rates["user loop (DataLoader)"]
    print()
    print(f"{'loop':<30}{'best':>7}{'x user':>8}{'of matmul':>11}"
          f"{'median (range) images/s':>28}{'x user, per round':>22}")
    for name, values in rates.items():
        best = max(values)
        ratios = [v / r for v, r in zip(values, reference, strict=True)]
        ceiling = gflops[precision_of[name]]
        reached = (f"{best * flops / 1e9 / ceiling:.0%}" if ceiling > 0
                   and (precision_of[name] == "fp32" or bf16_in_hardware) else "emulated")
        print(f"{name:<30}{best:>7.0f}{best / max(reference):>8.2f}{reached:>11}"
              f"{summary(values):>28}{summary_ratio(ratios):>22}")
    print(f"({load()} at the end)")


if __name__ == "__main__":
    main()
