"""Executing jobs: a job and its inputs in, rows and products out.

One function per kind of job, each in its own module, the same wherever it runs (in
the calling process or on a cluster worker):

``train_pack``  several seeds of one configuration -> per job: epoch rows, and the
                trained weights with their epoch records; on the way, checkpoints
                of every run (and it continues runs from given checkpoints)
``attack``      one attack on one trained model -> rows, and the adversarial images
                the explain jobs will read
``explain``     one explainer on clean and attacked images -> rows, and the data of
                its grid figure

Nothing here writes to the run directory or the model cache: products come back
as values and the caller stores them. Inputs that come from other jobs (weights,
adversarial images) are passed in as values, so a worker needs no shared
filesystem; it needs only the components (its own plugin registry) and the
dataset, which it loads (and fetches, if missing) into its own data root.
"""

from benchlab.execute.attack import attack, threat_rows
from benchlab.execute.explain import explain
from benchlab.execute.rows import row, split_records, train_rows
from benchlab.execute.train import (
    OnCheckpoint,
    OnEpoch,
    decode_checkpoint,
    encode_checkpoint,
    train_config,
    train_pack,
)
from benchlab.execute.workspace import (
    Attributed,
    JobResult,
    StateDict,
    Workspace,
    blame,
    build_model,
    resolve_device,
    seeded,
)

__all__ = ["Attributed", "JobResult", "OnCheckpoint", "OnEpoch", "StateDict", "Workspace",
           "attack", "blame", "build_model", "decode_checkpoint", "encode_checkpoint", "explain",
           "resolve_device", "row", "seeded", "split_records", "threat_rows", "train_config",
           "train_pack", "train_rows"]
