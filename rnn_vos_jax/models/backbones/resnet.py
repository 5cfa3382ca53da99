"""ResNet-50/101 (torchvision v1.5 bottlenecks) in the layout of the authors' HS2S encoder.

Stem as the authors' `EncoderExtra`: conv1 7x7/2 (+ the optional mask conv, models/backbones/
mask.py) -> bn -> ReLU -> added_conv 3x3 (bias) -> added_bn -> ReLU = f2, then a 2x2/2 max-pool
(instead of torchvision's 3x3/2) and the four stages conv2..conv5 (= torchvision layer1..layer4)
giving f4..f32. The stride sits on the 3x3 conv of each stage's first block (v1.5); every conv
uses torch's explicit symmetric padding; BatchNorm has torch semantics (layers.BatchNorm).

Variable names, each torch key component a Flax module name (e.g. torch
`conv3.0.downsample.1.running_var` -> batch_stats/conv3/0/downsample/1/var):
  conv1, [mask_conv], bn, added_conv, added_bn, conv2..conv5/<block>/{conv1..3, bn1..3,
  downsample/0 (1x1 conv), downsample/1 (BN)}.
torchvision keys map by renaming bn1 -> bn and layerK -> conv{K+1} (TORCHVISION); mask_conv,
added_conv and added_bn are the authors' new layers and keep their fresh init
(N(0, sqrt(2 / (kh*kw*out))) weights, zero biases, BN 1/0).

Subclasses may trade strides for dilation (REPLACE_STRIDE_WITH_DILATION, torchvision's argument;
DeepLab's output stride 16 in models/backbones/deeplab.py) and add a deep head on f32 (`_top`).
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnn_vos_jax.models.backbones.stem import check_depths, extra_stem
from rnn_vos_jax.models.layers import BatchNorm, Conv

STAGE_PLANES = (64, 128, 256, 512)
STAGE_NAMES = ("conv2", "conv3", "conv4", "conv5")
EXPANSION = 4


class Downsample(nn.Module):
    """torchvision's `downsample` Sequential: 1x1 strided conv (no bias) then BN; names '0', '1'."""

    features: int
    strides: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """x: [N, H, W, Cin] -> [N, H / strides, W / strides, features]."""
        x = Conv(
            self.features,
            1,
            strides=self.strides,
            padding=0,
            use_bias=False,
            kernel_init="he_fan_out",
            dtype=self.dtype,
            name="0",
        )(x)
        return BatchNorm(dtype=self.dtype, name="1")(x, train)


class Bottleneck(nn.Module):
    """torchvision Bottleneck (v1.5: the stride is on conv2, the 3x3).

    Attributes:
      planes: width of the 1x1/3x3 convs; the output has planes * 4 channels.
      strides: stride of conv2 and of the downsample branch.
      downsample: whether the identity branch is a 1x1 conv + BN (torch `downsample`).
      dilation: dilation of conv2, padded by the same amount (torchvision's `dilation`), so a
        stride-1 dilated stage keeps the spatial size.
      dtype: compute dtype.
    """

    planes: int
    strides: int = 1
    downsample: bool = False
    dilation: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """x: [N, H, W, Cin] -> [N, H / strides, W / strides, planes * 4]."""
        conv = {"use_bias": False, "kernel_init": "he_fan_out", "dtype": self.dtype}
        y = Conv(self.planes, 1, padding=0, name="conv1", **conv)(x)
        y = nn.relu(BatchNorm(dtype=self.dtype, name="bn1")(y, train))
        y = Conv(
            self.planes,
            3,
            strides=self.strides,
            padding=self.dilation,
            dilation=self.dilation,
            name="conv2",
            **conv,
        )(y)
        y = nn.relu(BatchNorm(dtype=self.dtype, name="bn2")(y, train))
        y = Conv(self.planes * EXPANSION, 1, padding=0, name="conv3", **conv)(y)
        y = BatchNorm(dtype=self.dtype, name="bn3")(y, train)
        identity = x
        if self.downsample:
            identity = Downsample(
                self.planes * EXPANSION, self.strides, dtype=self.dtype, name="downsample"
            )(x, train)
        return nn.relu(y + identity.astype(y.dtype))


class ResStage(nn.Module):
    """torchvision `layerK`: `depth` bottlenecks named '0', '1', ...

    Attributes:
      planes: bottleneck width (output planes * 4).
      depth: number of blocks.
      strides: stride of the first block.
      dilation: dilation of the 3x3 convs of blocks 1.. (torchvision `_make_layer(dilate=True)`
        turns a stage's stride into this dilation).
      first_dilation: dilation of block 0's 3x3; None = `dilation`. torchvision gives the first
        block of a dilated stage the *previous* stage's dilation (1 for DeepLab's layer4 at OS16).
      dtype: compute dtype.
    """

    planes: int
    depth: int
    strides: int = 1
    dilation: int = 1
    first_dilation: int | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """x: [N, H, W, Cin] -> [N, H / strides, W / strides, planes * 4]."""
        first_dilation = self.dilation if self.first_dilation is None else self.first_dilation
        for i in range(self.depth):
            first = i == 0
            needs_proj = first and (self.strides != 1 or x.shape[-1] != self.planes * EXPANSION)
            x = Bottleneck(
                self.planes,
                strides=self.strides if first else 1,
                downsample=needs_proj,
                dilation=first_dilation if first else self.dilation,
                dtype=self.dtype,
                name=str(i),
            )(x, train)
        return x


class ResNet(nn.Module):
    """ResNet trunk returning the feature pyramid (registry 'resnet50'; see ResNet101).

    Attributes:
      width_divisor: divides every channel count (tiny variants); 1 = torchvision.
      depths: bottleneck blocks per stage.
      dtype: compute dtype (params float32).
    """

    width_divisor: int = 1
    depths: Sequence[int] = (3, 4, 6, 3)
    dtype: Any = jnp.float32

    # torchvision key prefix -> this module's prefix (backbones.torchvision_init).
    TORCHVISION = (
        ("conv1", "conv1"),
        ("bn1", "bn"),
        *((f"layer{k + 1}", name) for k, name in enumerate(STAGE_NAMES)),
    )
    TORCHVISION_IGNORED = ("fc.",)  # the ImageNet classifier
    FIRST_CONV = "conv1"
    # torchvision's replace_stride_with_dilation for conv3..conv5 (layer2..layer4).
    REPLACE_STRIDE_WITH_DILATION = (False, False, False)

    def channels(self) -> dict[str, int]:
        """Channels of f2..f32: {'f2': 64/d, 'f4': 256/d, 'f8': 512/d, 'f16': 1024/d, ...},
        plus 'top' for a subclass with a deep head."""
        out = {"f2": 64 // self.width_divisor}
        for name, planes in zip(("f4", "f8", "f16", "f32"), STAGE_PLANES):
            out[name] = planes * EXPANSION // self.width_divisor
        top = self.top_channels()
        return out if top is None else {**out, "top": top}

    def strides(self) -> dict[str, int]:
        """Stride of each output: {'f2': 2, 'f4': 4, 'f8': 8, 'f16': 16, 'f32': 32}; a stage
        dilated instead of strided keeps its input's stride (f32: 16 for DeepLab's OS16)."""
        out, stride = {"f2": 2, "f4": 4}, 4
        for name, dilate in zip(("f8", "f16", "f32"), self.REPLACE_STRIDE_WITH_DILATION):
            stride = stride if dilate else 2 * stride
            out[name] = stride
        return out if self.top_channels() is None else {**out, "top": out["f32"]}

    def top_channels(self) -> int | None:
        """Channels of the deep head's output 'top' (None: this trunk has none)."""
        return None

    def _top(self, f32: jax.Array, train: bool) -> jax.Array | None:
        """The deep head on f32 (called inside __call__, so it may create submodules)."""
        del f32, train
        return None

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, mask: jax.Array | None = None
    ) -> dict[str, jax.Array]:
        """Feature pyramid of a normalised image batch.

        Args:
          x: float [N, H, W, 3] (ImageNet-normalised), H and W multiples of 32.
          train: BatchNorm mode (torch train/eval).
          mask: optional [N, H, W, 1] mask added through the first conv (mask.first_conv).

        Returns:
          {'f2': [N,H/2,W/2,64/d], 'f4': [..,256/d], 'f8': [..,512/d], 'f16': [..,1024/d],
           'f32': [N,H/32,W/32,2048/d]} in `dtype`, d = width_divisor (the sizes of strides();
          plus 'top' [N, h32, w32, top_channels()] when the class has a deep head).
        """
        depths = check_depths("ResNet", self.depths)
        d = self.width_divisor
        stem = 64 // d
        f2, x = extra_stem(x, mask, stem, self.dtype, train)
        feats = {"f2": f2}
        dilate = (False, *self.REPLACE_STRIDE_WITH_DILATION)
        dilation = 1
        for k, (name, planes, depth) in enumerate(zip(STAGE_NAMES, STAGE_PLANES, depths)):
            strides, previous = (1 if k == 0 else 2), dilation
            if dilate[k]:
                dilation, strides = dilation * strides, 1
            x = ResStage(
                planes // d,
                depth,
                strides=strides,
                dilation=dilation,
                first_dilation=previous,
                dtype=self.dtype,
                name=name,
            )(x, train)
            feats[("f4", "f8", "f16", "f32")[k]] = x
        top = self._top(x, train)
        if top is not None:
            feats["top"] = top
        return feats


class ResNet101(ResNet):
    """ResNet-101: 23 blocks in the third stage (registry 'resnet101')."""

    depths: Sequence[int] = (3, 4, 23, 3)
