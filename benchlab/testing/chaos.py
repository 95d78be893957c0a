"""Chaos for a Dask cluster: a thread that kills busy worker processes with SIGKILL.

Used by the chaos test (``tests/test_chaos.py``) and the chaos benchmark
(``benchmarks/chaos_cluster.py``) to show that a run survives lost workers.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time

__all__ = ["Chaos"]


class Chaos(threading.Thread):
    """Kill a random worker that is running a job with SIGKILL, every ``every`` seconds.

    Only while all ``workers`` are up (a killed one is restarted by its nanny), at
    most ``kills`` times, for at most ``seconds`` (None: until stopped), and only
    workers whose running jobs match ``aim`` (a prefix of the task keys: a job's id;
    empty: any job).
    """

    def __init__(self, address: str, *, workers: int, kills: int, every: float,
                 seconds: float | None = None, aim: str = "", seed: int = 0):
        super().__init__(daemon=True)
        self.address, self.workers, self.kills, self.every = address, workers, kills, every
        self.deadline = time.monotonic() + (float("inf") if seconds is None else seconds)
        self.aim, self.rng = aim, random.Random(seed)
        self.killed: list[tuple[str, list[str]]] = []  # (worker, the tasks it was running)
        self.error: BaseException | None = None
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)

    def run(self) -> None:
        import distributed

        def running(dask_worker):  # on each worker: its process and the tasks it executes
            import os

            return os.getpid(), [str(ts.key) for ts in dask_worker.state.executing]

        client = distributed.Client(self.address, set_as_default=False, timeout=30)
        try:
            earliest = time.monotonic() + self.every / 2
            while len(self.killed) < self.kills and time.monotonic() < self.deadline:
                if self._halt.wait(0.2):
                    return
                if time.monotonic() < earliest:
                    continue
                try:
                    seen = client.run(running, on_error="return")
                except OSError:
                    continue
                up = {w: r for w, r in seen.items() if isinstance(r, tuple)}
                busy = sorted(w for w, (_, keys) in up.items()
                              if any(k.startswith(self.aim) for k in keys))
                if len(up) < self.workers or not busy:
                    continue
                victim = self.rng.choice(busy)
                pid, keys = up[victim]
                os.kill(pid, signal.SIGKILL)
                self.killed.append((victim, keys))
                earliest = time.monotonic() + self.every
        except BaseException as exc:  # noqa: BLE001 - read by whoever started it
            self.error = exc
        finally:
            client.close()
