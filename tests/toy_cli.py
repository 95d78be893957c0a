"""``python tests/toy_cli.py ARGS``: the benchlab command line with the toy components of
conftest.py, for tests that need a process of their own (signals, two runs at once).

Besides the toy components it registers the attack ``slow_noise``: the toy's noise
attack after a pause of ``BENCHLAB_TEST_PAUSE`` seconds (default 1), so that a run
lasts long enough to be signalled, or raced, while it runs.
"""

from __future__ import annotations

import os
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import TOY_PROVENANCE, NoiseParams, noise_attack, toy_plugin  # noqa: E402

import benchlab  # noqa: E402
from benchlab import cli  # noqa: E402
from benchlab.components import Provenance  # noqa: E402
from benchlab.plugins import build_registry  # noqa: E402

PAUSE_ENV = "BENCHLAB_TEST_PAUSE"


def slow_noise(model, images, labels, eps, params):
    time.sleep(float(os.environ.get(PAUSE_ENV, "1")))
    return noise_attack(model, images, labels, eps, params)


def _slow_plugin() -> types.ModuleType:
    @benchlab.hookimpl
    def register_attacks(register):
        register("slow_noise", slow_noise, params=NoiseParams)

    module = types.ModuleType("slow_plugin")
    module.register_attacks = register_attacks
    return module


def registry():
    return build_registry([("toy", toy_plugin(), TOY_PROVENANCE),
                           ("slow", _slow_plugin(), Provenance("slow", "benchlab-tests", "0"))],
                          entry_points=False)


if __name__ == "__main__":
    toy = registry()
    cli._registry = lambda: toy
    sys.exit(cli.main(sys.argv[1:]))
