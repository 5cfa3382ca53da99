"""Orbax checkpoints: the training manager and standalone model variables.

Layout:
  WORKDIR/checkpoints/<step>/default/   full train state (step, params, batch_stats, opt_state, rng)
  WORKDIR/checkpoints/<step>.corrupt-<unix time>/  a step that failed to restore, moved aside
  DIR/ (save_variables)                 standalone {'params', 'batch_stats'} tree

A step counts only once committed, so a save cut short by a kill or preemption is never taken
for the latest. On a disk orbax writes it into <step>.orbax-checkpoint-tmp-<n>/ and renames it
when every process has written its part; on an object store (gs://), where a rename is a copy of
every object, it writes <step>/ in place and adds commit_success.txt last, and only steps holding
that file count (`_committed`). All processes of a run call
save and restore; one set of files is written.

`load_variables` reads model variables from any of these (a save_variables dir, a training
workdir, its checkpoints/ folder or one step folder), so evaluation, `init_from`, weight conversion
and the Python API share one reader. Arrays come back as host numpy arrays: the caller places them.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from rnn_vos_jax.runtime import storage

CHECKPOINT_DIR = "checkpoints"
_ITEM = "default"
_VARIABLE_KEYS = ("params", "batch_stats")
# What orbax writes last into a step saved in place on an object store.
_COMMIT_FILE = "commit_success.txt"


class TrainCheckpointer:
    """Thin wrapper of `ocp.CheckpointManager` for the train state of one workdir.

    Args:
      workdir: training directory; checkpoints go to WORKDIR/checkpoints/<step>.
      save_interval_steps: save only steps that are multiples of this (unless forced).
      max_to_keep: keep the newest N checkpoints.
      use_async: write in a background thread (training continues meanwhile).
    """

    def __init__(
        self, workdir: str, *, save_interval_steps: int, max_to_keep: int, use_async: bool = True
    ):
        self.directory = storage.absolute(storage.join(workdir, CHECKPOINT_DIR))
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=save_interval_steps,
            max_to_keep=max_to_keep,
            enable_async_checkpointing=use_async,
            create=True,
        )
        self._manager = ocp.CheckpointManager(storage.as_path(self.directory), options=options)

    def latest_step(self) -> int | None:
        """The newest complete checkpoint step, or None when there is none."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, *, force: bool = False) -> bool:
        """Saves `state` at `step` if the interval policy (or `force`) says so; True if saved.

        Raises:
          StorageError: "cannot write checkpoint DIR: CAUSE" for a full disk or a refused write
            (this save's, or an earlier asynchronous one's); the uncommitted step is never used.
        """
        with self._storage_errors():
            return self._manager.save(step, args=ocp.args.StandardSave(state), force=force)

    @contextlib.contextmanager
    def _storage_errors(self):
        try:
            yield
        except Exception as e:
            code = storage.fatal_errno(e)
            if code is None:
                raise
            raise storage.StorageError(
                code, f"cannot write checkpoint {self.directory}: {os.strerror(code)}"
            ) from e

    def restore(self, step: int, abstract_state: Any) -> Any:
        """Restores the state of `step` laid out like `abstract_state` (ShapeDtypeStructs
        with shardings), so it lands already sharded on the mesh."""
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any] | None:
        """The newest committed checkpoint that restores, as (step, state); None if none exists.

        A committed step that fails to read back (missing or truncated files) is skipped with a
        warning naming it and the step before is tried; once one restores, the failed steps are
        moved aside to <step>.corrupt-<unix time> (saving that step again would collide with
        them). All processes must restore a step for it to count.

        Raises:
          RuntimeError: naming every checkpoint and its error when none restores (then nothing
            is moved).
        """
        failed: list[tuple[int, str]] = []
        for step in sorted(self.all_steps(), reverse=True):
            try:
                state, error = self.restore(step, abstract_state), ""
            except Exception as e:  # noqa: BLE001 - orbax/tensorstore raise many kinds
                state, error = None, f"{type(e).__name__}: {str(e)[:500]}"
            if _all_processes(not error):
                if failed:
                    self._move_aside([s for s, _ in failed])
                return step, state
            error = error or "failed in another process"
            logging.warning(
                "Checkpoint %s/%d does not restore (%s); falling back to the one before it",
                self.directory,
                step,
                error,
            )
            failed.append((step, error))
        if failed:
            listed = "; ".join(f"{self.directory}/{s}: {e}" for s, e in failed)
            raise RuntimeError(f"no checkpoint in {self.directory} restores: {listed}")
        return None

    def _move_aside(self, steps: list[int]) -> None:
        if jax.process_index() == 0:
            stamp = int(time.time())
            for step in steps:
                src = storage.join(self.directory, str(step))
                dst = f"{src}.corrupt-{stamp}"
                storage.rename(src, dst)
                logging.warning("Moved the unreadable checkpoint %s to %s", src, dst)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("checkpoints_moved_aside")
        self._manager.reload()

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are committed (errors: as `save`)."""
        with self._storage_errors():
            self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and closes (errors: as `save`)."""
        with self._storage_errors():
            self._manager.close()


def _all_processes(ok: bool) -> bool:
    """True when `ok` holds in every process (one all-gather; no collective with one process)."""
    if jax.process_count() == 1:
        return ok
    return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


def save_variables(path: str, variables: dict[str, Any]) -> None:
    """Writes model variables {'params', 'batch_stats'} as a standalone orbax checkpoint.

    Args:
      path: output directory (must not exist yet; orbax refuses to overwrite).
      variables: dict with 'params' and optionally 'batch_stats' pytrees of arrays.
    """
    unknown = set(variables) - set(_VARIABLE_KEYS)
    if unknown or "params" not in variables:
        raise ValueError(
            f"save_variables expects keys {_VARIABLE_KEYS} (params required), got {sorted(variables)}"
        )
    tree = {k: variables[k] for k in _VARIABLE_KEYS if k in variables}
    tree = jax.tree.map(np.asarray, tree)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(storage.as_path(storage.absolute(path)), tree)
    checkpointer.wait_until_finished()
    checkpointer.close()


def _committed(step_dir: str) -> bool:
    """Whether a <step>/ folder holds a finished save (see the module docstring)."""
    if storage.is_remote(step_dir):
        return storage.exists(storage.join(step_dir, _COMMIT_FILE))
    return storage.isdir(storage.join(step_dir, _ITEM))


def _is_step_dir(path: str) -> bool:
    return bool(re.fullmatch(r"\d+", storage.basename(path))) and _committed(path)


def _step_dirs(root: str) -> dict[int, str]:
    out = {}
    if storage.isdir(root):
        for name in storage.listdir(root):
            full = storage.join(root, name)
            if re.fullmatch(r"\d+", name) and _committed(full):
                out[int(name)] = full
    return out


def committed_steps(workdir: str) -> list[int]:
    """The steps of WORKDIR/checkpoints whose saves completed, ascending ([] when none)."""
    return sorted(_step_dirs(storage.join(workdir, CHECKPOINT_DIR)))


def resolve_variables_path(path: str, step: int | None = None) -> str:
    """Finds the orbax item directory holding variables for `path` (see `load_variables`)."""
    path = storage.absolute(path)
    if not storage.exists(path):
        raise FileNotFoundError(f"checkpoint path does not exist: {path}")
    if _is_step_dir(path):
        if step is not None and int(storage.basename(path)) != step:
            raise ValueError(
                f"{path} is the checkpoint of step {storage.basename(path)}, not {step}"
            )
        return storage.join(path, _ITEM)
    for root in (storage.join(path, CHECKPOINT_DIR), path):
        steps = _step_dirs(root)
        if steps:
            chosen = max(steps) if step is None else step
            if chosen not in steps:
                raise FileNotFoundError(
                    f"no checkpoint of step {chosen} in {root}; available: {sorted(steps)}"
                )
            return storage.join(steps[chosen], _ITEM)
    if storage.exists(storage.join(path, "_METADATA")) or storage.exists(
        storage.join(path, "_CHECKPOINT_METADATA")
    ):
        if step is not None:
            raise ValueError(f"{path} is a standalone variables checkpoint; it has no step {step}")
        return path
    raise FileNotFoundError(
        f"no orbax checkpoint found at {path} (expected a save_variables directory, a training "
        f"workdir with {CHECKPOINT_DIR}/<step>/, or a step directory)"
    )


def load_variables(path: str, step: int | None = None) -> dict[str, Any]:
    """Loads model variables {'params', 'batch_stats'} as numpy arrays.

    Args:
      path: a `save_variables` directory, a training workdir (uses WORKDIR/checkpoints), a
        checkpoints/ folder, or one step folder of it.
      step: which training step (default: the latest); only for workdirs/checkpoint folders.

    Returns:
      dict with 'params' and 'batch_stats' (empty dict if the model has none) of numpy arrays;
      the optimizer state of a training checkpoint is not read.
    """
    item = resolve_variables_path(path, step)
    checkpointer = ocp.PyTreeCheckpointer()
    item = storage.as_path(item)
    tree = checkpointer.metadata(item).item_metadata.tree
    if "params" not in tree:
        raise ValueError(f"checkpoint {item} holds no 'params' (keys: {sorted(tree)})")
    wanted = {k: tree[k] for k in _VARIABLE_KEYS if k in tree}
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
    restored = checkpointer.restore(
        item,
        args=ocp.args.PyTreeRestore(item=wanted, restore_args=restore_args, partial_restore=True),
    )
    checkpointer.close()
    restored = {k: restored[k] for k in _VARIABLE_KEYS if k in restored}
    restored.setdefault("batch_stats", {})
    return restored
