"""Suites: YAML files that declare what to benchmark, validated before anything runs.

A suite goes through three stages, one module each:

- :mod:`benchlab.suite.reading` reads the file within bounds (size, depth, alias
  expansion, duplicate keys) into a plain mapping, remembers each path's line,
  and applies ``--set PATH=VALUE`` overrides;
- :mod:`benchlab.suite.schema` declares the sections, their keys, ranges and
  every default (``REPORT_*`` for the report's);
- :mod:`benchlab.suite.validate` checks a mapping against the schema and the
  registry (component names and parameters, ε bounds per norm, the components'
  ``check_params``): :func:`load_suite` and :func:`validate_suite`.

:mod:`benchlab.suite.problems` words what is wrong: every problem becomes one
:class:`Problem` that names the file, the line, the YAML path and what was
expected, and a :class:`SuiteError` carries them all.
"""

from benchlab.suite.problems import Problem, SuiteError
from benchlab.suite.reading import (
    MAX_DEPTH,
    MAX_NODES,
    MAX_SUITE_BYTES,
    apply_overrides,
    check_yaml_shape,
    read_suite_file,
)
from benchlab.suite.schema import (
    MAX_LABEL,
    MAX_SEED,
    REPORT_ALPHA,
    REPORT_AUC_EPOCHS,
    REPORT_EQUIVALENCE_MARGIN,
    REPORT_STEP_THRESHOLDS,
    REPORT_THRESHOLDS,
    AttackRef,
    ComponentRef,
    DatasetRef,
    EvaluateSection,
    ExplainerRef,
    Label,
    ModelRef,
    ReportSection,
    Suite,
    TrainSection,
)
from benchlab.suite.validate import largest_radius, load_suite, validate_suite

__all__ = [
    "MAX_DEPTH",
    "MAX_LABEL",
    "MAX_NODES",
    "MAX_SEED",
    "MAX_SUITE_BYTES",
    "REPORT_ALPHA",
    "REPORT_AUC_EPOCHS",
    "REPORT_EQUIVALENCE_MARGIN",
    "REPORT_STEP_THRESHOLDS",
    "REPORT_THRESHOLDS",
    "AttackRef",
    "ComponentRef",
    "DatasetRef",
    "EvaluateSection",
    "ExplainerRef",
    "Label",
    "ModelRef",
    "Problem",
    "ReportSection",
    "Suite",
    "SuiteError",
    "TrainSection",
    "apply_overrides",
    "check_yaml_shape",
    "largest_radius",
    "load_suite",
    "read_suite_file",
    "validate_suite",
]
