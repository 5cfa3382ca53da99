"""Backbones by name, each returning its feature pyramid as a dict.

  'vgg16'     models/vgg.py VGG16Trunk: {'b1'..'b5'} post-pool features (S2S, S2S++)
  'resnet50'  models/resnet.py ResNet: {'f2', 'f4', 'f8', 'f16', 'f32'} (torchvision layout)
  'resnet101' as resnet50 with 23 blocks in layer3
The models use the specialised encoders built on these (vgg.VGGEncoder with the authors' FC
heads, s2s_initializer.Initializer with a 4-channel conv1_1, resnet.EncoderExtra for HS2S).
"""

import flax.linen as nn

from rnn_vos_jax.models.resnet import DEPTHS, EncoderExtra, ResNet
from rnn_vos_jax.models.vgg import VGG16Trunk, VGGEncoder

NAMES = ("vgg16", *sorted(DEPTHS))

__all__ = ["NAMES", "EncoderExtra", "ResNet", "VGG16Trunk", "VGGEncoder", "build"]


def build(name: str, **kwargs) -> nn.Module:
    """The backbone called `name` ('vgg16', 'resnet50', 'resnet101').

    Args:
      name: backbone name.
      **kwargs: module fields (width_divisor, dtype, blocks for ResNets, ...).

    Returns:
      An unbound module mapping normalised images [N, H, W, C] to a dict of features.
    """
    if name == "vgg16":
        return VGG16Trunk(**kwargs)
    if name in DEPTHS:
        return ResNet(backbone=name, **kwargs)
    raise ValueError(f"Unknown backbone {name!r}; expected one of {NAMES}")
