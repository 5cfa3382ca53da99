"""The one atomic file writer: every JSON file the project writes (metrics.json, done markers,
run.json, dataset_info.json, segment.json, ...) goes through `write_json`.

Atomic: the text goes to a temporary file in the same folder, which is then renamed over the
target, so a reader (another process, a resumed run) sees the old file or the whole new one,
never a partial one. No JAX here: scoring uses it.
"""

from __future__ import annotations

import json
import os
from typing import Any


def write_text(path: str, text: str) -> None:
    """Writes `text` to `path` atomically, creating its folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(path: str, obj: Any, *, indent: int | None = 1) -> None:
    """Writes `obj` as JSON (keys sorted) to `path` atomically."""
    write_text(path, json.dumps(obj, indent=indent, sort_keys=True))
