"""Initialises a model's backbones from an ImageNet torchvision state dict.

`apply(variables, path, config.model)` is what `--config.model.backbone_init=FILE` runs at init.
FILE is a torchvision state dict: a .pth/.pt (needs torch) or an .npz of the same keys (numpy
only; e.g. `np.savez(f, **{k: v.numpy() for k, v in sd.items()})`).

Which tensors go where is the family's (Family.init_backbones), built on each backbone's own
torchvision key map (models/backbones/): for HS2S both encoders take the ResNet trunk and the
authors' new layers keep their init; for S2S / S2S++ both VGG16 trunks take the convs and the
initializer / encoder heads take fc6 / fc7 (models/s2s_weights.py). Every needed tensor must be
present with the right shape, and the file must not hold backbone tensors the model cannot take
(e.g. ResNet-101 blocks for a ResNet-50 model): violations raise a ConversionError listing all of
them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from rnn_vos_jax import models
from rnn_vos_jax.models.torch_keys import flatten_variables, unflatten_variables
from rnn_vos_jax.runtime import storage


def load_state_dict(path: str, key: str = "backbone_init") -> dict[str, np.ndarray]:
    """Reads a state dict from .npz (numpy) or .pth/.pt (torch) as numpy arrays.

    Args:
      path: the file.
      key: the config.model key that names it (for messages).

    Raises:
      FileNotFoundError: missing file.
      ValueError: unknown extension, or the file is not a flat dict of tensors.
    """
    if not storage.isfile(path):
        raise FileNotFoundError(f"{key} file not found: {path}")
    if path.endswith(".npz"):
        with storage.open(path, "rb") as f, np.load(f) as data:
            state = {k: np.asarray(data[k]) for k in data.files}
    elif path.endswith((".pth", ".pt")):
        from rnn_vos_jax.weights.torch_checkpoints import read_torch_file

        state = read_torch_file(path)
    else:
        raise ValueError(f"{key} {path}: expected a .pth/.pt or .npz state dict")
    bad = sorted(k for k, v in state.items() if not isinstance(v, np.ndarray))
    if bad:
        raise ValueError(f"{key} {path} is not a flat state dict; non-tensor entries {bad}")
    return state


def apply(variables: Mapping[str, Any], path: str, model_config: Any) -> dict[str, Any]:
    """Returns `variables` with the backbone(s) replaced by the ImageNet weights in `path`.

    Args:
      variables: {'params', 'batch_stats'} of the model built from `model_config` (arrays).
      path: torchvision state dict (.pth/.pt or .npz); '' returns `variables` unchanged.
      model_config: config.model (its family says which backbone file it takes).

    Returns:
      A new variables dict; replaced leaves are float32 numpy arrays, all others are the given
      leaves (the caller places them on devices).

    Raises:
      FileNotFoundError, ValueError: unreadable file, unknown model name, or a family without
        an ImageNet mapping.
      ConversionError: missing, unexpected (e.g. a deeper ResNet) or mis-shaped tensors, all
        listed.
    """
    if not path:
        return dict(variables)
    name = model_config["name"]
    fam = models.family(name)
    if fam.init_backbones is None:
        raise ValueError(f"backbone_init: no ImageNet backbone mapping for model {name!r}")
    state = load_state_dict(path)
    flat = flatten_variables(variables)
    flat.update(fam.init_backbones(state, flat, model_config, f"backbone_init {path}"))
    return unflatten_variables(flat)


def init_file_keys(model_config: Any) -> list[str]:
    """The family's weight-file keys (Family.init_files) that config.model sets."""
    fam = models.family(model_config["name"])
    return [key for key in fam.init_files if model_config.get(key)]


def apply_init_files(variables: Mapping[str, Any], model_config: Any) -> dict[str, Any]:
    """Returns `variables` with every family weight file config.model names loaded into them.

    The files are the family's own (Family.init_files, e.g. RAFT-HS2S's raft_init: a RAFT
    checkpoint into the update block); each is read as `load_state_dict` reads backbone files
    and mapped by the family's function, whose errors list every missing, unexpected or
    mis-shaped tensor. Keys left '' are skipped.
    """
    fam = models.family(model_config["name"])
    flat = flatten_variables(variables)
    for key in init_file_keys(model_config):
        path = model_config[key]
        state = load_state_dict(path, key)
        flat.update(fam.init_files[key](state, flat, model_config, f"{key} {path}"))
    return unflatten_variables(flat)
