"""benchlab: plugin-based benchmarks for models, attacks and explainers over many seeds."""

from importlib.metadata import PackageNotFoundError, version

import pluggy

from benchlab.components import (
    Component,
    Dataset,
    DatasetInfo,
    DatasetSplit,
    FileStatus,
    NoParams,
    ParamError,
    Params,
    Provenance,
    ThreatModel,
)
from benchlab.modes import frozen_eval
from benchlab.sinks import JobRecorded, RunEnded, RunStarted, Sink, SinkState

try:
    __version__ = version("benchlab")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

hookimpl = pluggy.HookimplMarker("benchlab")

__all__ = [
    "Component",
    "Dataset",
    "DatasetInfo",
    "DatasetSplit",
    "FileStatus",
    "JobRecorded",
    "NoParams",
    "ParamError",
    "Params",
    "Provenance",
    "RunEnded",
    "RunStarted",
    "Sink",
    "SinkState",
    "ThreatModel",
    "__version__",
    "frozen_eval",
    "hookimpl",
]
