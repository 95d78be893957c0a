"""The places a dataset's files can come from, each a :class:`Source`.

A source only puts files into the dataset's raw directory; whatever it writes
is verified afterwards (see :mod:`benchlab.data.verified`), so a source that
yields a wrong copy is caught the same way whichever it is.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchlab.data.download import any_reachable, url_address
from benchlab.data.verified import RawFile, install_file, read_chunks


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


def torchvision_download(torchvision_name: str, probe_timeout: float = 3.0) -> Source:
    """torchvision's own download of ``torchvision.datasets.<torchvision_name>``.

    torchvision's urllib calls have no timeout, so the mirrors are probed first
    with a short one: without a network this source fails in seconds.
    """

    def fetch(raw_dir: Path, raw_files: Sequence[RawFile]) -> None:
        import torchvision.datasets

        cls = getattr(torchvision.datasets, torchvision_name)
        addresses = [url_address(mirror) for mirror in cls.mirrors]
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
                install_file(raw_dir / raw.name, read_chunks(stream), md5=raw.md5)

    return Source(name, fetch, hint)
