"""Starting RAFT-HS2S's update block from a princeton-vl/RAFT checkpoint (`config.model.raft_init`).

RAFT's released files (raft-things.pth, raft-sintel.pth, ...) are the DataParallel state dict of
the whole RAFT model: module.fnet.* (feature encoder), module.cnet.* (context encoder) and
module.update_block.* (motion encoder, SepConvGRU, flow head, mask head). Only the update block
maps onto RAFT-HS2S, whose matching and context features come from the HS2S encoders instead
(their 1x1 projections, match_proj and context_proj, keep their init). Its 30 tensors go to
params/update_block by renaming leaves only (torch_keys: update_block.mask.0.weight ->
update_block/mask_0/kernel, OIHW -> HWIO); every update-block variable must get a tensor of its
shape and every update_block.* tensor must have a variable, or a ConversionError lists them all
(e.g. a model with raft_width_divisor > 1, or other corr_levels / corr_radius: mis-shaped). The
tensors of the other RAFT modules are listed in the log as not used.

The file is a .pth/.pt (needs torch) or an .npz of the same keys. The correlation lookup orders
its window channels as RAFT does, so convc1's input channels mean the same thing here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from absl import logging

from rnn_vos_jax.models.torch_keys import KeyIndex, Path
from rnn_vos_jax.models.torch_layouts import DATA_PARALLEL_PREFIX

MODULE = "update_block"


def split_state(state: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
    """(the update_block.* tensors, 'module.' stripped; the sorted keys of all other tensors)."""
    if state and all(k.startswith(DATA_PARALLEL_PREFIX) for k in state):
        state = {k[len(DATA_PARALLEL_PREFIX) :]: v for k, v in state.items()}
    used = {k: v for k, v in state.items() if k.startswith(MODULE + ".")}
    return used, sorted(k for k in state if not k.startswith(MODULE + "."))


def init_update_block(
    state: Mapping[str, np.ndarray], flat: Mapping[Path, Any], model_config: Any, source: str
) -> dict[Path, np.ndarray]:
    """The variables of params/update_block filled from a RAFT state dict.

    Args:
      state: the file's tensors (torch layout, keys with or without 'module.').
      flat: the model's flat variables {(collection, ..., leaf): array}.
      model_config: config.model (unused: the shapes in `flat` say everything).
      source: what the file is, for messages.

    Returns:
      {flax path: float32 array} for every variable under params/update_block.

    Raises:
      ConversionError: missing, unexpected or mis-shaped update-block tensors, all listed.
    """
    del model_config
    used, ignored = split_state(state)
    expected = {p: v for p, v in flat.items() if p[:2] == ("params", MODULE)}
    out = KeyIndex(expected).convert(used, source)
    modules = sorted({k.split(".")[0] for k in ignored})
    logging.info(
        "%s: %d tensors into %s; not used: %d tensors of %s",
        source,
        len(out),
        MODULE,
        len(ignored),
        ", ".join(modules) or "none",
    )
    return out
