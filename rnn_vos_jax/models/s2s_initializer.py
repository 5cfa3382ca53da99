"""The S2S / S2S++ initializer: first frame + mask -> initial states of every ConvLSTM.

Follows the authors' RS2S `Initializer`: a VGG16 trunk whose conv1_1 takes cat[rgb, mask]
(4 channels), fc6 (7x7 conv, pad 3) + ReLU + fc7 (1x1) + ReLU on b5, then

    memory 1 (8x14):   h_1 = ReLU(1x1 4096->512), c_1 = ReLU(1x1 4096->512)
    memory 2 (16x28):  x = ReLU(reduce_conv 1x1 4096->512); u = up2(x) (bilinear,
                       align_corners=True); u = ReLU(upsample_conv 3x3 512->512);
                       u = ReLU(cat_conv 1x1 cat[u, b4] 1024->512); h_2, c_2 = ReLU(1x1 512->512)
    memory 3 (32x56):  v = up2(u); v = ReLU(upsample_conv_2 3x3 512->256);
                       v = ReLU(cat_conv_2 1x1 cat[v, b3] 512->256); h_3, c_3 = ReLU(1x1 256->256)

(b3, b4 = f8, f16 are this trunk's own features of frame 0; sizes given for 256x448 frames.) With fewer
skip-memories the unused branches are not built (the S2S baseline has only h_1, c_1).

Inits as the authors: every new conv (h_*, c_*, reduce_conv, upsample_conv*, cat_conv*) Xavier-
uniform weight and zero bias; conv1_1 Xavier for its 4-input-channel kernel (its RGB slice and bias
are then replaced by ImageNet weights when a backbone init is loaded); trunk, fc6, fc7 torch
default until ImageNet weights are loaded.

Torch keys -> flax paths (".<int>" -> "_<int>", weight -> kernel transposed):
    vgg_backbone.encoder.{b}.{i} -> vgg_backbone/encoder_{b}_{i};  mid_layer.0 / mid_layer.2 ->
    mid_layer_0 / mid_layer_2;  h_1, c_1, reduce_conv, upsample_conv, cat_conv, h_2, c_2,
    upsample_conv_2, cat_conv_2, h_3, c_3 keep their names.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnn_vos_jax.models import backbones
from rnn_vos_jax.models.layers import Conv, scaled, upsample2x
from rnn_vos_jax.models.s2s_encoder import fc_as_conv

# ConvLSTM names (= keys of the authors' checkpoint dict) in skip-memory order.
MEMORY_NAMES = ("convlstm", "convlstm_middle", "convlstm_3")

State = tuple[jax.Array, jax.Array]


class Initializer(nn.Module):
    """First frame + mask -> {'convlstm': (h, c), 'convlstm_middle': ..., 'convlstm_3': ...}.

    Attributes:
      num_skip_memories: 0, 1 or 2: how many skip-memory states to produce besides the
        bottleneck one.
      width_divisor: divides every channel count (including 4096).
      dtype: compute dtype; the returned states are float32.
    """

    num_skip_memories: int = 2
    width_divisor: int = 1
    dtype: Any = jnp.float32

    def _conv(self, features: int, kernel: int, name: str) -> Conv:
        return Conv(
            scaled(features, self.width_divisor),
            kernel,
            kernel_init="xavier",
            bias_init="zeros",
            dtype=self.dtype,
            name=name,
        )

    def _memory_state(self, x: jax.Array, features: int, suffix: str) -> State:
        h = nn.relu(self._conv(features, 1, f"h_{suffix}")(x))
        c = nn.relu(self._conv(features, 1, f"c_{suffix}")(x))
        return h.astype(jnp.float32), c.astype(jnp.float32)

    @nn.compact
    def __call__(self, image: jax.Array, mask: jax.Array) -> dict[str, State]:
        """Initial ConvLSTM states.

        Args:
          image: [N,H,W,3] ImageNet-normalised first frame.
          mask: [N,H,W,1] its mask (0/1, not normalised).

        Returns:
          dict name -> (h, c), float32: 'convlstm' [N,H/32,W/32,512/d]; with >= 1 skip-memory
          'convlstm_middle' [N,H/16,W/16,512/d]; with 2 'convlstm_3' [N,H/8,W/8,256/d].
        """
        if self.num_skip_memories not in (0, 1, 2):
            raise ValueError(f"num_skip_memories must be 0, 1 or 2, got {self.num_skip_memories}")
        x = jnp.concatenate([image.astype(self.dtype), mask.astype(self.dtype)], axis=-1)
        trunk = backbones.build(
            "vgg16",
            width_divisor=self.width_divisor,
            first_kernel_init="xavier",
            dtype=self.dtype,
            name="vgg_backbone",
        )
        feats = trunk(x)
        x = fc_as_conv(feats["f32"], ("mid_layer_0", "mid_layer_2"), self.width_divisor, self.dtype)
        states = {MEMORY_NAMES[0]: self._memory_state(x, 512, "1")}
        if self.num_skip_memories >= 1:
            x = nn.relu(self._conv(512, 1, "reduce_conv")(x))
            u = nn.relu(self._conv(512, 3, "upsample_conv")(upsample2x(x, align_corners=True)))
            u = jnp.concatenate([u, feats["f16"]], axis=-1)
            u = nn.relu(self._conv(512, 1, "cat_conv")(u))
            states[MEMORY_NAMES[1]] = self._memory_state(u, 512, "2")
        if self.num_skip_memories >= 2:
            v = nn.relu(self._conv(256, 3, "upsample_conv_2")(upsample2x(u, align_corners=True)))
            v = jnp.concatenate([v, feats["f8"]], axis=-1)
            v = nn.relu(self._conv(256, 1, "cat_conv_2")(v))
            states[MEMORY_NAMES[2]] = self._memory_state(v, 256, "3")
        return states
