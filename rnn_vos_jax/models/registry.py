"""Name -> implementation tables for families, cells, fusion blocks and backbones.

Entries are "module:attribute" strings imported on first use, so a registry line is all a new
implementation adds, importing `rnn_vos_jax.models` stays cheap, and an implementation module may
import the registries it builds on without a cycle.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any


class Registry(Mapping[str, Any]):
    """A read-only mapping name -> implementation, resolved lazily.

    Args:
      what: how errors name the setting, e.g. "config.model.cell".
      entries: name -> "package.module:attribute".
    """

    def __init__(self, what: str, entries: Mapping[str, str]):
        self.what = what
        self._entries = dict(entries)
        self._loaded: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._entries:
            raise ValueError(f"Unknown {self.what} {name!r}; known: {sorted(self._entries)}")
        if name not in self._loaded:
            module, _, attribute = self._entries[name].partition(":")
            self._loaded[name] = getattr(importlib.import_module(module), attribute)
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> tuple[str, ...]:
        """Registered names in registration order."""
        return tuple(self._entries)
