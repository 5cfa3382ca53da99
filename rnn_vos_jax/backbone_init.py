"""Initialises the backbones from torchvision ImageNet weights, the way the authors' code does.

`apply(variables, path, config.model)` is what `--config.model.backbone_init=FILE` runs at init.
FILE is a torchvision state dict: a .pth/.pt (needs torch) or an .npz of the same keys (numpy
only; e.g. `np.savez(f, **{k: v.numpy() for k, v in sd.items()})`).

HS2S (ResNet-50/101, torchvision keys conv1, bn1, layer1..4; fc ignored): both encoders
(encoder_ref and encoder) receive conv1 -> conv1, bn1 -> bn (incl. running statistics) and
layerK -> conv{K+1}. mask_conv, added_conv/added_bn and reduce_channel_/reduce_bn keep their
fresh initialisation, as in the authors' EncoderExtra.

S2S / S2S++ (VGG16, torchvision keys features.{0,2,...,28}, classifier.{0,3}; classifier.6
ignored):
  * both VGG trunks (initializer and encoder) take the 13 convs in order;
  * the initializer's 4-channel conv1_1 takes the RGB slice of features.0 (and its bias); the 4th
    (mask) input slice keeps its own Xavier initialisation;
  * initializer fc6 (mid_layer_0, 7x7) = classifier.0 viewed as (4096, 512, 7, 7), fc7
    (mid_layer_2, 1x1) = classifier.3 viewed as (4096, 4096, 1, 1), biases copied;
  * encoder head 'authors_1x1': out_0's weight = classifier.0's (4096, 25088) matrix row-major
    reshaped to (200704, 512, 1, 1) (the authors' scrambled reuse); its bias and out_2 keep their
    initialisation. Head 'fcn_7x7': fc6/fc7 as for the initializer.
Every needed tensor must be present with the right shape, and the file must not hold backbone
tensors the model cannot take (e.g. ResNet-101 blocks for a ResNet-50 model): violations raise a
ConversionError listing all of them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from rnn_vos_jax.torch_keys import (
    KeyIndex,
    Path,
    flatten_variables,
    to_torch_layout,
    unflatten_variables,
)

RESNET_ENCODERS = ("encoder_ref", "encoder")
RESNET_RENAMES = {
    "conv1": "conv1",
    "bn1": "bn",
    "layer1": "conv2",
    "layer2": "conv3",
    "layer3": "conv4",
    "layer4": "conv5",
}
VGG_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
VGG_BLOCK_SIZES = (2, 2, 3, 3, 3)
VGG_TRUNKS = ("initializer", "encoder")
# torchvision classifier tensors no model here uses (the ImageNet class layer).
IGNORED_PREFIXES = {"hs2s": ("fc.",), "vgg": ("classifier.6.",)}


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """Reads a torchvision state dict from .npz (numpy) or .pth/.pt (torch) as numpy arrays.

    Raises:
      FileNotFoundError: missing file.
      ValueError: unknown extension, or the file is not a flat dict of tensors.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"backbone_init file not found: {path}")
    if path.endswith(".npz"):
        with np.load(path) as data:
            state = {k: np.asarray(data[k]) for k in data.files}
    elif path.endswith((".pth", ".pt")):
        from rnn_vos_jax.convert_torch import read_torch_file

        state = read_torch_file(path)
    else:
        raise ValueError(
            f"backbone_init {path}: expected a .pth/.pt or .npz torchvision state dict"
        )
    bad = sorted(k for k, v in state.items() if not isinstance(v, np.ndarray))
    if bad:
        raise ValueError(f"backbone_init {path} is not a flat state dict; non-tensor entries {bad}")
    return state


def _vgg_positions() -> list[tuple[int, int]]:
    """(block, index in the block's Sequential) of each VGG16 conv, in torchvision order."""
    return [(b, 2 * j) for b, n in enumerate(VGG_BLOCK_SIZES) for j in range(n)]


def _resnet_targets(state, flat) -> tuple[dict[str, np.ndarray], dict[Path, Any]]:
    renamed = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        for enc in RESNET_ENCODERS:
            new = RESNET_RENAMES.get(head)
            renamed[f"{enc}.{new}.{rest}" if new else key] = value
    wanted = set(RESNET_RENAMES.values())
    subset = {p: v for p, v in flat.items() if p[1] in RESNET_ENCODERS and p[2] in wanted}
    return renamed, subset


def _torch_kernel(flat, path: Path) -> np.ndarray | None:
    return None if path not in flat else to_torch_layout(np.asarray(flat[path]))


def _vgg_targets(state, flat, index_all) -> tuple[dict[str, np.ndarray], dict[Path, Any]]:
    renamed: dict[str, np.ndarray] = {}
    used = set()
    conv_dest = dict(zip(VGG_CONV_INDICES, _vgg_positions()))
    trunks = [t for t in VGG_TRUNKS if any(p[1] == t for p in flat)]
    for key, value in state.items():
        parts = key.split(".")
        if (
            len(parts) == 3
            and parts[0] == "features"
            and parts[1].isdigit()
            and int(parts[1]) in conv_dest
        ):
            b, i = conv_dest[int(parts[1])]
            for trunk in trunks:
                renamed[f"{trunk}.vgg_backbone.encoder.{b}.{i}.{parts[2]}"] = value
            used.add(key)
    # conv1_1 of the initializer sees cat[rgb, mask]: only its RGB input slice is ImageNet's.
    first = "initializer.vgg_backbone.encoder.0.0.weight"
    own = _torch_kernel(flat, index_all.resolve(first, 4) or ())
    if first in renamed and own is not None:
        rgb = renamed[first]
        if (
            rgb.ndim == 4
            and rgb.shape[1] == 3
            and own.shape[1] > 3
            and rgb.shape[0] == own.shape[0]
        ):
            renamed[first] = np.concatenate([rgb, own[:, 3:]], axis=1)
    fc6_w, fc6_b = state.get("classifier.0.weight"), state.get("classifier.0.bias")
    fc7_w, fc7_b = state.get("classifier.3.weight"), state.get("classifier.3.bias")
    used |= {"classifier.0.weight", "classifier.0.bias", "classifier.3.weight", "classifier.3.bias"}

    def as_conv(w, k):
        # A Linear over the flattened (C, 7, 7) pool output is a kxk conv over C channels.
        if w is None or w.ndim != 2 or w.shape[1] % (k * k):
            return w
        return w.reshape(w.shape[0], w.shape[1] // (k * k), k, k)

    fc_targets = []
    if "initializer" in trunks:
        fc_targets.append(("initializer.mid_layer.0", "initializer.mid_layer.2"))
    if index_all.resolve("encoder.fc6.weight", 4) is not None:
        fc_targets.append(("encoder.fc6", "encoder.fc7"))
    for fc6, fc7 in fc_targets:
        for name, value in (
            (f"{fc6}.weight", as_conv(fc6_w, 7)),
            (f"{fc6}.bias", fc6_b),
            (f"{fc7}.weight", as_conv(fc7_w, 1)),
            (f"{fc7}.bias", fc7_b),
        ):
            if value is not None:
                renamed[name] = value
    head = index_all.resolve("encoder.out.0.weight", 4)
    if head is not None and fc6_w is not None:
        w = fc6_w
        if w.ndim == 2 and w.shape[1] % 49 == 0:
            # The authors' view of fc6 as (4096*49, 512, 1, 1): row-major, hence scrambled.
            w = w.reshape(-1, w.shape[1] // 49, 1, 1)
        renamed["encoder.out.0.weight"] = w
    for key, value in state.items():
        if key not in used and not key.startswith(IGNORED_PREFIXES["vgg"]):
            renamed[key] = value  # not a VGG16 tensor the models take: reported as unexpected
    subset = {}
    for k in _vgg_dest_keys(trunks, fc_targets, head is not None):
        path = index_all.resolve(k, 4 if k.endswith("weight") else 1)
        if path is None:
            raise ValueError(f"model has no variable for backbone tensor {k}; check config.model")
        subset[path] = flat[path]
    return renamed, subset


def _vgg_dest_keys(trunks, fc_targets, authors_head: bool) -> list[str]:
    keys = []
    for trunk in trunks:
        for b, i in _vgg_positions():
            keys += [
                f"{trunk}.vgg_backbone.encoder.{b}.{i}.weight",
                f"{trunk}.vgg_backbone.encoder.{b}.{i}.bias",
            ]
    for fc6, fc7 in fc_targets:
        keys += [f"{fc6}.weight", f"{fc6}.bias", f"{fc7}.weight", f"{fc7}.bias"]
    if authors_head:
        keys.append("encoder.out.0.weight")
    return keys


def apply(variables: Mapping[str, Any], path: str, model_config: Any) -> dict[str, Any]:
    """Returns `variables` with the backbone(s) replaced by the ImageNet weights in `path`.

    Args:
      variables: {'params', 'batch_stats'} of the model built from `model_config` (arrays).
      path: torchvision state dict (.pth/.pt or .npz); '' returns `variables` unchanged.
      model_config: config.model ('hs2s' takes ResNet-50/101 weights, 's2s'/'s2s_pp' VGG16).

    Returns:
      A new variables dict; replaced leaves are float32 numpy arrays, all others are the given
      leaves (the caller places them on devices).

    Raises:
      FileNotFoundError, ValueError: unreadable file or unknown model name.
      ConversionError: missing, unexpected (e.g. a deeper ResNet) or mis-shaped tensors, all
        listed.
    """
    if not path:
        return dict(variables)
    name = model_config["name"]
    state = load_state_dict(path)
    flat = flatten_variables(variables)
    source = f"backbone_init {path}"
    if name == "hs2s":
        state = {k: v for k, v in state.items() if not k.startswith(IGNORED_PREFIXES["hs2s"])}
        renamed, subset = _resnet_targets(state, flat)
    elif name in ("s2s", "s2s_pp"):
        renamed, subset = _vgg_targets(state, flat, KeyIndex(flat))
    else:
        raise ValueError(f"backbone_init: no ImageNet backbone mapping for model {name!r}")
    converted = KeyIndex(subset).convert(renamed, source)
    flat.update(converted)
    return unflatten_variables(flat)
