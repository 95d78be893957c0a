"""benchlab: plugin-based benchmarks for models, attacks and explainers over many seeds.

``import benchlab`` is cheap: the component types (which need torch) and the Python
API (:func:`benchlab.run`, :func:`benchlab.open`, in :mod:`benchlab.api`) are
imported on first use.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

import pluggy

try:
    __version__ = version("benchlab")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

hookimpl = pluggy.HookimplMarker("benchlab")

_COMPONENTS = ("Component", "Dataset", "DatasetInfo", "DatasetSplit", "FileStatus", "NoParams",
               "ParamError", "Params", "Provenance", "ThreatModel")
_SINKS = ("JobRecorded", "RunEnded", "RunStarted", "Sink", "SinkState")
_API = ("Run", "open", "run")

__all__ = [*_COMPONENTS, *_SINKS, *_API, "__version__", "frozen_eval", "hookimpl"]


def __getattr__(name: str):
    if name in _COMPONENTS:
        from benchlab import components

        return getattr(components, name)
    if name in _SINKS:
        from benchlab import sinks

        return getattr(sinks, name)
    if name == "frozen_eval":
        from benchlab.modes import frozen_eval

        return frozen_eval
    if name in _API:
        # by name, not an import statement: the API is not code that decides weights
        # (benchlab.identity reads this file's imports)
        return getattr(import_module("benchlab.api"), name)
    raise AttributeError(f"module 'benchlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
