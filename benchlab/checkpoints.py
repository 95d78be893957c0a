"""The checkpoints of a run's unfinished train jobs, kept in its run directory.

A train job hands out a checkpoint of each of its runs at the end of every epoch
(and every N steps when asked): ``checkpoints/<job>.pt`` holds the latest, written
whole or not at all, and ``checkpoints/<job>.json`` its SHA-256 and the model key
of the job it belongs to, written after it. On ``--resume`` (or a retry) the job
continues from there. A checkpoint that does not verify (its files missing or
changed, of another model, unreadable) is named and ignored: the job trains from
its first epoch, which costs time, never correctness. A job's checkpoint is
removed when the job finishes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from benchlab.execute import decode_checkpoint
from benchlab.files import atomic_write_bytes, atomic_write_text

__all__ = ["CheckpointDamaged", "Checkpoints"]


class CheckpointDamaged(ValueError):
    """A checkpoint that cannot be trusted; the message says why, in one line."""


class Checkpoints:
    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir) / "checkpoints"

    def _paths(self, job_id: str) -> tuple[Path, Path]:
        return self.dir / f"{job_id}.pt", self.dir / f"{job_id}.json"

    def save(self, job_id: str, blob: bytes, model_key: str) -> None:
        """Keep ``blob`` as the latest checkpoint of job ``job_id`` (of model ``model_key``)."""
        data, meta = self._paths(job_id)
        atomic_write_bytes(data, blob)
        atomic_write_text(meta, json.dumps({"job": job_id, "model": model_key,
                                            "bytes": len(blob),
                                            "sha256": hashlib.sha256(blob).hexdigest()}))

    def jobs(self) -> set[str]:
        """The jobs with a checkpoint (verified or not)."""
        if not self.dir.is_dir():
            return set()
        return {p.stem for p in self.dir.glob("*.json")} | {p.stem for p in self.dir.glob("*.pt")}

    def load(self, job_id: str, model_key: str) -> tuple[bytes, dict[str, int]] | None:
        """The checkpoint of job ``job_id`` and its position (``epoch``, ``batch``,
        ``step``), None when there is none; :class:`CheckpointDamaged` if it does not
        verify."""
        data, meta = self._paths(job_id)
        if not data.exists() and not meta.exists():
            return None
        try:
            info = json.loads(meta.read_text())
            expected, model = info["sha256"], info["model"]
        except FileNotFoundError:
            raise CheckpointDamaged(f"{meta} is missing") from None
        except (OSError, ValueError, TypeError, KeyError):
            raise CheckpointDamaged(f"{meta} is unreadable") from None
        if model != model_key:
            raise CheckpointDamaged(f"{data} belongs to another model ({model}, "
                                    f"expected {model_key})")
        try:
            blob = data.read_bytes()
        except FileNotFoundError:
            raise CheckpointDamaged(f"{data} is missing") from None
        except OSError as exc:
            raise CheckpointDamaged(f"{data} cannot be read: {exc.strerror or exc}") from None
        if hashlib.sha256(blob).hexdigest() != expected:
            raise CheckpointDamaged(f"{data} does not match its digest")
        try:
            position = decode_checkpoint(blob)["position"]
        except Exception as exc:  # noqa: BLE001 - whatever fails to load is unreadable
            raise CheckpointDamaged(f"{data} is not a readable checkpoint "
                                    f"({type(exc).__name__})") from None
        return blob, {k: int(v) for k, v in position.items()}

    def remove(self, job_id: str) -> None:
        for path in self._paths(job_id):
            path.unlink(missing_ok=True)

    def tidy(self) -> None:
        """Remove the checkpoint folder once no checkpoint is left in it."""
        if self.dir.is_dir() and not any(self.dir.iterdir()):
            self.dir.rmdir()
