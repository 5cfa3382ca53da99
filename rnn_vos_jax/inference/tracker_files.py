"""A tracker's state on disk (tracker.Tracker.save / load), and what a state must match to load.

    FOLDER/tracker.json             the record: where the state came from (model family, its
                                    fields, model input size, fed-back mask setting, a digest
                                    of the weights, the checkpoint path, the config), the
                                    objects and their batch slots, the frame index and size,
                                    the caller's `info`, and the arrays file's name
    FOLDER/carry-00000042.npz       the carry's arrays (frame index 42 next), one per leaf

Atomic: the arrays go to a file named by the frame index (written under a temporary name,
then renamed; one object upload on gs://), and only then tracker.json, through the project's one atomic JSON writer, points
at it; older arrays files are removed last. A reader, or a run stopped at any moment, sees
the previous state whole or the new one whole.

A state loads only into the same model with the same weights: every model field, the input
size and the fed-back mask setting must be equal (they change what the carry means), and the
weights' digest (a strided sample and the sum of every array: cheap, and different for any
two trained checkpoints) must match; the error names what differs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnn_vos_jax import models
from rnn_vos_jax.runtime import atomic, storage

RECORD = "tracker.json"
FORMAT = "rnn_vos_jax.tracker/1"
SAMPLES_PER_ARRAY = 4096  # values of each weight array that enter the digest


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """A tracker state in host memory: its JSON `record` and the carry's `arrays` by tree path."""

    record: dict
    arrays: dict[str, np.ndarray]


def write(folder: str, snapshot: Snapshot) -> str:
    """Writes a snapshot to `folder` (a local folder, created, or a URL) atomically; returns
    `folder`."""
    storage.makedirs(folder)
    record, keys, name = dict(snapshot.record), sorted(snapshot.arrays), None
    if keys:
        name = f"carry-{int(record['frame_index']):08d}.npz"
        buffer = io.BytesIO()
        np.savez(buffer, **{f"a{i}": snapshot.arrays[k] for i, k in enumerate(keys)})
        storage.write_bytes(storage.join(folder, name), buffer.getvalue())
    record.update(format=FORMAT, carry=name, carry_keys=keys)
    atomic.write_json(storage.join(folder, RECORD), record)
    for path in storage.glob(storage.join(folder, "carry-*.npz*")):
        if storage.basename(path) != name:
            storage.remove(path)
    return folder


def read(folder: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(record, arrays by tree path) of the state in `folder`.

    Raises:
      FileNotFoundError: no state there.
      ValueError: not a state this version wrote, or its arrays file is missing or damaged.
    """
    path = storage.join(folder, RECORD)
    if not storage.isfile(path):
        raise FileNotFoundError(f"no saved tracker state in {folder} (no {RECORD})")
    try:
        record = json.loads(storage.read_text(path))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read the tracker state {path}: {error}") from None
    if record.get("format") != FORMAT:
        raise ValueError(f"{path} is not a tracker state of format {FORMAT!r}")
    arrays = {}
    if record["carry"]:
        file = storage.join(folder, record["carry"])
        try:
            with np.load(io.BytesIO(storage.read_bytes(file))) as z:
                arrays = {k: z[f"a{i}"] for i, k in enumerate(record["carry_keys"])}
        except (OSError, KeyError, ValueError) as error:
            raise ValueError(f"cannot read the tracker state's arrays {file}: {error}") from None
    return record, arrays


def model_fields(model) -> dict[str, str]:
    """The Flax model's fields (what it is built from), as reprs."""
    skip = ("parent", "name")
    return {
        f.name: repr(getattr(model, f.name))
        for f in dataclasses.fields(model)
        if f.init and f.name not in skip
    }


_DIGESTS: dict[int, tuple[Any, str]] = {}  # id(variables) -> (variables, digest); keeps the id


def weights_digest(variables) -> str:
    """sha1 over every weight array's path, shape, dtype, a strided sample and its sum."""
    cached = _DIGESTS.get(id(variables))
    if cached is not None and cached[0] is variables:
        return cached[1]
    digest = hashlib.sha1()
    leaves = jax.tree_util.tree_flatten_with_path(variables)[0]
    for path, leaf in sorted(leaves, key=lambda x: jax.tree_util.keystr(x[0])):
        x = np.asarray(leaf).ravel()
        sample = x[:: max(1, x.size // SAMPLES_PER_ARRAY)]
        head = (
            f"{jax.tree_util.keystr(path)}:{x.shape}:{x.dtype}:{float(x.sum(dtype=np.float64))!r}"
        )
        digest.update(head.encode())
        digest.update(np.ascontiguousarray(sample).tobytes())
    if len(_DIGESTS) > 8:
        _DIGESTS.clear()
    _DIGESTS[id(variables)] = (variables, digest.hexdigest())
    return digest.hexdigest()


def origin(model, variables, image_size, feedback: str) -> dict:
    """What a state must match to load: the model, its input size, feedback and weights."""
    return {
        "family": models.family_of(model).name,
        "model": model_fields(model),
        "image_size": [int(s) for s in image_size],
        "feedback": feedback,
        "weights": weights_digest(variables),
    }


def config_json(config) -> Any:
    """A full config as JSON data (None stays None)."""
    if config is None:
        return None
    return json.loads(config.to_json_best_effort())


def check_origin(folder: str, record: dict, here: dict, source: str | None) -> None:
    """Raises a ValueError naming what differs between a saved state's origin and `here`."""
    diffs = []
    if record["family"] != here["family"]:
        diffs.append(f"model family {record['family']!r} (this model: {here['family']!r})")
    else:
        saved, now = record["model"], here["model"]
        for key in sorted(set(saved) | set(now)):
            if saved.get(key) != now.get(key):
                diffs.append(f"config.model.{key}={saved.get(key)} (this model: {now.get(key)})")
    if record["image_size"] != here["image_size"]:
        diffs.append(
            f"config.data.image_size={tuple(record['image_size'])} "
            f"(this model: {tuple(here['image_size'])})"
        )
    if record["feedback"] != here["feedback"]:
        diffs.append(
            f"config.eval.feedback={record['feedback']!r} (this model: {here['feedback']!r})"
        )
    if diffs:
        raise ValueError(
            f"the tracker state in {folder} was saved by another model: {'; '.join(diffs)}"
        )
    if record["weights"] != here["weights"]:
        raise ValueError(
            f"the tracker state in {folder} was saved with the weights of checkpoint "
            f"{record.get('checkpoint') or '(unknown)'} (digest {record['weights'][:12]}), but "
            f"these weights come from {source or '(unknown)'} (digest {here['weights'][:12]}): "
            "another checkpoint"
        )


def restore_tree(folder: str, shapes, arrays: dict[str, np.ndarray]):
    """The carry pytree shaped as `shapes` (ShapeDtypeStructs) from saved `arrays`, checked."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    keys = [jax.tree_util.keystr(p) for p, _ in leaves]
    if set(keys) != set(arrays):
        raise ValueError(
            f"the tracker state in {folder} holds carry entries {sorted(arrays)}, but this "
            f"model's carry has {sorted(keys)}"
        )
    out = []
    for key, (_, want) in zip(keys, leaves):
        got = arrays[key]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise ValueError(
                f"the tracker state in {folder}: carry entry {key} is {got.dtype}{got.shape}, "
                f"this model's is {want.dtype}{want.shape}"
            )
        out.append(jnp.asarray(got))
    return jax.tree_util.tree_unflatten(treedef, out)
