"""The HS2S encoders' stem (the authors' `EncoderExtra`), shared by the ResNet and Axial trunks.

conv1 7x7/2 (no bias) [+ mask conv] -> bn -> ReLU -> added_conv 3x3 (bias) -> added_bn -> ReLU
is f2; a 2x2/2 max-pool (instead of ResNet's 3x3/2 pad-1 one) feeds the first stage. The layers
are created in the calling backbone's scope under the authors' names (conv1, bn, mask_conv,
added_conv, added_bn), so parameter trees and torch keys stay theirs.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax

from rnn_vos_jax.models.backbones.mask import first_conv
from rnn_vos_jax.models.layers import BatchNorm, Conv, max_pool2x2


def check_depths(backbone: str, depths: Sequence[int]) -> tuple[int, ...]:
    """The 4 stage depths as ints; ValueError naming `backbone` unless 4 positive ones."""
    out = tuple(int(b) for b in depths)
    if len(out) != 4 or min(out) < 1:
        raise ValueError(f"{backbone} needs 4 positive stage depths, got {depths!r}")
    return out


def extra_stem(
    x: jax.Array, mask: jax.Array | None, features: int, dtype: Any, train: bool
) -> tuple[jax.Array, jax.Array]:
    """Call inside a backbone's compact method.

    Args:
      x: [N, H, W, 3] normalised frames.
      mask: [N, H, W, 1] or None (see mask.first_conv).
      features: stem channels (64 for ResNets, 32 for Axial-DeepLab-S, divided in tiny variants).
      dtype: compute dtype.
      train: BatchNorm mode.

    Returns:
      (f2 [N, H/2, W/2, features], its max-pool [N, H/4, W/4, features]).
    """
    new = {"kernel_init": "he_fan_out", "bias_init": "zeros", "dtype": dtype}
    conv1 = Conv(features, 7, strides=2, padding=3, use_bias=False, name="conv1", **new)
    x = nn.relu(BatchNorm(dtype=dtype, name="bn")(first_conv(conv1, x, mask), train))
    x = Conv(features, 3, padding=1, name="added_conv", **new)(x)
    f2 = nn.relu(BatchNorm(dtype=dtype, name="added_bn")(x, train))
    return f2, max_pool2x2(f2)
