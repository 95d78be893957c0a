"""How benchlab words a problem: one line, the same way wherever it is found.

Every error a user reads (a suite that does not validate, a component that
fails, a file that cannot be fetched) is built from these few helpers, so the
same mistake reads the same in ``benchlab validate``, ``benchlab check`` and a
failed job.
"""

from __future__ import annotations

import difflib
import re
import traceback
from collections.abc import Iterable

__all__ = ["NORM_LABELS", "closest", "describe", "did_you_mean", "first_line", "squeeze",
           "unknown_name"]

#: how a norm is written for people
NORM_LABELS = {"linf": "L∞", "l2": "L2", "l1": "L1", "l0": "L0"}

# how close a typo must be to a known name to be suggested (difflib's ratio)
_CUTOFF = 0.6

# terminal colours and styles, which some libraries put in their messages
_ESCAPES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# torch.load(weights_only=True) refusing a file: its reason follows a page of advice
_WEIGHTS_ONLY = "Weights only load failed"
_WEIGHTS_ONLY_REASON = "WeightsUnpickler error:"
_ADVICE = ("(1)", "(2)", "Check the documentation", "Please file an issue")


def first_line(text: str) -> str:
    """The first non-blank line of ``text``, stripped ('' for blank text), without
    terminal escape sequences."""
    lines = [line.strip() for line in _ESCAPES.sub("", str(text)).strip().splitlines()]
    return next((line for line in lines if line), "")


def describe(exc: BaseException) -> str:
    """``Type: first line of the message``, or the type alone for an empty message.

    A message that ends on a colon (a library that puts its detail on the next
    line) keeps the rest of Python's own one-line rendering after it. When
    ``torch.load`` refuses a file that is not plain tensors, the line is the
    reason it gives, not the first line of its advice.
    """
    name = type(exc).__name__
    message = _ESCAPES.sub("", str(exc))
    if message.startswith(_WEIGHTS_ONLY):
        reason = _weights_only_reason(message)
        return f"{name}: not a file of plain tensors" + (f" ({reason})" if reason else "")
    text = first_line(message)
    if not text:
        return name
    if text.endswith(":"):
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        text += " " + " ".join(detail.split())
    return f"{name}: {text}"


def _weights_only_reason(message: str) -> str:
    """The first sentence of why ``torch.load(weights_only=True)`` refused a file, found
    after the advice it starts with ('' if there is none)."""
    if _WEIGHTS_ONLY_REASON in message:
        rest = message.split(_WEIGHTS_ONLY_REASON, 1)[1]
    else:
        rest = message.partition("\n")[2]
    for line in rest.splitlines():
        line = line.strip()
        if line and not line.startswith(_ADVICE):
            return line.split(". ")[0].rstrip(".")
    return ""


def squeeze(text: str, limit: int = 300) -> str:
    """``text`` on one line (runs of white space folded), at most ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def closest(name: object, known: Iterable[str]) -> str | None:
    """The known name nearest to a misspelt ``name``, if one is near enough."""
    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=_CUTOFF)
    return close[0] if close else None


def did_you_mean(name: object, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the nearest known name, or ''."""
    match = closest(name, known)
    return f"; did you mean '{match}'?" if match else ""


def unknown_name(kind: str, name: object, known: Iterable[str]) -> str:
    """``unknown <kind> 'name'; did you mean 'x'? (known: a, b)``."""
    known = list(known)
    listing = ", ".join(known) if known else "none registered"
    return f"unknown {kind} '{name}'{did_you_mean(name, known)} (known: {listing})"
