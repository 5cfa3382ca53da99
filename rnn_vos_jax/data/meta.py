"""The one reader of YouTube-VOS meta.json files, and of a split's categories.

    {"videos": {VIDEO: {"objects": {"1": {"category": str, "frames": [FRAME, ...]}, ...}}}}

`read` checks every entry (errors name the file and the key) and gives each object as an
`ObjectInfo` with its frames sorted (frames[0] is where it first appears). `categories` reads a
split's category names from a meta.json or from a converted split's dataset_info.json (its
"categories" list), for the seen/unseen split of the scores. No TensorFlow or JAX here.
"""

from __future__ import annotations

import dataclasses
import json

from rnn_vos_jax.runtime import storage


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    """One annotated object. frames: sorted frame names where it is listed; frames[0] = first."""

    obj_id: int
    category: str | None
    frames: list[str]


def _load(path: str) -> dict:
    try:
        return json.loads(storage.read_text(path))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read {path}: {error}") from error


def read(path: str) -> dict[str, dict[int, ObjectInfo] | None]:
    """{video: {object id: ObjectInfo}} of a meta.json, in the file's video order.

    A video whose entry is not a dict holding an 'objects' dict maps to None (the caller that
    reads it says so, naming the video); every object entry is checked here.

    Raises:
      ValueError: naming the file (and the key) when it is not a meta.json or an object entry
        is malformed (id not in 1..255, no 'frames' list).
    """
    meta = _load(path)
    if not isinstance(meta, dict) or not isinstance(meta.get("videos"), dict):
        raise ValueError(f"{path}: expected {{'videos': {{VIDEO: {{'objects': ...}}}}}}")  # noqa: TRY004
    out = {}
    for video, entry in meta["videos"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("objects"), dict):
            out[video] = None
            continue
        objects = {}
        for key, value in entry["objects"].items():
            where = f"{path} videos/{video}/objects/{key}"
            try:
                obj_id = int(key)
            except ValueError:
                raise ValueError(f"{where}: object id is not an integer") from None
            frames = value.get("frames") if isinstance(value, dict) else None
            if not (0 < obj_id < 256) or not isinstance(frames, list) or not frames:
                raise ValueError(f"{where}: need id in 1..255 and a 'frames' list")
            objects[obj_id] = ObjectInfo(obj_id, value.get("category"), sorted(map(str, frames)))
        out[video] = dict(sorted(objects.items()))
    return out


def categories(path: str) -> set[str]:
    """Category names of a split from a YouTube-VOS meta.json or a dataset_info.json.

    Raises:
      ValueError: when the file holds neither ``videos`` nor ``categories``.
    """
    info = _load(path)
    if isinstance(info, dict) and "videos" in info:
        return {
            o.category
            for objects in read(path).values()
            for o in (objects or {}).values()
            if o.category
        }
    if isinstance(info, dict) and "categories" in info:
        return {c for c in info["categories"] if c}
    raise ValueError(f"{path}: no 'videos' or 'categories' key to take the categories from")
