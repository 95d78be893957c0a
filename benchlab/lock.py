"""The exclusive claim of a run directory: one benchlab process writes it at a time.

``benchlab run`` (on a new directory or with ``--resume``) and ``benchlab report``
hold ``DIR/.lock`` while they write the directory, from before anything slow
starts (a Dask cluster, the first job) until they exit, whether they finish, fail
or are interrupted. The file names its holder: process id, host, when it started,
and on Linux the boot and the process's start time, so that a process id reused
after the holder died is not mistaken for it. It is written whole in a temporary
file and linked into place, which fails when a lock is there already: two
processes started at the same moment cannot both get it.

A lock whose holder is gone (killed with SIGKILL, its machine rebooted) is taken
over, and the claim says so. A lock held by a live process, or by a process on
another host (whose liveness cannot be checked from here), is refused with one
line naming the holder and what to do. Taking over a stale lock is serialised by
an ``flock`` on the directory, so two processes finding the same stale lock do
not both take it over.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from benchlab.files import temporary_sibling

__all__ = ["LOCK_NAME", "Holder", "LockHeld", "RunLock", "is_lock_file"]

LOCK_NAME = ".lock"

# link() is refused by file systems without hard links: then the lock is created in place
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK}


class LockHeld(Exception):
    """The directory is claimed by another process: one line saying by whom and what to do."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: enough to name it and to tell whether it still runs."""

    pid: int
    host: str
    started: str  # UTC, ISO 8601, to the second
    command: str = "benchlab"
    boot: str | None = None  # Linux: the boot the process ran in
    ticks: int | None = None  # Linux: the process's start time, clock ticks after boot
    token: str = ""

    @classmethod
    def this_process(cls, command: str) -> Holder:
        return cls(os.getpid(), socket.gethostname(),
                   datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), command,
                   _boot_id(), _start_ticks(os.getpid()), secrets.token_hex(8))

    def name(self) -> str:
        """``pid 123@host, benchlab run since 2025-01-01T12:00:00Z``."""
        return f"pid {self.pid}@{self.host}, {self.command} since {self.started}"

    def alive(self) -> bool | None:
        """Whether the holder still runs; None for a process on another host."""
        if self.host != socket.gethostname():
            return None
        if self.boot is not None and _boot_id() not in (None, self.boot):
            return False  # the machine rebooted since
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # it runs, as another user
        now = _start_ticks(self.pid)
        return self.ticks is None or now is None or now == self.ticks

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Holder:
        """The holder a lock file names; ValueError if it names none."""
        try:
            data = json.loads(text)
            holder = cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        except (ValueError, TypeError) as exc:
            raise ValueError(f"not a lock file ({exc})") from None
        if not isinstance(holder.pid, int) or not isinstance(holder.host, str):
            raise ValueError("not a lock file (no pid and host)")
        return holder


def is_lock_file(name: str) -> bool:
    """Whether ``name``, in a run directory, is the lock or a lock being written."""
    return name == LOCK_NAME or (name.startswith(f".{LOCK_NAME}.") and name.endswith(".part"))


class RunLock:
    """The claim of ``directory`` (which must exist) by this process.

    ``acquire()`` takes the lock or raises :class:`LockHeld`; it returns the holder
    of a stale lock it took over (None when there was none). ``release()``
    removes the lock if it is still this process's; it is safe to call twice.
    """

    def __init__(self, directory: Path, command: str = "benchlab"):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.holder = Holder.this_process(command)
        self.held = False

    def acquire(self) -> Holder | None:
        for _ in range(5):  # each round ends in a claim, a refusal, or a lock that went away
            if self._create():
                self.held = True
                return None
            other = self._read()
            if other is None:
                continue  # released between our two steps: claim it again
            state = other.alive()
            if state is None:
                raise LockHeld(f"{self.directory}: in use by a benchlab process on another host "
                               f"({other.name()}); if it no longer runs there, delete "
                               f"{self.path} and try again")
            if state:
                raise LockHeld(f"{self.directory}: in use by another benchlab process "
                               f"({other.name()}); wait for it to finish, or stop it, and "
                               "try again")
            if self._take_over(other):
                self.held = True
                return other
        raise LockHeld(f"{self.directory}: other benchlab processes keep claiming it; "
                       "try again")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        with contextlib.suppress(OSError, ValueError):
            if Holder.from_json(self.path.read_text()).token == self.holder.token:
                self.path.unlink()

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- steps ----------------------------------------------------------------
    def _create(self) -> bool:
        """Put this process's lock in place; False if a lock is there already."""
        tmp = temporary_sibling(self.path)
        try:
            with open(tmp, "x", encoding="utf-8") as fh:
                fh.write(self.holder.to_json())
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                return False
            except OSError as exc:
                if exc.errno not in _NO_LINKS:
                    raise
                return self._create_in_place()
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def _create_in_place(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(self.holder.to_json())
        return True

    def _read(self) -> Holder | None:
        """The holder of the lock in place; None if there is none any more."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LockHeld(f"{self.directory}: {self.path} cannot be read "
                           f"({exc.strerror or exc}); if no benchlab process uses the "
                           "directory, delete it and try again") from None
        try:
            return Holder.from_json(text)
        except ValueError as exc:
            raise LockHeld(f"{self.directory}: {self.path} is {exc}; if no benchlab process "
                           "uses the directory, delete it and try again") from None

    def _take_over(self, stale: Holder) -> bool:
        """Replace the lock of ``stale``; False if the lock changed in the meantime."""
        with _serialised(self.directory):
            current = self._read()
            if current != stale:
                return False
            self.path.unlink(missing_ok=True)
            return self._create()


@contextlib.contextmanager
def _serialised(directory: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``directory`` (none where the file system has no flock)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        except (ImportError, OSError):
            pass  # e.g. NFS without lock support: other hosts' locks are never taken over
        yield
    finally:
        os.close(fd)  # releases the flock


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks after boot (Linux); None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        # the fields after the command name, which is in parentheses and may hold spaces
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None
