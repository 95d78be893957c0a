"""Train many seeded runs of one model, fast, on data held in memory.

A benchmark trains the same configuration under many seeds, so the unit of work
here is a list of runs, not one model. What makes it fast on a CPU:

* the data is a pair of in-memory tensors: each step gathers a batch of uint8
  images and converts it to floats, with no DataLoader, per-sample transforms or
  worker processes;
* convolutional models run in channels-last memory format (oneDNN's fast path);
* losses and hits are accumulated on tensors and read once per epoch, so the hot
  loop never waits on ``.item()``; the optimiser step is one fused kernel;
* dropout masks come from 64-bit random draws split into four 16-bit lanes:
  ``bernoulli_`` draws one random number per element, about 7 ms per step for
  the first dropout of ``cnn_bn`` (10% of a step), the lanes about 1 ms;
* runs are trained *together* where that pays (see :func:`pack_size`): on a CPU,
  a pack of R runs trains concurrently, one run per core with one intra-op thread
  each. Most operations of a small model are too small to split well between
  cores, so on an idle 2-core machine two runs side by side train 1.1-1.2x faster
  than the same runs one after the other on both cores; on a busy machine, where
  a multi-threaded operation waits for its slowest thread, far more.

Batching several runs into one set of kernels was measured too and rejected on
CPU: ``torch.func.vmap`` over stacked parameters (``stack_module_state``) turns
each convolution into a grouped convolution, and oneDNN's grouped convolutions
are slower than the same convolutions one run at a time; two cnn_bn runs packed
that way train at 0.65x the rate of one channels-last run at a time
(``benchmarks/bench_training.py --alternatives``). On a CUDA device, where one small
run leaves the device idle, that design is the fast one and is used by default
(:mod:`benchlab.training.batched`, ``train_runs(batched=...)``).

Every run owns its randomness: its model is initialised under its seed, and a
``torch.Generator`` seeded from it draws the data order (a new permutation per
epoch) and every dropout mask. ``nn.Dropout`` layers of the built model are
replaced by an equivalent layer that draws from that generator, so a run's
result does not depend on whether it was trained alone or in a pack, beyond the
rounding of kernels that split their work over a different number of threads. A model
that still draws from the global random number generator (a layer other than
``nn.Dropout``) is detected and trained one run at a time, with the global
generator seeded from the run's seed.
"""

from benchlab.training import checkpoint
from benchlab.training.checkpoint import Checkpointing
from benchlab.training.config import (
    BATCHED_RUNS,
    THREADS_PER_RUN,
    EpochRecord,
    OnEpoch,
    RunResult,
    StepRecord,
    TrainConfig,
    batched_by_default,
    learning_rate,
    pack_size,
    runs_per_task,
)
from benchlab.training.packs import train_runs
from benchlab.training.run import StepLoss, cross_entropy, evaluate

__all__ = ["BATCHED_RUNS", "THREADS_PER_RUN", "Checkpointing", "EpochRecord", "OnEpoch",
           "RunResult", "StepLoss", "StepRecord", "TrainConfig", "batched_by_default",
           "checkpoint", "cross_entropy", "evaluate", "learning_rate", "pack_size",
           "runs_per_task", "train_runs"]
