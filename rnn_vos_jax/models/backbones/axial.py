"""Axial-DeepLab-S (Wang et al. 2020) as an HS2S backbone (registry 'axial_s'; paper B Table 3).

The trunk of the reference's `axial50s` (github.com/csrhddlam/axial-deeplab, lib/models/
axialnet.py: AxialAttentionNet(AxialBlock, [3, 4, 6, 3], s=0.5), 8 heads) behind the HS2S stem
of resnet.py:

  conv1 7x7/2 3->32 (no bias) [+ mask_conv] -> bn -> ReLU -> added_conv 3x3 (bias) -> added_bn
    -> ReLU = f2 [N, H/2, W/2, 32], then a 2x2/2 max-pool (axialnet: 3x3/2, no parameters)
  layer1..layer4: [3, 4, 6, 3] AxialBlocks of planes 64, 128, 256, 512 (axialnet's int(128 s)..
    int(1024 s)), expansion 2 -> f4 128, f8 256, f16 512, f32 1024 channels at strides 4..32.

AxialBlock (width = planes: axialnet's base_width / 64 = 1):
  y = ReLU(bn1(conv_down(x)))              1x1 Cin -> width, no bias
  y = ReLU(width_block(hight_block(y)))    models/axial_attention.py, 8 heads; the width block
                                           average-pools by the block's stride after attending
  y = bn2(conv_up(y))                      1x1 width -> 2 * planes, no bias
  out = ReLU(y + identity)                 identity = downsample (1x1 strided conv, no bias, BN)
                                           when the stride or the width changes (each stage's
                                           first block, layer1's too: 32 -> 128 channels)
Module names are axialnet's torch keys, its `hight_block` spelling included, so a file maps by
prefix alone (stem: conv1 -> conv1, bn1 -> bn as in resnet.py).

Spans. Attention is global per axis: each attention layer spans its input's full height or
width. axialnet builds square spans (kernel_size 56, 28, 14, 7 at 224x224); at 256x448 the two
axes differ, so each axis has its own span: layer1 (64, 112); the first block of layer2..4
attends *before* its stride, at the previous stage's size (64, 112), (32, 56), (16, 28); the
other blocks at their stage's (32, 56), (16, 28), (8, 14). The relative tables
(2 * width / 8, 2 * span - 1) are therefore shaped by the input size: parameters are tied to
the training resolution (a model initialised at 256x448 runs only at 256x448; `block_spans`).

Init (axialnet's, for a from-scratch model): convs N(0, sqrt(2 / (k*k*out))) ('he_fan_out'),
qkv_transform N(0, 1 / Cin) and relative N(0, 1 / group width) (AxialAttention's), BN 1/0 except
bn2's scale 0 (axialnet's zero_init_residual: each block starts as its identity branch). The
HS2S layers (mask_conv, added_conv, added_bn) as resnet.py (zero added_conv bias).

Tiny variants: `width_divisor` d divides every channel (stem 32/d, outputs 2 * planes / d), but
an attention block's width is at least MIN_WIDTH = 16: 8 heads whose query/key halves need an
even group width >= 2. So d = 1, 2, 4 divide axialnet's widths exactly, larger divisors raise
the smallest attention widths to 16 (d = 8: 16, 16, 32, 64; the contract's d = 16: 16, 16, 16,
32); the block outputs and the pyramid keep their divided widths.
`depths` sets the stage depths (e.g. (1, 1, 1, 1)).

Weights (config.model.backbone_init; backbones.torchvision_init): an axialnet state dict of the
same stage depths (the released ImageNet file is `axial26s`, [1, 2, 4, 1]: it fits a model with
depths=(1, 2, 4, 1)), optionally DataParallel's `module.` prefix: conv1, bn1, layerK.i.{conv_down,
bn1, hight_block, width_block, conv_up, bn2, downsample.0, downsample.1}; fc.* is ignored, the
attention layers' `flatten_index` buffers are dropped (derived from the span). Attention tensors:
`qkv_transform.weight` (Conv1d, (2F, Cin, 1)) is our Dense kernel (Cin, 2F), `relative`
(2 gp, 2 L_file - 1) keeps its layout and is resized to our span by `resize_relative` (linear
along the offsets, centre and extreme offsets aligned; ImageNet's 224x224 spans are 56 / 28 /
14 / 7). axialnet's train.py saves {'net': state dict, 'epoch': ...}; backbone_init reads flat
state dicts, so save the 'net' entry on its own (.pth or .npz) first.

`remat=True` rematerialises every AxialBlock in the backward pass (same results; the backward
keeps only block inputs instead of the attention maps, which at 256x448 dominate the memory).
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rnn_vos_jax.models.axial_attention import AxialAttention
from rnn_vos_jax.models.backbones.resnet import Downsample
from rnn_vos_jax.models.backbones.stem import check_depths, extra_stem
from rnn_vos_jax.models.layers import BatchNorm, Conv, scaled

STEM = 32  # axialnet's int(64 * s)
STAGE_PLANES = (64, 128, 256, 512)  # axialnet's int(128 * s) .. int(1024 * s), s = 0.5
STAGE_NAMES = ("layer1", "layer2", "layer3", "layer4")
EXPANSION = 2
HEADS = 8
MIN_WIDTH = 2 * HEADS  # an even group width >= 2 per head


def resize_relative(table: np.ndarray, span: int) -> np.ndarray:
    """A relative-position table linearly resampled along its offset axis to another span.

    Column c of a (rows, 2L - 1) table holds offset c - (L - 1). Offset o of the new span S
    reads the file's offset o * (L - 1) / (S - 1), interpolated linearly between its two
    neighbouring columns: offset 0 maps to offset 0 and the extreme offsets +-(S - 1) to
    +-(L - 1) (torch's align_corners=True over the 2L - 1 columns), so equal spans give the
    table back. S = 1 keeps only offset 0; L = 1 repeats its one column.

    Args:
      table: (rows, 2L - 1) array.
      span: the new span S >= 1.

    Returns:
      (rows, 2S - 1) float32 array.
    """
    table = np.asarray(table, np.float64)
    length = (table.shape[1] + 1) // 2
    if span == length:
        return table.astype(np.float32)
    offsets = np.arange(-(span - 1), span, dtype=np.float64)
    scale = (length - 1) / (span - 1) if span > 1 else 0.0
    src = offsets * scale + (length - 1)  # fractional column of the file's table
    lo = np.clip(np.floor(src).astype(np.int64), 0, table.shape[1] - 1)
    hi = np.minimum(lo + 1, table.shape[1] - 1)
    frac = src - lo
    out = table[:, lo] * (1.0 - frac) + table[:, hi] * frac
    return out.astype(np.float32)


def block_spans(
    image_size: tuple[int, int], depths: Sequence[int] = (3, 4, 6, 3)
) -> tuple[tuple[tuple[int, int], ...], ...]:
    """(height span, width span) of every block's attention, per stage, for H x W frames.

    Stage k's first block attends at the previous stage's size (its stride pools afterwards),
    the others at H / 2^(k+2) x W / 2^(k+2); e.g. 256x448: layer1 (64, 112) x 3, layer2
    (64, 112), (32, 56) x 3, ..., layer4 (16, 28), (8, 14) x 2.
    """
    h, w = image_size[0] // 4, image_size[1] // 4
    out = []
    for k, depth in enumerate(depths):
        first = (h, w)
        if k:
            h, w = h // 2, w // 2
        out.append((first, *((h, w),) * (depth - 1)))
    return tuple(out)


class AxialBlock(nn.Module):
    """axialnet's AxialBlock (see the module docstring).

    Attributes:
      planes: the block's planes; the output has 2 * planes channels.
      width: attention width (axialnet: planes; >= MIN_WIDTH in tiny variants).
      strides: average-pooling stride after the width attention, also the downsample's stride.
      downsample: whether the identity branch is a 1x1 conv + BN.
      dtype: compute dtype.
    """

    planes: int
    width: int
    strides: int = 1
    downsample: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """x [N,H,W,Cin] -> [N,H/strides,W/strides,2*planes]."""
        conv = {"use_bias": False, "kernel_init": "he_fan_out", "padding": 0, "dtype": self.dtype}
        y = Conv(self.width, 1, name="conv_down", **conv)(x)
        y = nn.relu(BatchNorm(dtype=self.dtype, name="bn1")(y, train))
        attend = {"features": self.width, "heads": HEADS, "dtype": self.dtype}
        y = AxialAttention(axis="height", name="hight_block", **attend)(y, train)
        y = AxialAttention(axis="width", stride=self.strides, name="width_block", **attend)(
            y, train
        )
        y = Conv(self.planes * EXPANSION, 1, name="conv_up", **conv)(nn.relu(y))
        y = _ZeroScaleBatchNorm(dtype=self.dtype, name="bn2")(y, train)
        identity = x
        if self.downsample:
            identity = Downsample(
                self.planes * EXPANSION, self.strides, dtype=self.dtype, name="downsample"
            )(x, train)
        return nn.relu(y + identity.astype(y.dtype))


class _ZeroScaleBatchNorm(BatchNorm):
    """BatchNorm whose scale starts at 0 (axialnet's zero_init_residual on each block's bn2)."""

    def param(self, name, init_fn, *args, **kwargs):
        if name == "scale":
            init_fn = nn.initializers.zeros
        return super().param(name, init_fn, *args, **kwargs)


class AxialStage(nn.Module):
    """axialnet's `layerK`: `depth` AxialBlocks named '0', '1', ...

    Attributes:
      planes: block planes (outputs 2 * planes channels).
      width: the blocks' attention width.
      depth: number of blocks.
      strides: stride of the first block.
      remat: rematerialise each block in the backward pass.
      dtype: compute dtype.
    """

    planes: int
    width: int
    depth: int
    strides: int = 1
    remat: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """x [N,H,W,Cin] -> [N,H/strides,W/strides,2*planes]."""
        # Argument 2 (self = 0) is `train`, a Python bool selecting the BatchNorm mode.
        block = nn.remat(AxialBlock, static_argnums=(2,)) if self.remat else AxialBlock
        for i in range(self.depth):
            first = i == 0
            x = block(
                self.planes,
                self.width,
                strides=self.strides if first else 1,
                downsample=first and (self.strides != 1 or x.shape[-1] != self.planes * EXPANSION),
                dtype=self.dtype,
                name=str(i),
            )(x, train)
        return x


class AxialDeepLabS(nn.Module):
    """Axial-DeepLab-S trunk returning the feature pyramid (registry 'axial_s').

    Attributes:
      width_divisor: divides every channel count (tiny variants; attention widths >= 16).
      depths: AxialBlocks per stage (axial50s: 3, 4, 6, 3; the released axial26s: 1, 2, 4, 1).
      remat: rematerialise every AxialBlock in the backward pass (the attention maps of the
        early stages dominate the activation memory).
      dtype: compute dtype (params float32).
    """

    width_divisor: int = 1
    depths: Sequence[int] = (3, 4, 6, 3)
    remat: bool = False
    dtype: Any = jnp.float32

    # axialnet key prefix -> this module's prefix (backbones.torchvision_init).
    TORCHVISION = (("conv1", "conv1"), ("bn1", "bn"), *((n, n) for n in STAGE_NAMES))
    TORCHVISION_IGNORED = ("fc.",)  # the ImageNet classifier
    FIRST_CONV = "conv1"

    def channels(self) -> dict[str, int]:
        """{'f2': 32/d, 'f4': 128/d, 'f8': 256/d, 'f16': 512/d, 'f32': 1024/d}."""
        d = self.width_divisor
        out = {"f2": scaled(STEM, d)}
        for name, planes in zip(("f4", "f8", "f16", "f32"), STAGE_PLANES):
            out[name] = scaled(planes * EXPANSION, d)
        return out

    def strides(self) -> dict[str, int]:
        """{'f2': 2, 'f4': 4, 'f8': 8, 'f16': 16, 'f32': 32}."""
        return {"f2": 2, "f4": 4, "f8": 8, "f16": 16, "f32": 32}

    def widths(self) -> tuple[int, ...]:
        """Attention width of each stage's blocks: planes / d, at least MIN_WIDTH."""
        return tuple(max(scaled(p, self.width_divisor), MIN_WIDTH) for p in STAGE_PLANES)

    @staticmethod
    def torchvision_adapt(key: str, tensor: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """An axialnet file tensor in the torch layout torch_keys converts, for a variable of
        Flax shape `shape` (backbones.torchvision_init); others are returned as they are.

        `key` is the tensor's key in this module's own prefixes ('layer1.0.hight_block.relative').
        """
        tensor = np.asarray(tensor)
        if key.endswith("qkv_transform.weight") and tensor.ndim == 3 and tensor.shape[2] == 1:
            return tensor[:, :, 0]  # Conv1d (O, I, 1) as the Linear (O, I) of our Dense
        rows_match = tensor.ndim == len(shape) == 2 and tensor.shape[0] == shape[0]
        if key.endswith(".relative") and rows_match and shape[1] % 2:
            # torch_keys takes every 2-D tensor for a Linear weight and transposes it; the table
            # is not one, so it is handed over transposed to arrive as it is.
            return resize_relative(tensor, (shape[1] + 1) // 2).T
        return tensor

    @staticmethod
    def torchvision_export(key: str, tensor: np.ndarray) -> np.ndarray:
        """Inverse of `torchvision_adapt` at equal spans (backbones.torchvision_state): a tensor
        after torch_keys.to_torch_layout -> axialnet's layout."""
        if key.endswith("qkv_transform.weight") and tensor.ndim == 2:
            return tensor[:, :, None]
        if key.endswith(".relative") and tensor.ndim == 2:
            return np.ascontiguousarray(tensor.T)
        return tensor

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, mask: jax.Array | None = None
    ) -> dict[str, jax.Array]:
        """Feature pyramid of a normalised image batch.

        Args:
          x: float [N, H, W, 3] (ImageNet-normalised), H and W multiples of 32; the relative
            tables are made for the H x W of the first call (see the module docstring).
          train: BatchNorm mode (torch train/eval).
          mask: optional [N, H, W, 1] mask added through the first conv (mask.first_conv).

        Returns:
          {'f2': [N,H/2,W/2,32/d], 'f4': [..,128/d], 'f8': [..,256/d], 'f16': [..,512/d],
           'f32': [N,H/32,W/32,1024/d]} in `dtype`, d = width_divisor.
        """
        depths = check_depths("AxialDeepLabS", self.depths)
        channels = self.channels()  # raises for a divisor that does not divide the widths
        stem = channels["f2"]
        f2, x = extra_stem(x, mask, stem, self.dtype, train)
        feats = {"f2": f2}
        stages = zip(STAGE_NAMES, STAGE_PLANES, self.widths(), depths, ("f4", "f8", "f16", "f32"))
        for k, (name, planes, width, depth, out) in enumerate(stages):
            x = AxialStage(
                scaled(planes, self.width_divisor),
                width,
                depth,
                strides=1 if k == 0 else 2,
                remat=self.remat,
                dtype=self.dtype,
                name=name,
            )(x, train)
            feats[out] = x
        return feats
