"""Throughput of the fgsm, ifgsm and gradcam plugins on a cnn_bn model, per batch size.

    python benchmarks/bench_attacks.py
    python benchmarks/bench_attacks.py --images 1000 --batch-sizes 32 64 256 1000 --repeats 3

Prints images per second for each task and batch size, and each task's cost
relative to one plain forward + backward pass (loss.backward() with parameter
gradients, as in a training step) over the same images at the same batch size.
``ifgsm`` runs ``--steps`` steps on the first ``--ifgsm-images`` images, and its rate
is also given scaled to the default 100 steps.
A second table compares ifgsm with all epsilons stacked in one call against one
call per epsilon, for a grid-sized batch and for the full one.

Uses the test split of MNIST when its files are present and verified in the data
root, synthetic digit-like images otherwise (throughput does not depend on the
pixel values). Untrained weights: the cost of a pass does not depend on them.
Each configuration is timed ``--repeats`` times, interleaved with the others so
that load from other processes hits all of them alike; the fastest run counts.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from benchlab.components import DatasetInfo
from benchlab_plugins.fgsm import FGSMParams, IFGSMParams, fgsm, ifgsm
from benchlab_plugins.gradcam import GradCAMParams, gradcam

MNIST_INFO = DatasetInfo(name="mnist", num_classes=10, shape=(1, 28, 28),
                         mean=(0.1307,), std=(0.3081,))
EPS = (0.1, 0.2, 0.3)


class StandInCNN(nn.Module):
    """The cnn_bn architecture, for a checkout whose model plugin is not installed."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.bn2 = nn.BatchNorm2d(64)
        self.dropout1 = nn.Dropout(0.25)
        self.fc1 = nn.Linear(9216, 128)
        self.dropout2 = nn.Dropout(0.5)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1((x - 0.1307) / 0.3081)))
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.relu(self.fc1(torch.flatten(self.dropout1(x), 1)))
        return self.fc2(self.dropout2(x))


def build_model() -> tuple[nn.Module, str]:
    from benchlab.plugins import default_registry

    try:
        component = default_registry().get("model", "cnn_bn")
    except KeyError:
        return StandInCNN().eval(), "stand-in cnn_bn"
    return component.obj(MNIST_INFO, component.params()).eval(), "registry cnn_bn"


def load_images(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The first ``n`` MNIST test images if present locally, else synthetic strokes."""
    try:
        from benchlab.data import data_root
        from benchlab.plugins import default_registry

        dataset = default_registry().get("dataset", "mnist").obj
        root = data_root()
        if all(status.verified for status in dataset.files(root)):
            split = dataset.load("test", root).head(n)
            return split.floats(), split.labels, "MNIST test split"
    except Exception:  # noqa: BLE001 - any problem with the data means synthetic images
        pass
    generator = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 1, 28, 28)
    rows = torch.arange(28.0).view(28, 1)
    cols = torch.arange(28.0).view(1, 28)
    centre = torch.rand(n, 2, generator=generator) * 8 + 10
    radius = torch.rand(n, generator=generator) * 4 + 5
    distance = ((rows - centre[:, 0, None, None]) ** 2
                + (cols - centre[:, 1, None, None]) ** 2).sqrt()
    images[:, 0] = (1 - (distance - radius[:, None, None]).abs() / 1.5).clamp(0, 1)
    return images, torch.randint(0, 10, (n,), generator=generator), "synthetic rings"


def plain_forward_backward(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                           batch_size: int) -> None:
    """The reference: a training-style pass, gradients for all parameters."""
    for start in range(0, images.shape[0], batch_size):
        chunk = slice(start, start + batch_size)
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(images[chunk]), labels[chunk]).backward()


def best_of(tasks: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Fastest wall time of each task over ``repeats`` interleaved rounds.

    One untimed round comes first: the first call at a new batch shape pays for
    oneDNN's kernel selection and memory allocation.
    """
    for task in tasks.values():
        task()
    best = {name: float("inf") for name in tasks}
    for _ in range(repeats):
        for name, task in tasks.items():
            started = time.perf_counter()
            task()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 256, 1000])
    parser.add_argument("--steps", type=int, default=10, help="ifgsm steps to time")
    parser.add_argument("--ifgsm-images", type=int, default=200,
                        help="images of the ifgsm timings (a per-image rate, kept short)")
    parser.add_argument("--grid-images", type=int, default=10,
                        help="batch of the stacked-versus-per-eps comparison")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, model_source = build_model()
    images, labels, data_source = load_images(args.images)
    n = images.shape[0]
    m = min(n, args.ifgsm_images)
    print(f"{model_source} on {n} images ({data_source}); eps {list(EPS)}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    tasks: dict[str, Callable[[], object]] = {}
    for b in args.batch_sizes:
        tasks[f"fwd+bwd/{b}"] = lambda b=b: plain_forward_backward(model, images, labels, b)
        tasks[f"fgsm/{b}"] = lambda b=b: fgsm(model, images, labels, EPS, FGSMParams(batch_size=b))
        tasks[f"ifgsm/{b}"] = lambda b=b: ifgsm(
            model, images[:m], labels[:m], EPS, IFGSMParams(steps=args.steps, batch_size=b))
        tasks[f"gradcam/{b}"] = lambda b=b: gradcam(model, images, GradCAMParams(batch_size=b))
    seconds = best_of(tasks, args.repeats)

    print()
    print(f"{'task':<24}{'batch':>6}{'images/s':>12}{'x fwd+bwd':>11}")
    for b in args.batch_sizes:
        reference = seconds[f"fwd+bwd/{b}"]
        rows = [
            ("fwd+bwd (params)", seconds[f"fwd+bwd/{b}"], n),
            (f"fgsm, {len(EPS)} eps", seconds[f"fgsm/{b}"], n),
            (f"ifgsm, {len(EPS)} eps, {args.steps} st", seconds[f"ifgsm/{b}"] * n / m, n),
            ("  scaled to 100 steps", seconds[f"ifgsm/{b}"] * n / m * 100 / args.steps, n),
            ("gradcam", seconds[f"gradcam/{b}"], n),
        ]
        for name, took, count in rows:
            rate = count / took
            print(f"{name:<24}{b:>6}{rate:>12.{0 if rate >= 100 else 1}f}{took / reference:>11.2f}")
        print()
    best_plain = min(seconds[f"fwd+bwd/{b}"] for b in args.batch_sizes)
    best_fgsm = min(seconds[f"fgsm/{b}"] for b in args.batch_sizes)
    print(f"fgsm ({len(EPS)} eps) at its best batch size costs {best_fgsm / best_plain:.2f}x "
          "one plain forward+backward at its best batch size")

    # Stacked epsilons against one call per epsilon, at the default batch size.
    print()
    print(f"{'ifgsm, ' + str(args.steps) + ' steps':<24}{'images':>7}{'stacked s':>11}"
          f"{'per-eps s':>11}{'ratio':>8}")
    for count in (args.grid_images, m):
        x, y = images[:count], labels[:count]
        params = IFGSMParams(steps=args.steps)
        timing = best_of({
            "stacked": lambda x=x, y=y, params=params: ifgsm(model, x, y, EPS, params),
            "per-eps": lambda x=x, y=y, params=params: [ifgsm(model, x, y, [e], params)
                                                       for e in EPS],
        }, args.repeats)
        print(f"{'':<24}{count:>7}{timing['stacked']:>11.3f}{timing['per-eps']:>11.3f}"
              f"{timing['per-eps'] / timing['stacked']:>8.2f}")


if __name__ == "__main__":
    main()
