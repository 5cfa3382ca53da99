"""HS2S decoder (`DecoderRef`): fusion with the reference frames, skip connections, two heads.

The memory outputs meet the reference frames in four fusion blocks (models/fusion/; the authors'
GC by default), named for the authors' modules: GC (h vs frame 0) and GC_p (h vs frame t-1) at
1/32, GCmm0 and GCmm_1 (h_sm vs the f16 features of frame 0 and t-1) at 1/16; each pair is merged
by a 1x1 conv (GCGC_p, mm). Layout NHWC. Submodule names mirror the authors' torch keys
(`decoder.<name>.weight` -> params/decoder/<name>/kernel), so the converter only renames leaves.
Every conv uses the authors' init N(0, sqrt(2 / (kh*kw*out))) and zero bias; every bilinear x2
upsampling uses align_corners=False (torch's default, which HS2S uses). Concatenations keep the
authors' channel order (it fixes the kernels' input axis).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnn_vos_jax.models import fusion as fusion_blocks
from rnn_vos_jax.models.layers import Conv, upsample2x

# (1x1 name, its width, 5x5 name, its width) per decoder stage, at width_divisor 1.
STAGES = (
    ("conv_1", 1024, "conv_11", 512),
    ("conv_2_", 512, "conv_22", 256),
    ("conv_3", 256, "conv_33", 128),
    ("conv_4", 128, "conv_44", 64),
    ("conv_5", 64, "conv_55", 64),
)


class DecoderRef(nn.Module):
    """Decodes one frame from the memories, the reference features and the encoder skips.

    Attributes:
      num_ch: channels of the encoder output `e` and of both memories (after width_divisor).
      num_classes: distance classes K of the distance branch.
      width_divisor: divides the decoder's own widths (1x1/5x5 convs, fusion inner widths).
      fusion: fusion block name (models/fusion/), 'gc' = the authors'.
      references: the reference frames matched, ('first', 'previous') = the authors'. With one,
        its fusion output goes straight on: no merge conv (GCGC_p, mm) and no blocks of the
        other frame.
      dtype: compute dtype (params float32).
    """

    num_ch: int = 1024
    num_classes: int = 42
    width_divisor: int = 1
    fusion: str = "gc"
    references: tuple[str, ...] = ("first", "previous")
    dtype: Any = jnp.float32

    def _conv(self, features: int, k: int, name: str, x: jax.Array) -> jax.Array:
        return Conv(
            features, k, kernel_init="he_fan_out", bias_init="zeros", dtype=self.dtype, name=name
        )(x)

    def _fuse(self, name: str, query: jax.Array, reference: jax.Array, train: bool) -> jax.Array:
        block = fusion_blocks.build(
            self.fusion, self.num_ch // 2, self.width_divisor, dtype=self.dtype, name=name
        )
        return block(query, reference, train=train)

    def _match(self, names, query, first, previous, merge: str, train: bool) -> jax.Array:
        """Fuses `query` with each used reference (blocks `names`), merged by a 1x1 if two."""
        refs = {"first": first, "previous": previous}
        fused = [
            self._fuse(name, query, refs[which], train)
            for name, which in zip(names, ("first", "previous"))
            if which in self.references
        ]
        if len(fused) == 1:
            return fused[0]
        return nn.relu(
            self._conv(
                self.num_ch // 2,
                1,
                merge,
                jnp.concatenate([f.astype(self.dtype) for f in fused], axis=-1),
            )
        )

    @nn.compact
    def __call__(
        self,
        ref: jax.Array | None,
        h: jax.Array,
        skips: dict[str, jax.Array],
        prev_ref: jax.Array | None,
        h_sm: jax.Array,
        ref_mid: jax.Array | None,
        prev_ref_mid: jax.Array | None,
        train: bool = False,
    ) -> tuple[jax.Array, jax.Array]:
        """One decoding step (torch `DecoderRef.forward`).

        Args:
          ref: `e` of the reference encoder on (x0, y0), [N, h32, w32, num_ch] (None when frame
            0 is not a reference; likewise ref_mid, and prev_ref/prev_ref_mid for frame t-1).
          h: bottleneck memory output, [N, h32, w32, num_ch].
          skips: current-frame encoder features {'f32','f16','f8','f4','f2'}.
          prev_ref: `e` of the reference encoder on (x_{t-1}, m_{t-1}), [N, h32, w32, num_ch].
          h_sm: skip-memory output, [N, h16, w16, num_ch].
          ref_mid: f16 of the reference encoder on (x0, y0), [N, h16, w16, C16].
          prev_ref_mid: f16 of the reference encoder on (x_{t-1}, m_{t-1}), [N, h16, w16, C16].
          train: BatchNorm mode of fusion blocks that have BatchNorm.

        Returns:
          (logits f32[N, H, W, 1], distance logits f32[N, H, W, num_classes]), H = 32 * h32
          (16 * h32 for a backbone of output stride 16, whose f32 is at the f16 size).
        """
        cat = lambda *xs: jnp.concatenate([v.astype(self.dtype) for v in xs], axis=-1)
        relu = nn.relu
        d = self.width_divisor

        # Bottleneck: match h against frame 0 (GC) and frame t-1 (GC_p), merge by GCGC_p.
        x = self._match(("GC", "GC_p"), h, ref, prev_ref, "GCGC_p", train)

        (n1, w1, n11, w11), *rest = STAGES
        x = relu(self._conv(w1 // d, 1, n1, cat(x, skips["f32"])))
        if x.shape[1:3] != skips["f16"].shape[1:3]:  # output-stride-16 backbones: no upsampling
            x = upsample2x(x, align_corners=False)
        x = relu(self._conv(w11 // d, 5, n11, x))

        # Skip memory: match h_sm against the f16 features of frame 0 and frame t-1.
        w = self._match(("GCmm0", "GCmm_1"), h_sm, ref_mid, prev_ref_mid, "mm", train)

        extra = {"f16": (w,)}
        for (n_a, w_a, n_b, w_b), skip in zip(rest, ("f16", "f8", "f4", "f2")):
            x = relu(self._conv(w_a // d, 1, n_a, cat(x, skips[skip], *extra.get(skip, ()))))
            x = relu(self._conv(w_b // d, 5, n_b, upsample2x(x, align_corners=False)))

        dist = self._conv(self.num_classes, 3, "distance_classifier_", x)
        seg = self._conv(self.num_classes, 3, "segmentation_branch_", x)
        logits = self._conv(1, 1, "merge_", relu(cat(dist, seg)))
        return logits.astype(jnp.float32), dist.astype(jnp.float32)
