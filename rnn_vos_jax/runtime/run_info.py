"""What a training run records in its workdir for the jobs that read it (evaluation watch).

WORKDIR/run.json: {"num_steps": final step, "steps_per_epoch": float}, written by training at
start (process 0). Evaluation learns the final step from it instead of recounting the training
records, so data flows one way: training -> workdir -> evaluation.
"""

from __future__ import annotations

import json
from typing import Any

from rnn_vos_jax.runtime import atomic, storage

RUN_INFO = "run.json"


def write(workdir: str, **info: Any) -> None:
    """Writes WORKDIR/run.json atomically (a reader never sees a partial file)."""
    atomic.write_json(storage.join(workdir, RUN_INFO), info)


def read(workdir: str) -> dict[str, Any] | None:
    """WORKDIR/run.json as a dict, or None while no training has written it."""
    path = storage.join(workdir, RUN_INFO)
    return json.loads(storage.read_text(path)) if storage.exists(path) else None
