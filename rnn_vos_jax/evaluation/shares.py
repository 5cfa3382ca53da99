"""Which videos each process of a multi-process evaluation evaluated (OUT/shares/process_<i>.json),
merged by process 0 into the one list its metrics.json covers. No collective carries scores."""

from __future__ import annotations

import json
import time

from absl import logging

from rnn_vos_jax.runtime import atomic, storage

SHARES_DIR = "shares"
# How often process 0 looks for the other processes' share files, and logs the missing ones.
SHARE_POLL_S = 0.5
SHARE_LOG_S = 60.0


class Shares:
    """Which videos each process evaluated: OUT/shares/process_<i>.json, merged by process 0."""

    def __init__(self, out_dir: str, label: str, index: int, count: int):
        self.dir = storage.join(out_dir, SHARES_DIR)
        self.label, self.index, self.count = label, index, count

    def path(self, index: int) -> str:
        return storage.join(self.dir, f"process_{index}.json")

    def start(self) -> None:
        """Process 0 clears the last run's shares; a barrier keeps the others from writing first."""
        if self.count == 1:
            return
        if self.index == 0 and storage.isdir(self.dir):
            for name in storage.listdir(self.dir):
                storage.remove(storage.join(self.dir, name))
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"rnn_vos_jax eval start: {self.label}")

    def merge(self, names: list[str]) -> list[str] | None:
        """Every process's video names on process 0 (None on the others, after writing theirs).

        Raises:
          ValueError: a share belongs to another evaluation, or two shares hold one video.
        """
        if self.count == 1:
            return names
        entry = {"checkpoint": self.label, "process_count": self.count, "videos": names}
        atomic.write_json(self.path(self.index), entry)
        if self.index != 0:
            logging.info(
                "process %d: share of %d videos done, process 0 merges", self.index, len(names)
            )
            return None
        pending, last_log = set(range(self.count)), time.time()
        merged = {}
        while pending:
            for i in sorted(pending):
                try:
                    merged[i] = json.loads(storage.read_text(self.path(i)))
                except (OSError, json.JSONDecodeError):  # not written yet (writes are atomic)
                    continue
                pending.discard(i)
            if pending:
                if time.time() - last_log > SHARE_LOG_S:
                    logging.info("waiting for the shares of processes %s", sorted(pending))
                    last_log = time.time()
                time.sleep(SHARE_POLL_S)
        evaluated = []
        for i, share in sorted(merged.items()):
            if share.get("checkpoint") != self.label or share.get("process_count") != self.count:
                raise ValueError(
                    f"{self.path(i)} is from another evaluation ({share.get('checkpoint')!r}, "
                    f"{share.get('process_count')} processes), not {self.label!r} on {self.count}"
                )
            evaluated += share["videos"]
        twice = sorted(v for v in set(evaluated) if evaluated.count(v) > 1)
        if twice:
            raise ValueError(f"videos evaluated by two processes: {twice[:5]}")
        return evaluated
