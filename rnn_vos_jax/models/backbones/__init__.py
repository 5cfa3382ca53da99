"""Backbones by name (`config.model.backbone`), and loading torchvision weights into them.

Every backbone is a Flax module with this interface:

    backbone = REGISTRY[name](width_divisor=1, dtype=jnp.float32, ...)   # all fields defaulted
    feats = backbone(x, train=False, mask=None)
        x [N,H,W,C] normalised frames (H, W multiples of 32), mask [N,H,W,1] or None
        -> {'f2','f4','f8','f16','f32'}: the feature pyramid (f32 at stride 16 for an output
           stride 16 backbone), and optionally 'top' (see below)
    backbone.channels() -> {'f2': C2, ..., 'f32': C32[, 'top': Ctop]} at its width_divisor
    backbone.strides()  -> {'f2': 2, 'f4': 4, 'f8': 8, 'f16': 16, 'f32': 32 or 16[, 'top': ..]}

The keys of channels() and strides() are exactly those of the output. 'top' is the output of a
backbone's deep head on f32 (DeepLab's ASPP; VGG16's fc6/fc7 as convs when `fcn_head=True`), at
f32's stride: a family that reduces the backbone to one bottleneck feature (HS2S's `e`) reduces
'top' when present and f32 otherwise, and keeps f32 as the skip feature.

`mask` conditions the first conv through mask.first_conv (any backbone can take it). Class
attributes give its torchvision key map (used by `torchvision_init`):
    TORCHVISION          ((torchvision key prefix, own module prefix), ...); every own prefix is
                         filled from the file, every other variable keeps its fresh init.
                         Several prefixes may fill one own prefix (alternative file layouts,
                         e.g. deeplabv3's backbone.layer1 and ImageNet's layer1): the first is
                         what `torchvision_state` writes; a file holding two of them lists the
                         second as unexpected
    TORCHVISION_HEAD     optional, pairs as TORCHVISION for a deep head, filled as one group iff
                         the model has the head's variables and the file has any of its keys
                         (so an ImageNet file leaves DeepLab's ASPP at its init); otherwise its
                         keys count as any other key (ignored or unexpected)
    TORCHVISION_LINEAR   optional ((torchvision prefix, k), ...): Linear layers whose weight
                         (O, C*k*k) is an own k x k conv (O, C, k, k) (VGG's fc6 / fc7)
    TORCHVISION_IGNORED  torchvision key prefixes no backbone variable takes (classifiers)
    FIRST_CONV           the first conv's own prefix: a kernel with more input channels than
                         the file's (a mask channel) takes the file's channels first and keeps
                         the rest
and, optionally, static methods for tensors whose file layout is not torch_keys' (Conv1d
weights, tables that are not Linear weights, tables resized to the model's shape):
    torchvision_adapt(own key, file tensor, Flax shape of its variable) -> the tensor in the
                         layout torch_keys.to_flax_layout converts (torchvision_init)
    torchvision_export(torchvision key, tensor after to_torch_layout) -> the file's layout
                         (torchvision_state)
A file saved from DataParallel (every key prefixed 'module.') is read without the prefix.
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
from rnn_vos_jax.models.torch_keys import (
    KeyIndex,
    Path,
    canonical_modules,
    flatten_variables,
    to_torch_layout,
    torch_leaf,
)
from rnn_vos_jax.models.torch_layouts import DATA_PARALLEL_PREFIX

REGISTRY = Registry(
    "config.model.backbone",
    {
        "resnet50": "rnn_vos_jax.models.backbones.resnet:ResNet",
        "resnet101": "rnn_vos_jax.models.backbones.resnet:ResNet101",
        "vgg16": "rnn_vos_jax.models.backbones.vgg:VGG16",
        "deeplab_r50": "rnn_vos_jax.models.backbones.deeplab:DeepLabR50",
        "deeplab_r50_aspp": "rnn_vos_jax.models.backbones.deeplab:DeepLabR50ASPP",
        "axial_s": "rnn_vos_jax.models.backbones.axial:AxialDeepLabS",
    },
)


def build(
    backbone: str, *, blocks: Sequence[int] | None = None, depth_divisor: int = 1, **fields
) -> nn.Module:
    """The backbone registered as `backbone`.

    Args:
      backbone: registry name, e.g. 'resnet50'.
      blocks: optional stage depths overriding the backbone's own (tiny variants); only for
        backbones with a `depths` field.
      depth_divisor: > 1 (and no `blocks`): each stage keeps max(1, round(depth / d)) of its
        blocks, e.g. (1, 1, 1, 1) of ResNet-50's (3, 4, 6, 3) and (1, 1, 4, 1) of ResNet-101's
        for d = 6 (the demo); backbones without stage depths (VGG16) are unchanged.
      **fields: module fields (width_divisor, dtype, name, ...).
    """
    cls = REGISTRY[backbone]
    has_depths = "depths" in cls.__dataclass_fields__
    if blocks is not None:
        if not has_depths:
            raise ValueError(
                f"backbone {backbone!r} has no stage depths to set (config.model.blocks)"
            )
        fields["depths"] = tuple(int(b) for b in blocks)
    elif depth_divisor != 1 and has_depths:
        if depth_divisor < 1:
            raise ValueError(f"config.model.depth_divisor must be >= 1, got {depth_divisor}")
        fields["depths"] = tuple(max(1, round(d / depth_divisor)) for d in cls.depths)
    return cls(**fields)


def _rename(key: str, table: Iterable[tuple[str, str]]) -> str | None:
    """`key` with its torchvision prefix replaced by the module prefix of `table`, else None."""
    for src, dst in table:
        if key == src or key.startswith(src + "."):
            return dst + key[len(src) :]
    return None


def _owned(table: Iterable[tuple[str, str]], mods: Sequence[str]) -> tuple[str, int] | None:
    """(torchvision prefix, module components it covers) of a variable's module path, if any."""
    for src, dst in table:
        own = canonical_modules(dst.split("."))
        for i in range(1, len(mods) + 1):
            if canonical_modules(mods[:i]) == own:
                return src, i
    return None


def _head(cls) -> tuple[tuple[str, str], ...]:
    return tuple(getattr(cls, "TORCHVISION_HEAD", ()))


def _linear_k(cls, key: str) -> int | None:
    """k of a TORCHVISION_LINEAR layer whose weight is torchvision key `key`, else None."""
    for src, k in getattr(cls, "TORCHVISION_LINEAR", ()):
        if key == f"{src}.weight":
            return k
    return None


def torchvision_state(variables: Mapping[str, Any], backbone: str) -> dict[str, np.ndarray]:
    """The inverse key map: a backbone's own variables as a torchvision state dict.

    Args:
      variables: {'params', 'batch_stats'} of the backbone module alone (arrays).
      backbone: its registry name.

    Returns:
      torchvision key -> tensor (torch layout) for every variable the map covers, including a
      deep head that exists (TORCHVISION_HEAD; Linear-viewed convs back as (O, C*k*k)); the
      fresh layers, e.g. mask_conv, are left out. As `torchvision_init` reads it.
    """
    cls, state = REGISTRY[backbone], {}
    table = (*cls.TORCHVISION, *_head(cls))
    for (collection, *mods, leaf), value in flatten_variables(variables).items():
        owned = _owned(table, mods)
        if owned is not None:
            src, i = owned
            key = ".".join([src, *mods[i:], torch_leaf(collection, leaf)])
            tensor = to_torch_layout(np.asarray(value))
            if _linear_k(cls, key) is not None and tensor.ndim == 4:
                tensor = tensor.reshape(tensor.shape[0], -1)
            if hasattr(cls, "torchvision_export"):
                tensor = cls.torchvision_export(key, tensor)
            state[key] = tensor
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
    if state and all(k.startswith(DATA_PARALLEL_PREFIX) for k in state):
        state = {k[len(DATA_PARALLEL_PREFIX) :]: v for k, v in state.items()}
    extra = dict(extra or {})
    renamed = {k: v for k, v in extra.items() if v is not None}
    subset: dict[Path, Any] = {}
    used, ignored, doubled = set(claimed), [], {}
    for prefix, name in targets:
        cls = REGISTRY[name]
        ignored += list(cls.TORCHVISION_IGNORED)
        scope = tuple(prefix.split("."))
        mine = {path: value for path, value in flat.items() if path[1 : len(scope) + 1] == scope}
        head = _head(cls)
        # A deep head is taken only from a file that has one (ImageNet files have no ASPP).
        has_head = any(_owned(head, p[len(scope) + 1 : -1]) for p in mine)
        if not (has_head and any(_rename(k, head) is not None for k in state)):
            head = ()
        table = (*cls.TORCHVISION, *head)
        for path, value in mine.items():
            if _owned(table, path[len(scope) + 1 : -1]) is not None:
                subset[path] = value
        for key, value in state.items():
            own = _rename(key, table)
            if own is not None:
                used.add(key)
                k = _linear_k(cls, key)
                if k is not None and np.ndim(value) == 2 and value.shape[1] % (k * k) == 0:
                    value = np.reshape(value, (value.shape[0], -1, k, k))
                var = index_all.resolve(f"{prefix}.{own}", np.ndim(value))
                if hasattr(cls, "torchvision_adapt") and var is not None:
                    value = cls.torchvision_adapt(own, value, tuple(flat[var].shape))
                if f"{prefix}.{own}" in renamed:  # a second layout's copy of a filled tensor
                    doubled[key] = value
                else:
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
    renamed.update(doubled)  # their torchvision keys resolve to nothing: listed as unexpected
    return KeyIndex(subset).convert(renamed, source)
