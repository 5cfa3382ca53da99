"""VGG16 backbones as S2S / S2S++ use them (the authors' RS2S `VGGUNet` and `EncoderVGGUnet`).

Trunk: five blocks of 3x3 convs (2, 2, 3, 3, 3 convs; pad 1; ReLU), each ended by a 2x2/2 max
pool. The skip features are the *post-pool* block outputs, returned by name:

    b1 [N,H/2,W/2,64]  b2 [N,H/4,W/4,128]  b3 [N,H/8,W/8,256]  b4 [N,H/16,W/16,512]
    b5 [N,H/32,W/32,512]        (e.g. 128x224 ... 8x14 for 256x448 frames)

No BatchNorm anywhere. Channel counts are divided by `width_divisor` for tiny test variants.

Parameter naming (torch state-dict key -> flax path; rule: every ".<int>" becomes "_<int>",
"weight" -> "kernel" transposed (O,I,kh,kw) -> (kh,kw,I,O), "bias" -> "bias"):

    vgg_backbone.encoder.{b}.{i}.weight -> vgg_backbone/encoder_{b}_{i}/kernel
        b = block 0..4, i = 0, 2 (, 4) (positions in the block's nn.Sequential)
    torchvision vgg16 `features.{j}` with j in TORCHVISION_CONV_INDICES maps, in order, to
        TRUNK_CONV_NAMES (used to initialise from ImageNet weights).
    EncoderVGGUnet `out.0` / `out.2`     -> out_0 / out_2   (encoder_head='authors_1x1')
    Initializer `mid_layer.0` / `.2`     -> mid_layer_0 / mid_layer_2 (fc6 7x7 / fc7 1x1)
    encoder_head='fcn_7x7' (our alternative, no torch counterpart): fc6, fc7, reduce_conv;
        fc6/fc7 take torchvision `classifier.0` / `classifier.3` reshaped to (4096,512,7,7) /
        (4096,4096,1,1) -- the proper FCN conversion.

The authors' encoder head `out_0` is a 1x1 conv 512 -> 200704 (= 4096*49) whose torch weight is
ImageNet fc6 (4096, 25088) *row-major reshaped* to (200704, 512, 1, 1) (its bias stays at torch's
default init), then ReLU, 1x1 200704 -> 512 (Xavier weight, default bias), ReLU. It scrambles
fc6 but the released checkpoints depend on it, so it is the default.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnn_vos_jax.models.layers import Conv, max_pool2x2

# Output channels of the convs of each block.
VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
FEATURE_NAMES = ("b1", "b2", "b3", "b4", "b5")
TRUNK_CONV_NAMES = tuple(
    f"encoder_{b}_{2 * j}" for b, block in enumerate(VGG16_BLOCKS) for j in range(len(block))
)
TORCHVISION_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
ENCODER_HEADS = ("authors_1x1", "fcn_7x7")
FC_WIDTH = 4096
# The authors' 1x1 head width: fc6's 25088 = 512*49 inputs folded into channels.
AUTHORS_HEAD_WIDTH = 4096 * 49


def scaled(channels: int, width_divisor: int) -> int:
    """channels // width_divisor, refusing divisors that do not divide it exactly."""
    if width_divisor < 1 or channels % width_divisor:
        raise ValueError(
            f"width_divisor={width_divisor} must be a positive divisor of every channel count "
            f"(here {channels}); use a power of two <= 64"
        )
    return channels // width_divisor


def check_spatial(shape: tuple[int, ...], what: str) -> None:
    """Raise if an [N,H,W,C] input's H or W is not a multiple of 32 (five 2x2 pools)."""
    if len(shape) != 4 or shape[1] % 32 or shape[2] % 32:
        raise ValueError(f"{what} must be [N,H,W,C] with H, W multiples of 32, got shape {shape}")


def fc_as_conv(x: jax.Array, names: tuple[str, str], width_divisor: int, dtype: Any) -> jax.Array:
    """VGG16 fc6 (7x7 conv, pad 3) + ReLU + fc7 (1x1 conv) + ReLU, as in an FCN.

    Call inside a compact method: the convs become submodules of the caller, named `names`.

    Args:
      x: [N,h,w,512/d] trunk output b5.
      names: submodule names of fc6 and fc7.
      width_divisor: divides 512 and 4096.
      dtype: compute dtype.

    Returns:
      [N,h,w,4096/d].
    """
    width = scaled(FC_WIDTH, width_divisor)
    x = nn.relu(Conv(width, 7, padding=3, dtype=dtype, name=names[0])(x))
    return nn.relu(Conv(width, 1, padding=0, dtype=dtype, name=names[1])(x))


class VGG16Trunk(nn.Module):
    """The VGG16 convolutional trunk (authors' `VGGUNet`), returning b1..b5 by name.

    Attributes:
      width_divisor: divides every channel count (1 = VGG16).
      first_kernel_init: init of conv1_1's kernel ('xavier' in the authors' 4-channel initializer,
        whose RGB slice is then overwritten by ImageNet weights; torch default otherwise).
      dtype: compute dtype (params float32).
    """

    width_divisor: int = 1
    first_kernel_init: str = "torch"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        """x: [N,H,W,Cin] (H, W multiples of 32) -> {'b1': [N,H/2,W/2,64/d], ..., 'b5': ...}."""
        check_spatial(x.shape, "VGG16Trunk input")
        feats = {}
        for b, block in enumerate(VGG16_BLOCKS):
            for j, channels in enumerate(block):
                init = self.first_kernel_init if (b, j) == (0, 0) else "torch"
                conv = Conv(
                    scaled(channels, self.width_divisor),
                    3,
                    padding=1,
                    kernel_init=init,
                    dtype=self.dtype,
                    name=f"encoder_{b}_{2 * j}",
                )
                x = nn.relu(conv(x))
            x = max_pool2x2(x)
            feats[FEATURE_NAMES[b]] = x
        return feats


class VGGEncoder(nn.Module):
    """Per-frame encoder of S2S / S2S++ (authors' `EncoderVGGUnet`): trunk + FC-as-conv head.

    Attributes:
      head: 'authors_1x1' (1x1 512->200704->512, the released code) or 'fcn_7x7' (fc6 7x7 ->
        fc7 1x1 -> 1x1 4096->512, a proper FCN reuse of the ImageNet classifier).
      width_divisor: divides every channel count, including 4096 and 200704.
      dtype: compute dtype.
    """

    head: str = "authors_1x1"
    width_divisor: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Encode normalised frames.

        Args:
          x: [N,H,W,3] ImageNet-normalised RGB, H, W multiples of 32.

        Returns:
          (e [N,H/32,W/32,512/d], {'b1'..'b5'} skip features).
        """
        if self.head not in ENCODER_HEADS:
            raise ValueError(f"Unknown encoder_head {self.head!r}; expected one of {ENCODER_HEADS}")
        d = self.width_divisor
        feats = VGG16Trunk(width_divisor=d, dtype=self.dtype, name="vgg_backbone")(x)
        if self.head == "authors_1x1":
            y = Conv(scaled(AUTHORS_HEAD_WIDTH, d), 1, padding=0, dtype=self.dtype, name="out_0")
            y = nn.relu(y(feats["b5"]))
            out_name = "out_2"
        else:
            y = fc_as_conv(feats["b5"], ("fc6", "fc7"), d, self.dtype)
            out_name = "reduce_conv"
        e = Conv(
            scaled(512, d), 1, padding=0, kernel_init="xavier", dtype=self.dtype, name=out_name
        )(y)
        return nn.relu(e), feats
