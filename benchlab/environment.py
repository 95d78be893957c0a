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
        "gpu": gpu,
        "git_commit": _git_commit(),
        "seeds": [suite.train.seed + r for r in range(suite.train.max_runs)],
        "plugins": {name: f"{p.distribution} {p.version}"
                    + (f" (adapts {', '.join(p.libraries)})" if p.libraries else "")
                    for name, p in registry.plugins.items()},
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


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
