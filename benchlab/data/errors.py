"""The one exception every part of :mod:`benchlab.data` raises for a dataset problem."""

from __future__ import annotations


class DataError(Exception):
    """A dataset's files could not be obtained, read or verified."""
