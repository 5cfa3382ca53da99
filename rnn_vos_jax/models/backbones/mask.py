"""Mask conditioning of a backbone's first convolution, usable by any backbone.

HS2S's encoders see the previous mask through an extra convolution whose output is added to the
first conv's output *before* its normalisation and nonlinearity (torch: bn(conv1(x) +
mask_conv(mask))). The mask conv copies the first conv's geometry (kernel, stride, padding,
dilation, output channels), has no bias and the authors' init N(0, sqrt(2 / (kh*kw*out))).
It is created in the caller's scope as `mask_conv`, beside the first conv, so the parameter tree
stays the authors' (encoder/mask_conv/kernel).
"""

import jax

from rnn_vos_jax.models.layers import Conv

MASK_CONV = "mask_conv"


def first_conv(conv: Conv, x: jax.Array, mask: jax.Array | None) -> jax.Array:
    """conv(x), plus the mask conv of the same geometry applied to `mask` when one is given.

    Call inside the backbone's compact method with an unbound `conv` (its name is the backbone's
    first conv name).

    Args:
      conv: the first convolution (unbound layers.Conv).
      x: [N, H, W, Cin] normalised frames.
      mask: [N, H, W, 1] mask in [0, 1] (not normalised), or None for an unconditioned backbone.

    Returns:
      [N, H', W', conv.features], the sum before any normalisation.
    """
    y = conv(x)
    if mask is None:
        return y
    mask_conv = Conv(
        conv.features,
        conv.kernel_size,
        strides=conv.strides,
        padding=conv.padding,
        dilation=conv.dilation,
        use_bias=False,
        kernel_init="he_fan_out",
        dtype=conv.dtype,
        name=MASK_CONV,
    )
    return y + mask_conv(mask.astype(conv.dtype))
