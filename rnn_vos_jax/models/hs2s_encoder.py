"""The HS2S encoder (the authors' `EncoderExtra`): a mask-conditioned backbone plus a reduction.

    feats = backbone(x, mask)               f2..f32 (models/backbones/, mask via its first conv)
    e = ReLU(reduce_bn(reduce_channel_(top)))   1x1 conv (bias) Ctop -> out_ch, BN

`top` is the backbone's deep-head output when it has one (DeepLab's ASPP, 256 channels; VGG16's
fc6/fc7, 4096, which this encoder switches on: BACKBONE_FIELDS, paper B Table 3) and f32
otherwise (ResNet: 2048). The skips passed on are the backbone's pyramid f2..f32 (f32 is the raw
last stage, also for ASPP).

The backbone shares this module's scope, so its variables sit beside reduce_channel_ and
reduce_bn exactly as in the authors' checkpoint (encoder.conv1.weight, encoder.mask_conv.weight,
encoder.reduce_bn.running_mean, ...). The reduction uses the authors' init for new layers:
N(0, sqrt(2 / (kh*kw*out))) weights, zero bias, BN 1/0.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnn_vos_jax.models import backbones, cells
from rnn_vos_jax.models.layers import BatchNorm, Conv

# Backbone fields HS2S sets beyond the common ones: VGG16 as an FCN, its classifier's fc6 / fc7
# as convs giving `top` (S2S / S2S++ build their own heads on the plain trunk instead).
BACKBONE_FIELDS = {"vgg16": {"fcn_head": True}}


class HS2SEncoder(nn.Module):
    """Encodes a frame, optionally together with a mask.

    Attributes:
      backbone: backbone name (models/backbones/), 'resnet50' = the authors'.
      out_ch: channels of `e` before width_divisor (HS2S num_ch).
      blocks: optional override of the backbone's stage depths.
      depth_divisor: thins the backbone's stages (backbones.build; tiny variants, demo).
      width_divisor: divides every channel count (including out_ch).
      dtype: compute dtype (params float32).
      backbone_remat: rematerialise the backbone's blocks one by one (backbones with a
        `remat` field, e.g. axial_s, whose attention maps dominate its training memory).
    """

    backbone: str = "resnet50"
    out_ch: int = 1024
    blocks: Sequence[int] | None = None
    depth_divisor: int = 1
    width_divisor: int = 1
    dtype: Any = jnp.float32
    backbone_remat: bool = False

    def setup(self):
        fields = dict(BACKBONE_FIELDS.get(self.backbone, {}))
        if self.backbone_remat:
            if "remat" not in backbones.REGISTRY[self.backbone].__dataclass_fields__:
                raise ValueError(
                    f"config.model.backbone_remat: backbone {self.backbone!r} has no per-block "
                    "rematerialisation; config.model.remat rematerialises whole encoders"
                )
            fields["remat"] = True
        self.trunk = backbones.build(
            self.backbone,
            blocks=self.blocks,
            depth_divisor=self.depth_divisor,
            width_divisor=self.width_divisor,
            dtype=self.dtype,
            **fields,
        )
        nn.share_scope(self, self.trunk)
        new = {"kernel_init": "he_fan_out", "bias_init": "zeros", "dtype": self.dtype}
        self.reduce_channel_ = Conv(self.out_ch // self.width_divisor, 1, padding=0, **new)
        self.reduce_bn = BatchNorm(dtype=self.dtype)

    def __call__(
        self, x: jax.Array, mask: jax.Array | None = None, train: bool = False
    ) -> dict[str, jax.Array]:
        """Encodes frames with their (previous) masks.

        Args:
          x: float [N, H, W, 3] ImageNet-normalised frames, H and W multiples of 32.
          mask: float [N, H, W, 1] masks in [0, 1] (GT or sigmoid predictions; not normalised),
            or None for an encoder without mask input.
          train: BatchNorm mode (torch train/eval).

        Returns:
          {'e': [N,h32,w32,out_ch/d], 'f32', 'f16', 'f8', 'f4', 'f2'} in `dtype` (the
          backbone's pyramid, e.g. 2048/d .. 64/d channels for ResNet-50); h32 x w32 is f32's
          size, H/32 x W/32 (H/16 x W/16 for an output-stride-16 backbone).
        """
        feats = dict(self.trunk(x, train, mask))
        top = feats.pop("top", feats["f32"])
        e = nn.relu(self.reduce_bn(self.reduce_channel_(top), train))
        return {"e": e, **feats}


# What HS2S and Bi-HS2S build alike from their own fields (backbone, num_ch, blocks,
# depth_divisor, width_divisor, dtype, backbone_remat, skip_cell, sm_kernel), inside setup().


def encoders(model: nn.Module, remat: bool) -> tuple[nn.Module, nn.Module]:
    """(encoder_ref, encoder): the reference encoder and the frame encoder of `model`.

    Args:
      model: an HS2S-style model in its setup().
      remat: rematerialise each encoder call in the backward pass (config.model.remat).
    """
    name = type(model).__name__
    if model.width_divisor < 1 or 64 % model.width_divisor:
        raise ValueError(f"{name}: width_divisor must divide 64, got {model.width_divisor}")
    # Argument 3 (self = 0) is `train`, a Python bool that selects the BatchNorm mode.
    cls = nn.remat(HS2SEncoder, static_argnums=(3,)) if remat else HS2SEncoder
    fields = {
        "backbone": model.backbone,
        "out_ch": model.num_ch,
        "blocks": model.blocks,
        "depth_divisor": model.depth_divisor,
        "width_divisor": model.width_divisor,
        "dtype": model.dtype,
        "backbone_remat": model.backbone_remat,
    }
    return cls(**fields), cls(**fields)


def skip_width(model: nn.Module) -> int:
    """Channels of the encoder's f16, where the skip memory runs: it keeps that width (1024 for
    the ResNets, 512 for VGG16 and Axial-DeepLab-S), as the matching at 1/16 pairs it with f16."""
    trunk = backbones.build(
        model.backbone,
        blocks=model.blocks,
        depth_divisor=model.depth_divisor,
        width_divisor=model.width_divisor,
    )
    return trunk.channels()["f16"]


def skip_memory(model: nn.Module) -> nn.Module:
    """A skip-memory cell of `model` (config.model.skip_cell) on the encoder's f16."""
    return cells.build(model.skip_cell, skip_width(model), model.sm_kernel, dtype=model.dtype)
