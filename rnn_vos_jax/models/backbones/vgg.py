"""VGG16 trunk (the authors' RS2S `VGGUNet`), returning the post-pool block outputs.

Five blocks of 3x3 convs (2, 2, 3, 3, 3 convs; pad 1; ReLU), each ended by a 2x2/2 max-pool. The
pyramid is the five *post-pool* block outputs, under the keys every backbone uses:

    f2 [N,H/2,W/2,64]  f4 [N,H/4,W/4,128]  f8 [N,H/8,W/8,256]  f16 [N,H/16,W/16,512]
    f32 [N,H/32,W/32,512]          (the S2S papers' b1..b5; e.g. 128x224 ... 8x14 at 256x448)

No BatchNorm. Conv names are the authors' torch keys `encoder.{block}.{index in the block's
Sequential}` with '.' joined into '_' (encoder_0_0, encoder_0_2, encoder_1_0, ...), so
`vgg_backbone.encoder.3.4.weight` converts to vgg_backbone/encoder_3_4/kernel. torchvision
`features.{j}` (j in TORCHVISION_CONV_INDICES) maps, in order, onto these convs.

The classifier (fc6, fc7, fc8) is not part of the trunk by default: S2S's initializer and
encoder heads build their own fc6/fc7 (fc_as_conv, models/s2s_weights.py). With `fcn_head=True`
(what HS2S's encoder sets, paper B Table 3) the trunk also outputs

    top [N,H/32,W/32,4096/d] = ReLU(fc7(ReLU(fc6(f32))))    fc6 7x7 pad 3, fc7 1x1 (modules fc6, fc7)

and torchvision's classifier.0 / classifier.3 (Linear (4096, 25088) / (4096, 4096)) fill fc6 /
fc7 viewed as (4096, 512, 7, 7) / (4096, 4096, 1, 1) convs (TORCHVISION_HEAD, TORCHVISION_LINEAR).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnn_vos_jax.models.backbones.mask import first_conv
from rnn_vos_jax.models.layers import Conv, check_spatial, max_pool2x2, scaled

# Output channels of the convs of each block.
VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
FEATURE_NAMES = ("f2", "f4", "f8", "f16", "f32")
# (block, index in the block's torch Sequential) of each conv, in order.
CONV_POSITIONS = tuple(
    (b, 2 * j) for b, block in enumerate(VGG16_BLOCKS) for j in range(len(block))
)
TRUNK_CONV_NAMES = tuple(f"encoder_{b}_{i}" for b, i in CONV_POSITIONS)
TORCHVISION_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
FC_WIDTH = 4096
FC_NAMES = ("fc6", "fc7")


def fc_as_conv(x: jax.Array, names: tuple[str, str], width_divisor: int, dtype: Any) -> jax.Array:
    """VGG16 fc6 (7x7 conv, pad 3) + ReLU + fc7 (1x1 conv) + ReLU, as in an FCN.

    Call inside a compact method: the convs become submodules of the caller, named `names`.

    Args:
      x: [N,h,w,512/d] trunk output f32 (b5).
      names: submodule names of fc6 and fc7.
      width_divisor: divides 512 and 4096.
      dtype: compute dtype.

    Returns:
      [N,h,w,4096/d].
    """
    width = scaled(FC_WIDTH, width_divisor)
    x = nn.relu(Conv(width, 7, padding=3, dtype=dtype, name=names[0])(x))
    return nn.relu(Conv(width, 1, padding=0, dtype=dtype, name=names[1])(x))


class VGG16(nn.Module):
    """The VGG16 convolutional trunk (registry 'vgg16').

    Attributes:
      width_divisor: divides every channel count (1 = VGG16).
      dtype: compute dtype (params float32).
      first_kernel_init: init of conv1_1's kernel ('xavier' in the authors' 4-channel
        initializer, whose RGB slice is then overwritten by ImageNet weights; torch default
        otherwise).
      fcn_head: also output 'top' = fc6/fc7 as convs on f32 (an FCN; torch default init);
        off for S2S / S2S++, whose heads are their own.
    """

    width_divisor: int = 1
    dtype: Any = jnp.float32
    first_kernel_init: str = "torch"
    fcn_head: bool = False

    TORCHVISION = tuple(
        (f"features.{j}", f"encoder.{b}.{i}")
        for j, (b, i) in zip(TORCHVISION_CONV_INDICES, CONV_POSITIONS)
    )
    TORCHVISION_HEAD = (("classifier.0", FC_NAMES[0]), ("classifier.3", FC_NAMES[1]))
    # Linear layers whose weight is a k x k conv over the flattened (C, k, k) input.
    TORCHVISION_LINEAR = (("classifier.0", 7), ("classifier.3", 1))
    TORCHVISION_IGNORED = ("classifier.",)
    FIRST_CONV = "encoder.0.0"

    def channels(self) -> dict[str, int]:
        """Channels of f2..f32: {'f2': 64/d, 'f4': 128/d, 'f8': 256/d, 'f16': 512/d, 'f32': 512/d},
        plus 'top': 4096/d with fcn_head."""
        out = {n: block[-1] // self.width_divisor for n, block in zip(FEATURE_NAMES, VGG16_BLOCKS)}
        return {**out, "top": scaled(FC_WIDTH, self.width_divisor)} if self.fcn_head else out

    def strides(self) -> dict[str, int]:
        """Stride of each output: {'f2': 2, ..., 'f32': 32} (and 'top': 32 with fcn_head)."""
        out = {n: 2 << b for b, n in enumerate(FEATURE_NAMES)}
        return {**out, "top": 32} if self.fcn_head else out

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, mask: jax.Array | None = None
    ) -> dict[str, jax.Array]:
        """x: [N,H,W,Cin] (H, W multiples of 32) -> {'f2': [N,H/2,W/2,64/d], ..., 'f32': ...}
        (plus 'top' [N,H/32,W/32,4096/d] with fcn_head).

        `train` is accepted for the backbone interface (no BatchNorm); `mask` ([N,H,W,1]) is added
        through conv1_1 before its ReLU (mask.first_conv).
        """
        del train
        check_spatial(x.shape, "VGG16 input")
        feats = {}
        for b, block in enumerate(VGG16_BLOCKS):
            for j, channels in enumerate(block):
                conv = Conv(
                    scaled(channels, self.width_divisor),
                    3,
                    padding=1,
                    kernel_init=self.first_kernel_init if (b, j) == (0, 0) else "torch",
                    dtype=self.dtype,
                    name=f"encoder_{b}_{2 * j}",
                )
                x = nn.relu(first_conv(conv, x, mask) if (b, j) == (0, 0) else conv(x))
            x = max_pool2x2(x)
            feats[FEATURE_NAMES[b]] = x
        if self.fcn_head:
            feats["top"] = fc_as_conv(x, FC_NAMES, self.width_divisor, self.dtype)
        return feats
