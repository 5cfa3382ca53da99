"""The S2S / S2S++ per-frame encoder (the authors' RS2S `EncoderVGGUnet`): VGG16 + an FC head.

    feats = VGG16 trunk (models/backbones/vgg.py, module `vgg_backbone`)   f2..f32 (b1..b5)
    e = ReLU(head(feats['f32']))                                          [N,H/32,W/32,512]

Heads (`head`):
  'authors_1x1' (default; the released code): out_0, a 1x1 conv 512 -> 200704 (= 4096*49)
      whose torch weight is ImageNet fc6 (4096, 25088) *row-major reshaped* to
      (200704, 512, 1, 1) (its bias stays at torch's default init), ReLU, then out_2, 1x1
      200704 -> 512 (Xavier weight, default bias). It scrambles fc6, but the released
      checkpoints depend on it. Torch keys `out.0` / `out.2` -> out_0 / out_2.
  'fcn_7x7' (our alternative, no torch counterpart): fc6 (7x7 conv, pad 3) + ReLU + fc7 (1x1) +
      ReLU, then reduce_conv 1x1 4096 -> 512: the proper FCN reuse of the ImageNet classifier
      (torchvision `classifier.0` / `classifier.3` reshaped to (4096,512,7,7) / (4096,4096,1,1)).
Widths are divided by `width_divisor` (tiny variants), including 4096 and 200704.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnn_vos_jax.models import backbones
from rnn_vos_jax.models.backbones.vgg import FC_WIDTH, fc_as_conv  # noqa: F401 (re-exported)
from rnn_vos_jax.models.layers import Conv, scaled

ENCODER_HEADS = ("authors_1x1", "fcn_7x7")
# The authors' 1x1 head width: fc6's 25088 = 512*49 inputs folded into channels.
AUTHORS_HEAD_WIDTH = 4096 * 49


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
          (e [N,H/32,W/32,512/d], {'f2'..'f32'} skip features).
        """
        if self.head not in ENCODER_HEADS:
            raise ValueError(f"Unknown encoder_head {self.head!r}; expected one of {ENCODER_HEADS}")
        d = self.width_divisor
        trunk = backbones.build("vgg16", width_divisor=d, dtype=self.dtype, name="vgg_backbone")
        feats = trunk(x)
        if self.head == "authors_1x1":
            y = Conv(scaled(AUTHORS_HEAD_WIDTH, d), 1, padding=0, dtype=self.dtype, name="out_0")
            y = nn.relu(y(feats["f32"]))
            out_name = "out_2"
        else:
            y = fc_as_conv(feats["f32"], ("fc6", "fc7"), d, self.dtype)
            out_name = "reduce_conv"
        e = Conv(
            scaled(512, d), 1, padding=0, kernel_init="xavier", dtype=self.dtype, name=out_name
        )(y)
        return nn.relu(e), feats
