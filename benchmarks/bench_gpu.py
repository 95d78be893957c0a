"""The BatchNorm study on a GPU: per-run against batched training, the bf16 roofline, and
the full study if there is time.

    python benchmarks/bench_gpu.py --out results/gpu                  # a CUDA machine
    python benchmarks/bench_gpu.py --out results/gpu --budget-s 300   # less time
    python benchmarks/bench_gpu.py --out /tmp/x --dry-run             # anywhere, seconds

Measures, in one process and in this order (``--budget-s``, default 540 s, bounds the
whole; each step is skipped with its reason in the JSON when the budget is spent):

1. the device's bf16 and fp32 matmul rates (large square products timed with CUDA
   events): the roofline;
2. images/s of ``train_runs`` for ``cnn`` and ``cnn_bn`` on MNIST's training images, in
   fp32 and bf16: one run alone (the per-run path, ``batched=False``), runs side by
   side in threads (the CPU pack path, all on one CUDA stream), and the batched path
   (``batched=True``) at several widths; each rate with the fraction of the bf16 (or
   fp32) matmul rate it reaches at 3x the forward FLOPs of the conv and linear layers;
3. with the time left, ``benchlab run suites/bn_vs_plain.yaml --device cuda`` (50 runs
   x 14 epochs x 2 models, batched) in a child process, stopped at the budget; its run
   directory is under the out dir and continues with ``benchlab run --resume DIR``.

Writes ``bench_gpu.json`` under ``--out``. MNIST must be in the data root
(``$BENCHLAB_DATA``; ``benchlab fetch mnist`` on a machine with a network). Without
CUDA it stops with a one-line message; ``--dry-run`` (= ``--device cpu --tiny``) runs
every step at toy sizes on synthetic data, to check the script end to end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchlab.components import DatasetInfo, DatasetSplit
from benchlab.training import TrainConfig, train_runs

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_training import training_flops  # noqa: E402 - a sibling script

STUDY_IMAGES = 50 * 14 * 2 * 60_000  # runs x epochs x models x training images


class Budget:
    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_tflops(dtype: torch.dtype, size: int, device: torch.device,
                  repeats: int = 20) -> float:
    """Best rate of ``size``-square products over ``repeats`` timed ones (TFLOP/s)."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    for _ in range(3):
        a @ b
    sync(device)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        sync(device)
        best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e12)
    return best


def mnist(tiny: bool) -> tuple[DatasetInfo, DatasetSplit, DatasetSplit]:
    """MNIST's splits from the data root; with ``tiny``, a synthetic stand-in."""
    from benchlab.plugins import default_registry

    component = default_registry().get("dataset", "mnist")
    info = component.obj.info
    if tiny:
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (256, *info.shape), dtype=torch.uint8, generator=g)
        labels = torch.randint(0, info.num_classes, (256,), generator=g)
        return info, DatasetSplit(images, labels), DatasetSplit(images[:64], labels[:64])
    from benchlab.data import data_root

    load = component.obj.load
    try:
        return info, load("train", data_root()), load("test", data_root())
    except Exception as exc:  # noqa: BLE001 - said in one line, with the way out
        sys.exit(f"bench_gpu.py: MNIST is not readable in {data_root()} ({exc}); "
                 "run 'benchlab fetch mnist' there or set BENCHLAB_DATA")


def rate(build: Callable[[], torch.nn.Module], train: DatasetSplit, test: DatasetSplit,
         precision: str, runs: int, device: torch.device, mode: str) -> float:
    """Training images/s of ``runs`` runs over ``train`` (evaluation not counted)."""
    config = TrainConfig(epochs=1, precision=precision, test_batch_size=len(test))
    options = {"batched": mode == "batched", "pack": runs if mode == "threads" else 1}
    result = train_runs(build, train, test, config, list(range(1, runs + 1)), device,
                        **options)
    return result[0].epochs[0].images_per_s  # of the pack or batch: every run counted


def throughput(args: argparse.Namespace, device: torch.device, budget: Budget,
               roofline: dict[str, float]) -> list[dict]:
    from benchlab_plugins.cnn import CNNBNParams, CNNParams, build_cnn, build_cnn_bn

    info, train, test = mnist(args.tiny)
    images = 64 if args.tiny else args.images
    subset = DatasetSplit(train.images[:images], train.labels[:images])
    small = DatasetSplit(test.images[:16], test.labels[:16])
    builds = {"cnn": lambda: build_cnn(info, CNNParams()),
              "cnn_bn": lambda: build_cnn_bn(info, CNNBNParams())}
    widths = [2] if args.tiny else args.widths
    # threads: the CPU pack path (one thread per run), here all on one CUDA stream
    plans = [("per-run", 1), ("threads", 2 if args.tiny else 4)] + \
        [("batched", w) for w in widths]
    rows = []
    for name, build in builds.items():
        flops = training_flops(build(), info.shape)
        for precision in ("fp32", "bf16"):
            warm = DatasetSplit(subset.images[:64], subset.labels[:64])
            rate(build, warm, small, precision, 2, device, "batched")  # kernel selection
            for mode, runs in plans:
                row = {"model": name, "precision": precision, "path": mode, "runs": runs,
                       "mflop_per_image": round(flops / 1e6, 2)}
                if budget.left() < args.reserve_s:
                    row["skipped"] = "the time budget was spent"
                else:
                    value = rate(build, subset, small, precision, runs, device, mode)
                    peak = roofline["bf16" if precision == "bf16" else "fp32"]
                    row["images_per_s"] = round(value, 1)
                    row["tflop_per_s"] = float(f"{value * flops / 1e12:.4g}")
                    row["fraction_of_matmul_peak"] = float(f"{value * flops / 1e12 / peak:.4g}")
                    row["fraction_of_bf16_peak"] = float(
                        f"{value * flops / 1e12 / roofline['bf16']:.4g}")
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def study(args: argparse.Namespace, budget: Budget, rows: list[dict]) -> dict:
    """The full study through ``benchlab run``, in a child process stopped at the budget."""
    out = Path(args.out) / "bn_vs_plain"
    command = [sys.executable, "-c", "import sys; from benchlab.cli import main; "
               "sys.exit(main())", "run", str(HERE.parent / "suites" / "bn_vs_plain.yaml"),
               "--out", str(out), "--device", args.device]
    if args.tiny:
        command += ["--set", "train.runs=2", "--set", "train.epochs=1",
                    "--set", "dataset.train_size=256", "--set", "dataset.test_size=64",
                    "--set", "train.eval_size=64"]
    batched = [r["images_per_s"] for r in rows if r.get("path") == "batched"
               and r.get("precision") == "fp32" and "images_per_s" in r]
    estimate = STUDY_IMAGES / max(batched) if batched and not args.tiny else None
    left = budget.left() - 15
    result = {"command": " ".join(command), "estimate_s": estimate and round(estimate)}
    if left < 30:
        return {**result, "skipped": f"{budget.left():.0f} s of budget left"}
    if args.tiny and not _has_mnist():
        return {**result, "skipped": "no MNIST in the data root (the tiny study reads it)"}
    start = time.perf_counter()
    try:
        done = subprocess.run(command, timeout=left, capture_output=True, text=True)
        status = {"exit_code": done.returncode, "stderr_tail": done.stderr[-2000:]}
    except subprocess.TimeoutExpired:
        status = {"stopped": f"at the budget after {left:.0f} s; continue with "
                             f"'benchlab run --resume {out}'"}
    summary = out / "summary.md"
    return {**result, **status, "wall_s": round(time.perf_counter() - start, 1),
            "run_dir": str(out), "summary": str(summary) if summary.is_file() else None}


def _has_mnist() -> bool:
    from benchlab.data import data_root
    from benchlab.plugins import default_registry

    try:
        default_registry().get("dataset", "mnist").obj.load("test", data_root())
    except Exception:  # noqa: BLE001 - absent or unreadable: the tiny study is skipped
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", required=True, help="directory for bench_gpu.json")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--tiny", action="store_true", help="toy sizes, synthetic data")
    parser.add_argument("--dry-run", action="store_true", help="--device cpu --tiny")
    parser.add_argument("--budget-s", type=float, default=540.0,
                        help="wall-time budget of the whole script (default 540)")
    parser.add_argument("--reserve-s", type=float, default=0.0,
                        help="stop measuring rates with this much budget left (for the study)")
    parser.add_argument("--images", type=int, default=16384,
                        help="training images per rate measurement (default 16384)")
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 25, 50, 100],
                        help="runs per batch of the batched path")
    parser.add_argument("--no-study", action="store_true", help="skip the full study")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.device, args.tiny = "cpu", True
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_gpu.py: no CUDA device here (torch.cuda.is_available() is False); "
              "use --dry-run to check the script on the CPU", file=sys.stderr)
        return 2
    budget = Budget(args.budget_s)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    size = 128 if args.tiny else 8192
    roofline = {"bf16": matmul_tflops(torch.bfloat16, size, device),
                "fp32": matmul_tflops(torch.float32, size, device)}
    print(json.dumps({"matmul_tflop_per_s": roofline}), flush=True)
    report = {"machine": {"device": torch.cuda.get_device_name(device)
                          if device.type == "cuda" else platform.processor() or "CPU",
                          "torch": torch.__version__, "cuda": torch.version.cuda,
                          "tf32_matmul": torch.backends.cuda.matmul.allow_tf32},
              "tiny": args.tiny, "budget_s": args.budget_s,
              "matmul_tflop_per_s": {k: float(f"{v:.4g}") for k, v in roofline.items()},
              "matmul_size": size}
    report["rates"] = throughput(args, device, budget, roofline)
    report["study"] = {"skipped": "--no-study"} if args.no_study else \
        study(args, budget, report["rates"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_gpu.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out / 'bench_gpu.json'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
