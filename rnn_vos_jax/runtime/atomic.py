"""The one atomic JSON writer: every JSON file the project writes (metrics.json, done markers,
run.json, dataset_info.json, segment.json, ...) goes through `write_json`.

Atomic: the bytes go through `storage.write_text`, which locally writes a temporary file in the
same folder and renames it over the target, and on an object store (gs://, ...) uploads one object,
so a reader (another process, a resumed run) sees the old file or the whole new one, never a
partial one. No JAX here: scoring uses it.
"""

from __future__ import annotations

import json
from typing import Any

from rnn_vos_jax.runtime import storage


def write_text(path: str, text: str) -> None:
    """Writes `text` to `path` (local or URL) atomically, creating its folder."""
    storage.write_text(path, text)


def write_json(path: str, obj: Any, *, indent: int | None = 1) -> None:
    """Writes `obj` as JSON (keys sorted) to `path` atomically."""
    write_text(path, json.dumps(obj, indent=indent, sort_keys=True))
