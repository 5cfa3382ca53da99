"""ResNet-50/101 (torchvision v1.5 layout) and the HS2S encoder `EncoderExtra`.

Layout NHWC; parameters float32, `dtype` is the compute dtype; BatchNorm has torch semantics
(layers.BatchNorm: eps 1e-5, momentum 0.1, unbiased running variance).

Torch state-dict key -> Flax variable path (split the torch key on '.', then rename the leaf):
  `*.weight` of a conv -> `kernel` (O,I,kh,kw -> kh,kw,I,O); conv `*.bias` -> `bias`;
  BN `weight` -> params `scale`, `bias` -> params `bias`, `running_mean` / `running_var` ->
  batch_stats `mean` / `var`; `num_batches_tracked` is dropped. Every other key component is a
  Flax module name unchanged, e.g.

  torchvision `ResNet` (this module's `ResNet`; `fc.*` is not part of the backbone):
    conv1.weight                      -> params/conv1/kernel
    bn1.running_var                   -> batch_stats/bn1/var
    layer3.5.conv2.weight             -> params/layer3/5/conv2/kernel
    layer1.0.downsample.0.weight      -> params/layer1/0/downsample/0/kernel
    layer1.0.downsample.1.bias        -> params/layer1/0/downsample/1/bias
  HS2S `EncoderExtra` (this module's `EncoderExtra`):
    conv1, bn, mask_conv, added_conv (+bias), added_bn, reduce_channel_ (+bias), reduce_bn,
    conv2 .. conv5 (= torchvision layer1 .. layer4, same inner keys), e.g.
    conv2.0.downsample.0.weight       -> params/conv2/0/downsample/0/kernel
  so a torchvision checkpoint maps into an EncoderExtra by renaming bn1 -> bn and
  layerK -> conv{K+1}.

Stride sits on the 3x3 conv of the first block of a stage (v1.5). All convs use torch's explicit
symmetric padding.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnn_vos_jax.models.layers import BatchNorm, Conv, max_pool2x2

# Bottleneck blocks per stage.
DEPTHS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
STAGE_PLANES = (64, 128, 256, 512)
EXPANSION = 4
# Feature names, finest first, with their strides.
FEATURE_STRIDES = {"f2": 2, "f4": 4, "f8": 8, "f16": 16, "f32": 32}


def stage_depths(backbone: str, blocks: Sequence[int] | None) -> tuple[int, ...]:
    """Blocks per stage for `backbone` ('resnet50' | 'resnet101'), or the `blocks` override."""
    if backbone not in DEPTHS:
        raise ValueError(f"Unknown backbone {backbone!r}; expected one of {sorted(DEPTHS)}")
    if blocks is None:
        return DEPTHS[backbone]
    blocks = tuple(int(b) for b in blocks)
    if len(blocks) != 4 or min(blocks) < 1:
        raise ValueError(f"blocks must be 4 positive stage depths, got {blocks!r}")
    return blocks


def feature_channels(width_divisor: int = 1) -> dict[str, int]:
    """Channels of f2..f32 for a ResNet-50/101 whose widths are divided by `width_divisor`."""
    stem = 64 // width_divisor
    out = {"f2": stem}
    for name, planes in zip(("f4", "f8", "f16", "f32"), STAGE_PLANES):
        out[name] = planes * EXPANSION // width_divisor
    return out


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
      dtype: compute dtype.
    """

    planes: int
    strides: int = 1
    downsample: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """x: [N, H, W, Cin] -> [N, H / strides, W / strides, planes * 4]."""
        conv = {"use_bias": False, "kernel_init": "he_fan_out", "dtype": self.dtype}
        y = Conv(self.planes, 1, padding=0, name="conv1", **conv)(x)
        y = nn.relu(BatchNorm(dtype=self.dtype, name="bn1")(y, train))
        y = Conv(self.planes, 3, strides=self.strides, padding=1, name="conv2", **conv)(y)
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
      dtype: compute dtype.
    """

    planes: int
    depth: int
    strides: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """x: [N, H, W, Cin] -> [N, H / strides, W / strides, planes * 4]."""
        for i in range(self.depth):
            first = i == 0
            needs_proj = first and (self.strides != 1 or x.shape[-1] != self.planes * EXPANSION)
            x = Bottleneck(
                self.planes,
                strides=self.strides if first else 1,
                downsample=needs_proj,
                dtype=self.dtype,
                name=str(i),
            )(x, train)
        return x


def _stages(module: nn.Module, x: jax.Array, train: bool, names: Sequence[str]) -> dict:
    """Runs the four residual stages under `names`; returns {'f4','f8','f16','f32'}."""
    depths = stage_depths(module.backbone, module.blocks)
    feats = {}
    for k, (name, planes, depth) in enumerate(zip(names, STAGE_PLANES, depths)):
        x = ResStage(
            planes // module.width_divisor,
            depth,
            strides=1 if k == 0 else 2,
            dtype=module.dtype,
            name=name,
        )(x, train)
        feats[("f4", "f8", "f16", "f32")[k]] = x
    return feats


class ResNet(nn.Module):
    """Plain torchvision ResNet-50/101 trunk (no fc), returning the feature pyramid.

    Attributes:
      backbone: 'resnet50' | 'resnet101'.
      blocks: optional override of the four stage depths (tiny test variants).
      width_divisor: divides every channel count (tiny test variants); 1 = torchvision.
      dtype: compute dtype (params float32).
    """

    backbone: str = "resnet50"
    blocks: Sequence[int] | None = None
    width_divisor: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        """Feature pyramid of a normalised image batch.

        Args:
          x: float [N, H, W, 3] (ImageNet-normalised), H and W multiples of 32.
          train: BatchNorm mode (torch train/eval).

        Returns:
          {'f2': [N,H/2,W/2,64/d] (stem after ReLU, before the max-pool), 'f4': [..,256/d],
           'f8': [..,512/d], 'f16': [..,1024/d], 'f32': [N,H/32,W/32,2048/d]} in `dtype`,
          d = width_divisor.
        """
        stem = 64 // self.width_divisor
        x = Conv(
            stem,
            7,
            strides=2,
            padding=3,
            use_bias=False,
            kernel_init="he_fan_out",
            dtype=self.dtype,
            name="conv1",
        )(x)
        f2 = nn.relu(BatchNorm(dtype=self.dtype, name="bn1")(x, train))
        # torch pads the 3x3/2 max-pool with -inf, as reduce_window's init value does here.
        x = nn.max_pool(f2, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        feats = _stages(self, x, train, ("layer1", "layer2", "layer3", "layer4"))
        return {"f2": f2, **feats}


class EncoderExtra(nn.Module):
    """HS2S encoder: a ResNet whose stem also sees a mask, plus an extra conv and a reduction.

    stem: relu(bn(conv1(x) + mask_conv(mask))); f2 = relu(added_bn(added_conv(stem)));
    2x2 max-pool; conv2..conv5 (= layer1..layer4) give f4..f32;
    e = relu(reduce_bn(reduce_channel_(f32))). The new convs (mask_conv, added_conv,
    reduce_channel_) use N(0, sqrt(2 / (kh * kw * out))) weights and zero biases, as the authors'.

    Attributes:
      backbone: 'resnet50' | 'resnet101'.
      out_ch: channels of `e` (HS2S num_ch), before width_divisor.
      blocks: optional override of the four stage depths.
      width_divisor: divides every channel count (including out_ch).
      dtype: compute dtype (params float32).
    """

    backbone: str = "resnet50"
    out_ch: int = 1024
    blocks: Sequence[int] | None = None
    width_divisor: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        """Encodes a frame together with a (previous) mask.

        Args:
          x: float [N, H, W, 3] ImageNet-normalised frame, H and W multiples of 32.
          mask: float [N, H, W, 1] mask in [0, 1] (GT or a sigmoid prediction; not normalised).
          train: BatchNorm mode (torch train/eval).

        Returns:
          {'e': [N,H/32,W/32,out_ch/d], 'f32': [..,2048/d], 'f16': [N,H/16,W/16,1024/d],
           'f8': [..,512/d], 'f4': [..,256/d], 'f2': [N,H/2,W/2,64/d]} in `dtype`.
        """
        d = self.width_divisor
        stem = 64 // d
        new = {"kernel_init": "he_fan_out", "bias_init": "zeros", "dtype": self.dtype}
        stem_conv = {"strides": 2, "padding": 3, "use_bias": False, **new}
        # The mask conv is added before bn (torch: bn(conv1(x) + mask_conv(mask))).
        x = Conv(stem, 7, name="conv1", **stem_conv)(x)
        x = x + Conv(stem, 7, name="mask_conv", **stem_conv)(mask.astype(self.dtype))
        x = nn.relu(BatchNorm(dtype=self.dtype, name="bn")(x, train))
        x = Conv(stem, 3, padding=1, name="added_conv", **new)(x)
        f2 = nn.relu(BatchNorm(dtype=self.dtype, name="added_bn")(x, train))
        feats = _stages(self, max_pool2x2(f2), train, ("conv2", "conv3", "conv4", "conv5"))
        e = Conv(self.out_ch // d, 1, padding=0, name="reduce_channel_", **new)(feats["f32"])
        e = nn.relu(BatchNorm(dtype=self.dtype, name="reduce_bn")(e, train))
        return {"e": e, **feats, "f2": f2}
