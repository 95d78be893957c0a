"""What a resumed run may change: jobs it adds, never a job already finished.

``benchlab run --resume DIR`` compares the suite it is given (the saved one when
none is, with any ``--set`` applied) with the suite saved in ``DIR/suite.yaml``,
job by job. A finished job whose definition would change (more epochs, another
epsilon, other parameters) or that would disappear is a conflict: its results
came from the old definition and would sit beside new ones in one table. Jobs
that only the new suite has (another model, more runs) are added.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from benchlab.jobs import expand
from benchlab.suite import Suite


class ResumeConflict(ValueError):
    """The suite given to --resume would change jobs the run has already finished."""


def added_jobs(saved: Suite, wanted: Suite, finished: Iterable[str]) -> list[str]:
    """Ids of the jobs ``wanted`` adds to ``saved``; :class:`ResumeConflict` if it alters
    or drops any of the ``finished`` ones."""
    old = {job.id: job.to_dict() for job in expand(saved)}
    new = {job.id: job.to_dict() for job in expand(wanted)}
    finished = set(finished)
    altered = [i for i in old if i in finished and new.get(i) != old[i]]
    if altered:
        changes = changed_keys(yaml.safe_load(saved.to_yaml()), yaml.safe_load(wanted.to_yaml()))
        what = "; ".join(changes[:3]) + ("; ..." if len(changes) > 3 else "")
        verb = "drop" if all(i not in new for i in altered) else "change"
        raise ResumeConflict(
            f"{what or 'the suite differs'}: that would {verb} {len(altered)} finished "
            f"job(s) ({', '.join(altered[:2])}{', ...' if len(altered) > 2 else ''}); resume "
            "without that change, or start a new run")
    return [i for i in new if i not in old]


def changed_keys(old: Any, new: Any, path: str = "") -> list[str]:
    """One 'PATH: OLD -> NEW' per leaf where two plain YAML structures differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in [*old, *(k for k in new if k not in old)]:
            sub = f"{path}.{key}" if path else str(key)
            out += changed_keys(old.get(key, _ABSENT), new.get(key, _ABSENT), sub)
        return out
    if isinstance(old, list) and isinstance(new, list):
        out = []
        for i in range(max(len(old), len(new))):
            out += changed_keys(old[i] if i < len(old) else _ABSENT,
                                new[i] if i < len(new) else _ABSENT, f"{path}.{i}")
        return out
    if old == new:
        return []
    return [f"{path} is {_show(old)} in the saved suite, {_show(new)} now"]


class _Absent:
    def __repr__(self) -> str:
        return "absent"


_ABSENT = _Absent()


def _show(value: Any) -> str:
    if isinstance(value, _Absent):
        return "absent"
    if isinstance(value, dict):
        return f"'{value.get('label') or value.get('name')}'" if "name" in value else "a mapping"
    text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    return text if len(text) <= 40 else text[:37] + "..."
