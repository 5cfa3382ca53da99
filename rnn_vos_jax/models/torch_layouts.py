"""How the authors' PyTorch checkpoint files are laid out, one class per layout kind.

A family names its layout in its Family record (`checkpoint`); convert_torch reads a file
through it, and exports our variables back into it. Two kinds cover the authors' code:

  StateDictLayout   one state dict, optionally under a key ('model') and with DataParallel's
                    'module.' prefix on every key (HS2S: {'model': ModelMatch state dict, ...})
  ModuleDictLayout  one state dict per top-level module ({'initializer': sd, 'encoder': sd, ...};
                    S2S++)

Model-level torch keys name Flax paths by the rule of torch_keys (modules joined by '.', leaf
renamed); `sequentials` lists torch nn.Sequential containers whose integer children the Flax
models fold into the parent's name (vgg_backbone.encoder.3.4 <-> vgg_backbone/encoder_3_4).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rnn_vos_jax.models.torch_keys import Path, torch_leaf

DATA_PARALLEL_PREFIX = "module."


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(v, np.ndarray) for v in obj.values())
    )


class _Layout:
    """Shared Flax path -> torch key rule (see the module docstring)."""

    name: str
    sequentials: tuple[str, ...] = ()

    def torch_key(self, path: Path) -> str:
        """Model-level torch key of a Flax variable path ('params', *modules, leaf)."""
        collection, *mods, leaf = path
        parts = []
        for mod in mods:
            match = re.fullmatch(r"(.+?)((?:_\d+)+)", mod)
            if match and match.group(1) in self.sequentials:
                parts += [match.group(1), *match.group(2)[1:].split("_")]
            else:
                parts.append(mod)
        return ".".join([*parts, torch_leaf(collection, leaf)])


class StateDictLayout(_Layout):
    """A single state dict, optionally under `container` and with the DataParallel prefix.

    Args:
      name: layout name used in messages (e.g. 'hs2s').
      container: top-level key holding the state dict in the file ('' = the file is the dict).
      data_parallel: whether exported keys carry 'module.' (read either way).
      sequentials: see the module docstring.
    """

    def __init__(
        self,
        name: str,
        container: str = "model",
        data_parallel: bool = True,
        sequentials: Sequence[str] = (),
    ):
        self.name, self.container, self.data_parallel = name, container, data_parallel
        self.sequentials = tuple(sequentials)

    def describe(self) -> str:
        return f"{{{self.container!r}: state_dict, ...}} or a bare state dict"

    def _state(self, ckpt: Mapping[str, Any]) -> Any:
        inner = ckpt.get(self.container) if self.container else None
        return inner if isinstance(inner, Mapping) else ckpt

    def detect(self, ckpt: Mapping[str, Any]) -> bool:
        """Whether `ckpt` (nested dicts of numpy arrays) is laid out this way."""
        return _is_state_dict(self._state(ckpt))

    def flatten(self, ckpt: Mapping[str, Any], source: str) -> dict[str, np.ndarray]:
        """Model-level torch key -> tensor ('module.' stripped)."""
        state = dict(self._state(ckpt))
        if state and all(k.startswith(DATA_PARALLEL_PREFIX) for k in state):
            state = {k[len(DATA_PARALLEL_PREFIX) :]: v for k, v in state.items()}
        return state

    def unflatten(self, state: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Inverse of `flatten`: the file's structure."""
        prefix = DATA_PARALLEL_PREFIX if self.data_parallel else ""
        inner = {prefix + k: v for k, v in state.items()}
        return {self.container: inner} if self.container else inner


class ModuleDictLayout(_Layout):
    """One state dict per top-level module, keyed by the module's name.

    Args:
      name: layout name used in messages (e.g. 's2s_pp').
      modules: every module name the file may hold, in order.
      required: the names a file of this layout always holds.
      sequentials: see the module docstring.
    """

    def __init__(self, name: str, modules: Sequence[str], required: Sequence[str], sequentials=()):
        self.name, self.modules, self.required = name, tuple(modules), tuple(required)
        self.sequentials = tuple(sequentials)

    def describe(self) -> str:
        return "{" + ", ".join(self.modules) + "}"

    def detect(self, ckpt: Mapping[str, Any]) -> bool:
        return all(k in ckpt for k in self.required)

    def flatten(self, ckpt: Mapping[str, Any], source: str) -> dict[str, np.ndarray]:
        """'module.key' -> tensor over every module the file holds."""
        flat = {}
        for name in self.modules:
            if name in ckpt:
                if not _is_state_dict(ckpt[name]):
                    raise ValueError(f"{source}: entry {name!r} is not a state dict of tensors")
                flat.update({f"{name}.{k}": v for k, v in ckpt[name].items()})
        return flat

    def unflatten(self, state: Mapping[str, np.ndarray]) -> dict[str, Any]:
        out: dict[str, dict[str, np.ndarray]] = {}
        for key, value in state.items():
            module, _, rest = key.partition(".")
            out.setdefault(module, {})[rest] = value
        return out
