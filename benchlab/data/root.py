"""Where datasets live on disk: the data root."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

DATA_ENV = "BENCHLAB_DATA"


def data_root() -> Path:
    """Directory holding all datasets: ``$BENCHLAB_DATA``, else the user cache dir."""
    env = os.environ.get(DATA_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("benchlab")) / "data"
