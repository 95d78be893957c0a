"""The directory a run writes, claimed before anything is written there: ``--out``
must be new or empty, the default one is created exclusively, and either is held
with its lock (:mod:`benchlab.lock`) until the run ends.

Shared by the command line (``benchlab run``, ``benchlab report``) and the Python
API (:func:`benchlab.run`), so both refuse the same directories with the same line.
"""

from __future__ import annotations

import logging
from pathlib import Path

from benchlab.lock import LockHeld, RunLock, is_lock_file

__all__ = ["OutDirError", "claim", "claim_new", "lock"]

log = logging.getLogger("benchlab")


class OutDirError(ValueError):
    """A directory a run cannot write; the message is one line."""


def lock(out: Path, command: str, option: str) -> RunLock:
    """Claim the existing directory ``out`` for this process; ``option`` is how the
    user named it (``--out DIR``), for the message."""
    held = RunLock(out, command)
    try:
        stale = held.acquire()
    except LockHeld as exc:
        raise OutDirError(str(exc)) from None
    except OSError as exc:
        raise OutDirError(f"{option}: cannot claim the directory: {exc.strerror or exc}"
                          ) from None
    if stale is not None:
        log.warning("%s: took over the lock of %s, which no longer runs", out, stale.name())
    return held


def claim(out: Path, option: str | None = None) -> tuple[Path, RunLock]:
    """``--out``: a new or empty directory, never one holding another run, claimed for
    this process before anything else is written there."""
    option = option or f"--out {out}"
    if out.exists() and not out.is_dir():
        raise OutDirError(f"{option}: is a file; expected a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutDirError(f"{option}: {exc.strerror or exc}") from None
    held = lock(out, "benchlab run", option)
    try:
        clutter = next((p for p in out.iterdir() if not is_lock_file(p.name)), None)
    except OSError as exc:
        held.release()
        raise OutDirError(f"{option}: {exc.strerror or exc}") from None
    if clutter is not None:
        held.release()
        what = "a benchlab run" if (out / "suite.yaml").exists() else "other files"
        raise OutDirError(f"{option}: not empty (it holds {what}); continue that run with "
                          f"--resume {out}, or give a new or empty directory")
    return out, held


def claim_new(out: Path) -> tuple[Path, RunLock]:
    """The default output directory, created exclusively (two runs started in the same
    second get ``STAMP`` and ``STAMP-2``) and claimed."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        for n in range(1, 1000):
            candidate = out if n == 1 else out.with_name(f"{out.name}-{n}")
            try:
                candidate.mkdir()
            except FileExistsError:
                continue
            return candidate, lock(candidate, "benchlab run", str(candidate))
    except OSError as exc:
        raise OutDirError(f"{out.parent}: {exc.strerror or exc}") from None
    raise OutDirError(f"{out.parent}: 999 runs started in the same second")
