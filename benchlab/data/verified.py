"""Which dataset files can be trusted: hashing, the verified-files memo, checked installs.

Each file is checked against the MD5 of the official uncompressed file before it
is used. Hashing 47 MB on every run would dominate a short benchmark, so the MD5
of each file is remembered in a small JSON next to it and recomputed only when
the file's size, mtime, inode or inode change time changes (the last one catches
an edit whose mtime was put back).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from benchlab.components import FileStatus
from benchlab.data.errors import DataError
from benchlab.files import atomic_write

log = logging.getLogger("benchlab.data")

VERIFIED_FILE = ".benchlab-verified.json"
CHUNK_SIZE = 1 << 20


@dataclass(frozen=True)
class RawFile:
    """One uncompressed file of a dataset and the MD5 of its official copy."""

    name: str
    md5: str


def read_chunks(stream: IO[bytes]) -> Iterator[bytes]:
    """The bytes of ``stream`` in pieces, so that a large file is never held whole."""
    while chunk := stream.read(CHUNK_SIZE):
        yield chunk


def md5_file(path: Path) -> str:
    """Hex MD5 of a file, read in chunks."""
    return _hash_file(path, hashlib.md5(usedforsecurity=False))


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    return _hash_file(path, hashlib.sha256())


def _hash_file(path: Path, digest: Any) -> str:
    with open(path, "rb") as f:
        for chunk in read_chunks(f):
            digest.update(chunk)
    return digest.hexdigest()


def install_file(path: Path, chunks: Iterable[bytes | memoryview], md5: str | None = None) -> str:
    """Write ``chunks`` to ``path`` atomically and remember its MD5; returns the MD5.

    The MD5 is computed while writing; when it differs from ``md5`` nothing is
    installed and :class:`DataError` is raised. A reader never sees a
    half-written file, even if the process dies mid-way.
    """
    digest = hashlib.md5(usedforsecurity=False)

    def hashed() -> Iterator[bytes | memoryview]:
        for chunk in chunks:  # a source that cannot be read raises its own error
            digest.update(chunk)
            yield chunk

    def refuse_a_wrong_copy() -> None:
        if md5 is not None and digest.hexdigest() != md5:
            raise DataError(f"{path.name} would have MD5 {digest.hexdigest()}, expected {md5}")

    atomic_write(path, hashed(), before_replace=refuse_a_wrong_copy)
    actual = digest.hexdigest()
    _VerifiedCache(path.parent).record(path, actual)
    return actual


class _VerifiedCache:
    """MD5s of the files in one directory, valid while (size, mtime, inode, ctime) stay the same.

    The inode change time cannot be set back by a user (``os.utime`` moves it
    forward), so an edit in place with the old mtime restored is hashed again.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / VERIFIED_FILE
        self._entries = self._read()
        self._dirty = False

    def _read(self) -> dict[str, Any]:
        try:
            entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return entries if isinstance(entries, dict) else {}

    @staticmethod
    def _key(path: Path) -> list[int]:
        st = path.stat()
        return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]

    def md5(self, path: Path) -> str:
        key = self._key(path)
        entry = self._entries.get(path.name)
        if isinstance(entry, dict) and entry.get("stat") == key and "md5" in entry:
            return str(entry["md5"])
        log.debug("hashing %s", path)
        digest = md5_file(path)
        self._entries[path.name] = {"stat": key, "md5": digest}
        self._dirty = True
        return digest

    def record(self, path: Path, md5: str) -> None:
        self._entries[path.name] = {"stat": self._key(path), "md5": md5}
        self._dirty = True
        self.save()

    def forget(self, name: str) -> None:
        self._dirty |= self._entries.pop(name, None) is not None

    def save(self) -> None:
        if not self._dirty:
            return
        text = json.dumps(self._entries, indent=1, sort_keys=True)
        try:
            # Not synced: losing the memo in a crash only costs hashing the files again.
            atomic_write(self.path, [text.encode("utf-8")], sync=False)
        except OSError as exc:
            # A read-only data root still works; it only re-hashes on every run.
            log.debug("cannot save %s: %s", self.path, exc)
        self._dirty = False


def check_files(directory: Path, raw_files: Sequence[RawFile]) -> list[FileStatus]:
    """Which of ``raw_files`` are present in ``directory`` and match their MD5."""
    cache = _VerifiedCache(directory)
    statuses = []
    for raw in raw_files:
        path = directory / raw.name
        present = path.is_file()
        statuses.append(FileStatus(path, present, present and cache.md5(path) == raw.md5))
    cache.save()
    return statuses


def discard_unverified(directory: Path, raw_files: Sequence[RawFile]) -> list[FileStatus]:
    """Check the files and delete the ones that are present but do not verify."""
    statuses = check_files(directory, raw_files)
    corrupt = [s for s in statuses if s.present and not s.verified]
    if corrupt:
        cache = _VerifiedCache(directory)
        for status in corrupt:
            log.warning("%s does not match its MD5: deleting it", status.path)
            status.path.unlink(missing_ok=True)
            cache.forget(status.path.name)
        cache.save()
    return statuses
