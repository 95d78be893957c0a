"""Reading saved tensors back as plain data: never code, never a screen of text.

Every file of tensors benchlab reads back (cached weights, a job's artifact) may
have been damaged or replaced since it was written. :func:`load_tensors` reads it
with ``torch.load(weights_only=True)``, which builds tensors and containers and
refuses anything else. Its failure is :class:`UnreadableTensors`, whose message
is one line (:func:`benchlab.messages.describe`); the library's full text, and
any warning torch gives about the file, are logged at DEBUG level, which keeps
them in the run's log file (:mod:`benchlab.runlog`) and off the screen.
"""

from __future__ import annotations

import io
import logging
import warnings
from traceback import format_exception_only
from typing import Any

import torch

from benchlab.messages import describe

__all__ = ["UnreadableTensors", "load_tensors"]

log = logging.getLogger("benchlab.tensors")


class UnreadableTensors(ValueError):
    """A file that does not decode as plain tensors; the message is one line."""


def load_tensors(blob: bytes, name: str) -> Any:
    """What ``blob``, the bytes of the file ``name``, holds: tensors and containers only."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - whatever the file holds, it does not decode
            log.debug("%s does not decode:\n%s", name,
                      "".join(format_exception_only(type(exc), exc)).rstrip())
            raise UnreadableTensors(describe(exc)) from exc
        finally:
            for warning in caught:
                log.debug("%s: %s", name, warning.message)
