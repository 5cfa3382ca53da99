"""The authors' PyTorch checkpoints (HS2S, S2S++) in and out of Flax variables.

Each family names the layout of its authors' files (Family.checkpoint, models/torch_layouts.py):
HS2S {'model': ModelMatch state dict with DataParallel's 'module.' prefix, 'optimizer': ...} (a
bare state dict is accepted too); S2S / S2S++ one state dict per module {'initializer', 'encoder',
'decoder', 'convlstm'[, 'convlstm_middle', 'convlstm_3']}. A file of another family's layout is
named as such. `export_state` writes our variables back into the family's layout (numpy arrays;
`torch.save` them after turning them into tensors).

The expected Flax tree is the configured model's (models.expected_variables), so the widths
follow the config (e.g. a tiny `width_divisor` variant). Every tensor must land on exactly one
Flax variable and every Flax variable must receive one (models/torch_keys.py has the naming rule
and the layout changes); otherwise a ConversionError lists all offending entries. torch is
needed only here and only to read .pth files (pip install -e ".[convert]"). The command is
`python -m rnn_vos_jax.convert_torch`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from rnn_vos_jax import models
from rnn_vos_jax.models.torch_keys import (
    KeyIndex,
    flatten_variables,
    to_torch_layout,
    unflatten_variables,
)
from rnn_vos_jax.runtime import storage

_BN_COUNTER = "num_batches_tracked"


def import_torch():
    """Imports torch, or explains how to get it."""
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            "Reading PyTorch .pth files needs torch: pip install -e '.[convert]' "
            "(or pip install torch); alternatively pass an orbax checkpoint directory."
        ) from e
    return torch


def _to_numpy(obj: Any, torch) -> Any:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        if t.is_floating_point() and t.dtype != torch.float32:
            t = t.float()
        return t.numpy()
    if isinstance(obj, Mapping):
        return {k: _to_numpy(v, torch) for k, v in obj.items()}
    return obj


def read_torch_file(path: str) -> dict[str, Any]:
    """Loads a .pth/.pt file on CPU (tensors only, no pickled code) as nested numpy dicts.

    Raises:
      FileNotFoundError: path missing.
      ValueError: the file is not a readable torch checkpoint holding a dict.
    """
    if not storage.isfile(path):
        raise FileNotFoundError(f"PyTorch checkpoint not found: {path}")
    torch = import_torch()
    try:
        with storage.open(path, "rb") as f:
            obj = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types (pickle, zip, unpickling policy)
        raise ValueError(f"cannot read PyTorch checkpoint {path}: {e}") from e
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} holds a {type(obj).__name__}, expected a dict of state dicts")  # noqa: TRY004 (bad file content)
    return _to_numpy(obj, torch)


def _layout(model_config: Any):
    fam = models.family(model_config["name"])
    if fam.checkpoint is None:
        raise ValueError(f"model family {fam.name!r} has no PyTorch checkpoint layout")
    return fam.checkpoint


def flatten_checkpoint(
    ckpt: Mapping[str, Any], model_config: Any, source: str
) -> dict[str, np.ndarray]:
    """Checks that a loaded file has the layout of config.model's family and flattens it.

    Args:
      ckpt: the loaded file (nested dicts of numpy arrays).
      model_config: config.model.
      source: file name for messages.

    Returns:
      {model-level torch key: array} (e.g. 'encoder.conv1.weight', 'decoder.conv_1.bias').

    Raises:
      ValueError: the file has another family's layout, or no known layout (naming the
        top-level keys found).
    """
    name = model_config["name"]
    layout = _layout(model_config)
    if not layout.detect(ckpt):
        fits = [f for f in models.families() if f.checkpoint and f.checkpoint.detect(ckpt)]
        if fits:
            kind = fits[0].checkpoint.name
            owners = tuple(f.name for f in fits if f.checkpoint.name == kind)
            raise ValueError(
                f"{source} is a {kind!r} checkpoint but config.model.name is {name!r} "
                f"(expected one of {owners}); pass the matching config"
            )
        raise ValueError(
            f"{source}: unknown checkpoint layout with top-level keys {sorted(map(str, ckpt))}; "
            f"expected {layout.describe()} for {name!r}"
        )
    return layout.flatten(ckpt, source)


def convert_state(
    ckpt: Mapping[str, Any],
    model_config: Any,
    source: str = "checkpoint",
    image_size: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Maps a loaded authors' checkpoint onto the configured model's variables.

    Args:
      ckpt: nested dict of numpy arrays as returned by `read_torch_file`.
      model_config: config.model (its `name` must suit the checkpoint layout).
      source: file name for messages.
      image_size: (H, W) the model runs at (config.data.image_size); None when its parameters
        do not depend on it (models.expected_variables).

    Returns:
      {'params': ..., 'batch_stats': ...} nested dicts of float32 numpy arrays in Flax layout
      (no 'batch_stats' for models without BatchNorm).

    Raises:
      ConversionError: missing, unexpected or mis-shaped tensors (all listed).
      ValueError: unknown layout, or a layout that does not fit config.model.name.
    """
    state = flatten_checkpoint(ckpt, model_config, source)
    name = model_config["name"]
    index = KeyIndex(models.expected_variables(models.build(model_config), image_size))
    if not any(index.resolve(k, np.ndim(v)) for k, v in state.items()):
        raise ValueError(
            f"{source}: none of its {len(state)} tensors belongs to a {name!r} model (first keys: "
            f"{sorted(state)[:3]}); an ImageNet backbone file goes to --config.model.backbone_init"
        )
    return unflatten_variables(index.convert(state, source))


def convert_checkpoint(
    path: str, model_config: Any, image_size: Sequence[int] | None = None
) -> dict[str, Any]:
    """Reads an authors' .pth file and returns the model's Flax variables (numpy).

    See `convert_state`; raises FileNotFoundError / ValueError / ConversionError with the file name.
    """
    return convert_state(read_torch_file(path), model_config, path, image_size)


def export_state(variables: Mapping[str, Any], model_config: Any) -> dict[str, Any]:
    """Our variables in the authors' file layout of config.model's family (inverse of convert).

    Args:
      variables: {'params', 'batch_stats'} of the configured model (arrays).
      model_config: config.model.

    Returns:
      The file's nested dict of numpy arrays in torch layout (OIHW kernels), with every
      BatchNorm's `num_batches_tracked` (0), as the authors' torch modules' state dicts hold.
      `convert_state` of it gives `variables` back.
    """
    layout = _layout(model_config)
    state = {}
    for path, value in flatten_variables(variables).items():
        key = layout.torch_key(path)
        state[key] = to_torch_layout(np.asarray(value, np.float32))
        if path[0] == "batch_stats" and path[-1] == "mean":
            state[key.rsplit(".", 1)[0] + "." + _BN_COUNTER] = np.zeros((), np.int64)
    return layout.unflatten(state)


def count_parameters(variables: Mapping[str, Any]) -> int:
    return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(variables.get("params", {})))


def convert_to_directory(
    checkpoint: str, model_config: Any, output: str, image_size: Sequence[int] | None = None
) -> dict[str, Any]:
    """Converts `checkpoint` and writes it with checkpoints.save_variables to `output`.

    Returns the variables. Raises FileExistsError if `output` exists (nothing is overwritten)
    and the errors of `convert_checkpoint` before anything is written.
    """
    from rnn_vos_jax.runtime import checkpoints

    output = storage.absolute(output)
    if storage.exists(output):
        raise FileExistsError(f"output {output} already exists; choose a new directory")
    variables = convert_checkpoint(checkpoint, model_config, image_size)
    checkpoints.save_variables(output, variables)
    return variables
