"""Backbones by name (`config.model.backbone`), and loading torchvision weights into them.

Every backbone is a Flax module with this interface:

    backbone = REGISTRY[name](width_divisor=1, dtype=jnp.float32, ...)   # all fields defaulted
    feats = backbone(x, train=False, mask=None)
        x [N,H,W,C] normalised frames (H, W multiples of 32), mask [N,H,W,1] or None
        -> {'f2','f4','f8','f16','f32'}: features at strides 2..32
    backbone.channels() -> {'f2': C2, ..., 'f32': C32} at its width_divisor

`mask` conditions the first conv through mask.first_conv (any backbone can take it). Class
attributes give its torchvision key map (used by `torchvision_init`):
    TORCHVISION          ((torchvision key prefix, own module prefix), ...); every own prefix is
                         filled from the file, every other variable keeps its fresh init
    TORCHVISION_IGNORED  torchvision key prefixes no model uses (classifier layers)
    FIRST_CONV           the first conv's own prefix: a kernel with more input channels than
                         the file's (a mask channel) takes the file's channels first and keeps
                         the rest
A family that wraps a backbone in its own module may share that module's scope
(`nn.share_scope`), so the backbone's variables sit beside the family's own (the authors' layout).
Adding a backbone: one file in this folder and one line below.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import numpy as np

from rnn_vos_jax.models.registry import Registry
from rnn_vos_jax.torch_keys import (
    KeyIndex,
    Path,
    canonical_modules,
    flatten_variables,
    to_torch_layout,
    torch_leaf,
)

REGISTRY = Registry(
    "config.model.backbone",
    {
        "resnet50": "rnn_vos_jax.models.backbones.resnet:ResNet",
        "resnet101": "rnn_vos_jax.models.backbones.resnet:ResNet101",
        "vgg16": "rnn_vos_jax.models.backbones.vgg:VGG16",
    },
)


def build(backbone: str, *, blocks: Sequence[int] | None = None, **fields) -> nn.Module:
    """The backbone registered as `backbone`.

    Args:
      backbone: registry name, e.g. 'resnet50'.
      blocks: optional stage depths overriding the backbone's own (tiny variants); only for
        backbones with a `depths` field.
      **fields: module fields (width_divisor, dtype, name, ...).
    """
    cls = REGISTRY[backbone]
    if blocks is not None:
        if "depths" not in cls.__dataclass_fields__:
            raise ValueError(
                f"backbone {backbone!r} has no stage depths to set (config.model.blocks)"
            )
        fields["depths"] = tuple(int(b) for b in blocks)
    return cls(**fields)


def _rename(key: str, table: Iterable[tuple[str, str]]) -> str | None:
    """`key` with its torchvision prefix replaced by the module prefix of `table`, else None."""
    for src, dst in table:
        if key == src or key.startswith(src + "."):
            return dst + key[len(src) :]
    return None


def _owned(cls, mods: Sequence[str]) -> tuple[str, int] | None:
    """(torchvision prefix, module components it covers) of a variable's module path, if any."""
    for src, dst in cls.TORCHVISION:
        own = canonical_modules(dst.split("."))
        for i in range(1, len(mods) + 1):
            if canonical_modules(mods[:i]) == own:
                return src, i
    return None


def torchvision_state(variables: Mapping[str, Any], backbone: str) -> dict[str, np.ndarray]:
    """The inverse key map: a backbone's own variables as a torchvision state dict.

    Args:
      variables: {'params', 'batch_stats'} of the backbone module alone (arrays).
      backbone: its registry name.

    Returns:
      torchvision key -> tensor (torch layout) for every variable the map covers (the fresh
      layers, e.g. mask_conv, are left out), as `torchvision_init` reads it.
    """
    cls, state = REGISTRY[backbone], {}
    for (collection, *mods, leaf), value in flatten_variables(variables).items():
        owned = _owned(cls, mods)
        if owned is not None:
            src, i = owned
            key = ".".join([src, *mods[i:], torch_leaf(collection, leaf)])
            state[key] = to_torch_layout(np.asarray(value))
    return state


def torchvision_init(
    state: Mapping[str, np.ndarray],
    flat: Mapping[Path, Any],
    targets: Sequence[tuple[str, str]],
    source: str,
    *,
    extra: Mapping[str, np.ndarray | None] | None = None,
    claimed: Iterable[str] = (),
) -> dict[Path, np.ndarray]:
    """Maps a torchvision state dict onto the backbones of a model.

    Args:
      state: torchvision key -> tensor (torch layout, numpy).
      flat: the model's flat variables {(collection, *modules, leaf): array}.
      targets: (module path of the backbone's scope, '.'-joined, backbone name) per backbone,
        e.g. [('encoder_ref', 'resnet50'), ('encoder', 'resnet50')].
      source: what `state` came from, for messages.
      extra: further model-level torch keys -> tensors a family maps itself (e.g. classifier
        layers reused as convs); their variables must exist. None: the file lacks the tensor
        (reported missing).
      claimed: keys of `state` that `extra` consumed (not reported as unexpected).

    Returns:
      {flax path: float32 array} for every variable the file fills.

    Raises:
      ConversionError: listing every missing, unexpected and mis-shaped tensor.
    """
    index_all = KeyIndex(flat)
    extra = dict(extra or {})
    renamed = {k: v for k, v in extra.items() if v is not None}
    subset: dict[Path, Any] = {}
    used, ignored = set(claimed), []
    for prefix, name in targets:
        cls = REGISTRY[name]
        ignored += list(cls.TORCHVISION_IGNORED)
        scope = tuple(prefix.split("."))
        for path, value in flat.items():
            mods = path[1 : len(path) - 1]
            if mods[: len(scope)] == scope and _owned(cls, mods[len(scope) :]) is not None:
                subset[path] = value
        for key, value in state.items():
            own = _rename(key, cls.TORCHVISION)
            if own is not None:
                used.add(key)
                renamed[f"{prefix}.{own}"] = value
        # A first conv that also sees a mask channel: only the file's input channels are given.
        first = f"{prefix}.{cls.FIRST_CONV}.weight"
        mine = index_all.resolve(first, 4)
        given = renamed.get(first)
        if mine is not None and given is not None and np.ndim(given) == 4:
            kernel = to_torch_layout(np.asarray(flat[mine]))
            c = given.shape[1]
            if kernel.shape[1] > c and kernel.shape[0] == given.shape[0]:
                renamed[first] = np.concatenate([given, kernel[:, c:]], axis=1)
    for key, value in extra.items():
        path = index_all.resolve(key, 4 if value is None else np.ndim(value))
        if path is None:
            raise ValueError(f"model has no variable for backbone tensor {key}; check config.model")
        subset[path] = flat[path]
    for key, value in state.items():
        if key not in used and not key.startswith(tuple(ignored)):
            renamed[key] = value  # not a tensor this model takes: reported as unexpected
    return KeyIndex(subset).convert(renamed, source)
