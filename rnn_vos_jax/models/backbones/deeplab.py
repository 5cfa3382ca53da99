"""DeepLab-R50 backbones of paper B Table 3: ResNet-50 at output stride 16, with or without ASPP.

Both share the HS2S ResNet stem of resnet.py (conv1 [+ mask_conv] -> bn -> ReLU -> added_conv ->
added_bn -> ReLU = f2, 2x2 max-pool) and its stages conv2..conv5. conv5 (torchvision layer4) is
dilated instead of strided, as torchvision's `replace_stride_with_dilation=[False, False, True]`:
its first block keeps the previous dilation (1) on its 3x3 and has a stride-1 1x1 downsample,
the other blocks use dilation 2 (padding 2). So f32 is at stride 16 (16x28 for 256x448), with
2048/d channels; f2..f16 are those of 'resnet50'.

  'deeplab_r50'       the dilated trunk only.
  'deeplab_r50_aspp'  plus ASPP on conv5 (module `aspp`, output 'top' [N,H/16,W/16,256/d]):
                      1x1 and three 3x3 convs of rates 6/12/18 and image pooling, 256/d channels
                      each (conv without bias, BN, ReLU), concatenated (1280/d) -> 1x1 256/d,
                      BN, ReLU, dropout 0.5. torchvision's deeplabv3 trains its ASPP at output
                      stride 8 with rates 12/24/36; 6/12/18 covers the same image extent at 16
                      (the weights have the same shapes). The HS2S encoder reduces 'top' to `e`;
                      the f32 skip stays the raw conv5 output.

Weights (backbones.torchvision_init):
  * torchvision `deeplabv3_resnet50` state dicts: `backbone.{conv1,bn1,layer1..4}.*` fill the
    trunk (trained at output stride 8; a conv's weights do not depend on its dilation). The
    ASPP variant also takes `classifier.0.*` (convs.0.{0,1}, convs.1-3.{0,1}, convs.4.{1,2},
    project.{0,1}); `classifier.1..4` (the 3x3 conv, BN and classifier of DeepLabHead) and
    `aux_classifier.*` are not part of a backbone and are ignored, as is all of `classifier.*`
    for 'deeplab_r50' (its trunk is what the file shares with it).
  * ImageNet torchvision `resnet50` state dicts (conv1, bn1, layerK; fc ignored): the trunk; the
    ASPP keeps its fresh init (a file with no `classifier.0.*` has no ASPP to give).
The new layers (mask_conv, added_conv, added_bn) keep their init as for 'resnet50'. ASPP's
fresh init is torchvision's: DeepLabHead's convs keep torch's default init, BN 1/0.

Dropout draws from the 'sample' rng stream, the only stream the training step passes
(rnn_vos_jax/training/train_state.py; HS2S's nn.scan splits it per step, so each step and encoder call gets
its own mask); it is active iff `train` (the model's BatchNorm/training flag), identity otherwise.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnn_vos_jax.models.backbones.resnet import STAGE_NAMES, ResNet
from rnn_vos_jax.models.layers import BatchNorm, Conv, scaled

ASPP_RATES = (6, 12, 18)
ASPP_WIDTH = 256
ASPP_DROPOUT = 0.5
DROPOUT_RNG = "sample"

# deeplabv3's `backbone.` layout first: torchvision_state writes the first entry of a prefix.
_TRUNK = (
    ("conv1", "conv1"),
    ("bn1", "bn"),
    *((f"layer{k + 1}", n) for k, n in enumerate(STAGE_NAMES)),
)


def _aspp_keys(rates: int = len(ASPP_RATES)) -> tuple[tuple[str, str], ...]:
    """(torchvision `classifier.0` prefix, own prefix) of each ASPP conv and BN."""
    table = []
    for i in range(rates + 1):  # convs.0: 1x1; convs.1..rates: ASPPConv (conv, bn, relu)
        table += [(f"classifier.0.convs.{i}.{j}", f"aspp.convs_{i}_{j}") for j in (0, 1)]
    pool = rates + 1  # ASPPPooling: (avgpool, conv, bn, relu)
    table += [(f"classifier.0.convs.{pool}.{j}", f"aspp.convs_{pool}_{j}") for j in (1, 2)]
    table += [(f"classifier.0.project.{j}", f"aspp.project_{j}") for j in (0, 1)]
    return tuple(table)


class ASPP(nn.Module):
    """torchvision's `ASPP` (models/segmentation/deeplabv3.py) in NHWC, names its key components.

    Submodules convs_{i}_{j} / project_{j} are torchvision's `convs.{i}.{j}` / `project.{j}`.

    Attributes:
      features: width of every branch and of the output (256 / width_divisor).
      rates: dilations of the 3x3 branches.
      dropout: rate of the dropout after the projection (train only, rng stream 'sample').
      dtype: compute dtype (params float32).
    """

    features: int = ASPP_WIDTH
    rates: Sequence[int] = ASPP_RATES
    dropout: float = ASPP_DROPOUT
    dtype: Any = jnp.float32

    def _branch(self, x: jax.Array, k: int, rate: int, i: int, j: int, train: bool) -> jax.Array:
        """Conv k x k (dilation `rate`, no bias) -> BN -> ReLU, named convs_{i}_{j}, _{j+1}."""
        names = (f"convs_{i}_{j}", f"convs_{i}_{j + 1}") if i >= 0 else ("project_0", "project_1")
        y = Conv(
            self.features,
            k,
            padding=rate * (k // 2),
            dilation=rate,
            use_bias=False,
            dtype=self.dtype,
            name=names[0],
        )(x)
        return nn.relu(BatchNorm(dtype=self.dtype, name=names[1])(y, train))

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """x: [N, h, w, Cin] -> [N, h, w, features] (ReLU, then dropout when training)."""
        branches = [self._branch(x, 1, 1, 0, 0, train)]
        for i, rate in enumerate(self.rates, 1):
            branches.append(self._branch(x, 3, int(rate), i, 0, train))
        pool = len(self.rates) + 1
        pooled = jnp.mean(x, axis=(1, 2), keepdims=True)  # AdaptiveAvgPool2d(1)
        pooled = self._branch(pooled, 1, 1, pool, 1, train)
        # torchvision upsamples the 1x1 map bilinearly: from one pixel that is a broadcast.
        branches.append(jnp.broadcast_to(pooled, branches[0].shape))
        y = self._branch(jnp.concatenate(branches, axis=-1), 1, 1, -1, 0, train)
        if train and self.dropout > 0:
            if not self.has_rng(DROPOUT_RNG):
                raise ValueError(
                    f"ASPP dropout in train mode needs the {DROPOUT_RNG!r} rng stream "
                    f"(pass rngs={{{DROPOUT_RNG!r}: key}} to apply)"
                )
            y = nn.Dropout(self.dropout, rng_collection=DROPOUT_RNG)(y, deterministic=False)
        return y


class DeepLabR50(ResNet):
    """ResNet-50 with a dilated conv5, output stride 16 (registry 'deeplab_r50').

    Attributes (ResNet's): width_divisor, depths (default ResNet-50's (3, 4, 6, 3)), dtype.
    """

    REPLACE_STRIDE_WITH_DILATION = (False, False, True)
    TORCHVISION = (*((f"backbone.{s}", d) for s, d in _TRUNK), *_TRUNK)
    # ImageNet fc; deeplabv3's segmentation heads (this trunk has no ASPP).
    TORCHVISION_IGNORED = ("fc.", "classifier.", "aux_classifier.")


class DeepLabR50ASPP(DeepLabR50):
    """DeepLab-R50 at output stride 16 with ASPP on conv5 (registry 'deeplab_r50_aspp').

    Outputs f2..f32 as DeepLabR50 plus 'top' = ASPP(f32), [N, H/16, W/16, 256/d].
    """

    TORCHVISION_HEAD = _aspp_keys()
    TORCHVISION_IGNORED = ("fc.", "aux_classifier.", *(f"classifier.{i}." for i in (1, 2, 3, 4)))

    def top_channels(self) -> int:
        return scaled(ASPP_WIDTH, self.width_divisor)

    def _top(self, f32: jax.Array, train: bool) -> jax.Array:
        return ASPP(self.top_channels(), dtype=self.dtype, name="aspp")(f32, train)
