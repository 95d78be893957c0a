"""The IDX file format MNIST-style datasets are stored in: encoding, decoding, writing.

An IDX file is a big-endian int32 magic (0x0000, a type code, the number of
dimensions), one big-endian int32 per dimension, then the raw C-order data.
Only uint8 data, the kind these datasets hold, is read and written.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchlab.data.errors import DataError
from benchlab.data.verified import install_file

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
