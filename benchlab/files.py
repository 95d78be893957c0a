"""Writing files so that a reader never sees half of one.

Every file benchlab writes (job rows, results, reports, artifacts, dataset
files, cache entries) goes through a temporary sibling that is renamed into
place: a crash, a full disk or a kill leaves the old file or none, never a
truncated one under the final name. Files get the mode the umask gives, like
any file the user creates.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "temporary_sibling",
           "write_synced"]

Chunk = bytes | bytearray | memoryview


def temporary_sibling(path: Path) -> Path:
    """A name next to ``path`` that no other writer uses, hidden from listings."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")


def atomic_write(path: Path, chunks: Iterable[Chunk], *, sync: bool = True,
                 before_replace: Callable[[], None] | None = None) -> None:
    """Write ``chunks`` to ``path`` through a temporary sibling and ``os.replace``.

    ``before_replace`` runs once everything is written and may raise to refuse the
    file (a checksum that does not match): then nothing is installed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        with open(tmp, "xb") as out:
            for chunk in chunks:  # an error reading the source is raised as it is
                with _naming(path):
                    out.write(chunk)
            with _naming(path):
                out.flush()
                if sync:
                    os.fsync(out.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def _naming(path: Path) -> Iterator[None]:
    """A failed ``write()`` (a full disk) names no file by itself: name ``path``."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def atomic_write_bytes(path: Path, data: Chunk) -> None:
    atomic_write(path, [data])


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, [text.encode("utf-8")])


def write_synced(path: Path, blob: Chunk) -> None:
    """Write a new file and flush it to disk (inside a directory renamed into place)."""
    with open(path, "xb") as fh:
        fh.write(blob)
        fh.flush()
        os.fsync(fh.fileno())
