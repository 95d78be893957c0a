"""What a run records about the machine and software it ran with (environment.json)."""

from __future__ import annotations

import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import benchlab
from benchlab.plugins import Registry
from benchlab.suite import Suite


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return cpu


def environment(device: torch.device | str, suite: Suite, registry: Registry
                ) -> dict[str, Any]:
    """What this process runs with; ``device`` as a name when it is resolved elsewhere."""
    on_cuda = isinstance(device, torch.device) and device.type == "cuda"
    gpu = torch.cuda.get_device_name(device) if on_cuda else None
    return {
        "benchlab": benchlab.__version__,
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": str(device),
        "cpu": cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "cpu_bf16": cpu_has_bf16(),
        "gpu": gpu,
        "git_commit": _git_commit(),
        "seeds": [suite.train.seed + r for r in range(suite.train.max_runs)],
        "plugins": {name: f"{p.distribution} {p.version}"
                    + (f" (adapts {', '.join(p.libraries)})" if p.libraries else "")
                    for name, p in registry.plugins.items()},
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX, as oneDNN
    sees it). Without, bf16 is emulated: ``cnn_bn`` trained about 10x slower in bf16
    than in fp32 on a 2-core AMD EPYC without them (``benchmarks/bench_training.py``)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def bf16_warning(suite: Suite, device: torch.device | str) -> str | None:
    """One line when the suite trains in bf16 on a CPU that only emulates it."""
    if torch.device(device).type != "cpu" or cpu_has_bf16():
        return None
    models = [ref.key for ref in suite.models if suite.train_of(ref).precision == "bf16"]
    if not models:
        return None
    return (f"warning: train.precision bf16 ({', '.join(models)}) on a CPU without "
            "bfloat16 instructions (AVX512-BF16 or AMX): emulated, about 10x slower than "
            "fp32 here; use fp32 on this machine")


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    here = Path(benchlab.__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
