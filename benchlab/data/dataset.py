"""A dataset of IDX files, and the entry point that makes its verified files available.

A dataset here is a set of uncompressed IDX files in the layout torchvision
reads (``<root>/<TorchvisionClass>/raw/train-images-idx3-ubyte``, ...). A file
that fails verification is deleted and fetched again, never read. Files come
from the first source that yields verified copies: the data root itself, then
each of the dataset's :class:`~benchlab.data.sources.Source` objects in order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from benchlab.components import Dataset, DatasetInfo, DatasetSplit, FileStatus, Split
from benchlab.data.errors import DataError
from benchlab.data.root import DATA_ENV, data_root
from benchlab.data.sources import Source
from benchlab.data.verified import RawFile, check_files, discard_unverified
from benchlab.messages import squeeze

log = logging.getLogger("benchlab.data")


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
        statuses = discard_unverified(raw_dir, self.raw_files)
        if all(s.verified for s in statuses):
            return
        failures = [f"files in the data root: {_summary(statuses)}"]
        for source in self.sources:
            log.info("%s: fetching from %s", self.info.name, source.name)
            try:
                raw_dir.mkdir(parents=True, exist_ok=True)
                source.fetch(raw_dir, self.raw_files)
            except Exception as exc:  # noqa: BLE001 - a failing source must not stop the next
                log.info("%s: %s failed: %s", self.info.name, source.name, _reason(exc))
                failures.append(f"{source.name}: {_reason(exc)}")
                continue
            statuses = discard_unverified(raw_dir, self.raw_files)
            if all(s.verified for s in statuses):
                log.info("%s: verified files from %s in %s", self.info.name, source.name,
                         raw_dir)
                return
            failures.append(f"{source.name}: {_summary(statuses)}")
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


def _reason(exc: BaseException) -> str:
    """Why a source failed, on one line; the type's name when the message is empty."""
    return squeeze(str(exc)) or type(exc).__name__


def _summary(statuses: Sequence[FileStatus]) -> str:
    """What is wrong with a raw directory's files, e.g. ``missing a, b; corrupt (deleted) c``."""
    missing = [s.path.name for s in statuses if not s.present]
    corrupt = [s.path.name for s in statuses if s.present and not s.verified]
    parts = []
    if missing:
        parts.append("missing " + ", ".join(missing))
    if corrupt:
        parts.append("corrupt (deleted) " + ", ".join(corrupt))
    return "; ".join(parts) or "all files verified"


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
