"""Training metrics to WORKDIR/metrics.jsonl and TensorBoard event files (process 0 only)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import jax

from rnn_vos_jax.runtime import storage


class MetricWriter:
    """Appends one JSON line per write and mirrors scalars to TensorBoard.

    Only process 0 writes; other processes get a writer whose calls do nothing, so the training
    loop needs no process checks.

    Args:
      workdir: directory receiving metrics.jsonl and tensorboard/ event files.
      enabled: defaults to `jax.process_index() == 0`.
      tensorboard: also write TensorBoard events (tensorboardX; it writes gs:// through
        google-cloud-storage, re-uploading the events object on each flush).
      jsonl: write metrics.jsonl (False: TensorBoard only).
    """

    def __init__(
        self,
        workdir: str,
        *,
        enabled: bool | None = None,
        tensorboard: bool = True,
        jsonl: bool = True,
    ):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.path = storage.join(workdir, "metrics.jsonl") if jsonl else None
        self._tb = None
        if not self.enabled:
            return
        storage.makedirs(workdir)
        if tensorboard:
            from tensorboardX import SummaryWriter  # imported lazily: optional at import time

            self._tb = SummaryWriter(storage.join(workdir, "tensorboard"))

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        """Records `scalars` (name -> number) at `step`."""
        if not self.enabled:
            return
        row = {"step": int(step)}
        for key, value in scalars.items():
            value = float(value)
            # JSON has no NaN/Inf literal; keep the line parseable by strict readers.
            row[key] = value if math.isfinite(value) else str(value)
        if self.path is not None:
            storage.append_text(self.path, json.dumps(row) + "\n")
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, float(value), int(step))

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(workdir: str) -> list[dict]:
    """Reads back WORKDIR/metrics.jsonl as a list of dicts (empty if absent)."""
    path = storage.join(workdir, "metrics.jsonl")
    if not storage.exists(path):
        return []
    return [json.loads(line) for line in storage.read_text(path).splitlines() if line.strip()]
