"""The S2S / S2S++ skip decoder (authors' RS2S `DecoderSkip`).

Five stages; stage k: cat[x, skip_k(, memory_k)] -> 1x1 conv + ReLU -> bilinear x2
(align_corners=True) -> 5x5 conv (pad 2) + ReLU. Concatenation orders and widths (256x448 input):

    stage 1: cat[h_1 512, f32 512]           conv_1   1x1 ->512, up 16x28,   conv_11 5x5 ->512
    stage 2: cat[x 512, f16 512 (, h_2 512)] conv_2   1x1 ->512, up 32x56,   conv_22 5x5 ->256
    stage 3: cat[x 256, f8 256 (, h_3 256)]  conv_3_  1x1 ->256, up 64x112,  conv_33 5x5 ->128
    stage 4: cat[x 128, f4 128]              conv_4   1x1 ->128, up 128x224, conv_44 5x5 ->64
    stage 5: cat[x 64,  f2 64]               conv_5   1x1 ->64,  up 256x448, conv_55 5x5 ->64

(f2..f32 are the VGG16 block outputs b1..b5 of the papers, models/backbones/vgg.py.)

The skip-memory outputs h_2 / h_3 enter only when those memories exist (num_skip_memories 1 / 2).

Heads with distance classes K (S2S++): distance_classifier_ 3x3 64->K (raw logits for the CE),
segmentation_branch_ 3x3 64->K, mask logit = merge_ 1x1 (2K->1) of ReLU(cat[dist, seg]).
Without distance (S2S baseline): mask_head 3x3 64->1 [our choice; the S2S paper only says a
final conv + sigmoid].

Init as the authors: every conv Xavier-uniform weight, torch-default bias. Torch keys
`decoder.<name>.weight/bias` -> flax decoder/<name>/kernel, bias with the names above.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnn_vos_jax.models.layers import Conv, scaled, upsample2x

# (1x1 name, 1x1 width, 5x5 name, 5x5 width, skip feature) per stage.
STAGES = (
    ("conv_1", 512, "conv_11", 512, "f32"),
    ("conv_2", 512, "conv_22", 256, "f16"),
    ("conv_3_", 256, "conv_33", 128, "f8"),
    ("conv_4", 128, "conv_44", 64, "f4"),
    ("conv_5", 64, "conv_55", 64, "f2"),
)


class DecoderSkip(nn.Module):
    """Skip decoder with optional skip-memory inputs and distance head.

    Attributes:
      num_classes: distance classes K, or None for the single-logit S2S head.
      width_divisor: divides every channel count except K and the final 1.
      dtype: compute dtype.
    """

    num_classes: int | None = 42
    width_divisor: int = 1
    dtype: Any = jnp.float32

    def _conv(self, features: int, kernel: int, name: str) -> Conv:
        return Conv(features, kernel, kernel_init="xavier", dtype=self.dtype, name=name)

    @nn.compact
    def __call__(
        self,
        h: jax.Array,
        feats: dict[str, jax.Array],
        h_middle: jax.Array | None = None,
        h_3: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array | None]:
        """Decode one frame.

        Args:
          h: [N,H/32,W/32,512/d] bottleneck ConvLSTM output.
          feats: encoder skips {'f2'..'f32'} of the current frame.
          h_middle: [N,H/16,W/16,512/d] first skip-memory output, or None.
          h_3: [N,H/8,W/8,256/d] second skip-memory output, or None.

        Returns:
          (mask logits [N,H,W,1], distance logits [N,H,W,K] or None), in the compute dtype.
        """
        extra = {1: h_middle, 2: h_3}
        x = h.astype(self.dtype)
        for k, (name1, width1, name5, width5, skip) in enumerate(STAGES):
            parts = [x, feats[skip].astype(self.dtype)]
            if extra.get(k) is not None:
                parts.append(extra[k].astype(self.dtype))
            x = jnp.concatenate(parts, axis=-1)
            x = nn.relu(self._conv(scaled(width1, self.width_divisor), 1, name1)(x))
            x = upsample2x(x, align_corners=True)
            x = nn.relu(self._conv(scaled(width5, self.width_divisor), 5, name5)(x))
        if self.num_classes is None:
            return self._conv(1, 3, "mask_head")(x), None
        dist = self._conv(self.num_classes, 3, "distance_classifier_")(x)
        seg = self._conv(self.num_classes, 3, "segmentation_branch_")(x)
        logits = self._conv(1, 1, "merge_")(nn.relu(jnp.concatenate([dist, seg], axis=-1)))
        return logits, dist
