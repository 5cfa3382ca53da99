"""S2S / S2S++ weights: the authors' PyTorch file layout and ImageNet VGG16 initialisation.

PyTorch file (RS2S `train.py`): {'initializer': sd, 'encoder': sd, 'decoder': sd, 'convlstm': sd,
'convlstm_middle': sd, 'convlstm_3': sd, 'optimizer': ...}, one state dict per module (the S2S
baseline has no convlstm_middle / convlstm_3). Their nn.Sequential children
(vgg_backbone.encoder.{b}.{i}, mid_layer.{i}, out.{i}) are folded into names in Flax
(encoder_{b}_{i}, mid_layer_{i}, out_{i}).

ImageNet initialisation (torchvision vgg16 keys features.{0,2,...,28}, classifier.{0,3};
classifier.6 is not used), as the authors' code does:
  * both VGG trunks (initializer and encoder) take the 13 convs in order;
  * the initializer's 4-channel conv1_1 takes the RGB slice of features.0 (and its bias); the 4th
    (mask) input slice keeps its own Xavier initialisation;
  * initializer fc6 (mid_layer_0, 7x7) = classifier.0 viewed as (4096, 512, 7, 7), fc7
    (mid_layer_2, 1x1) = classifier.3 viewed as (4096, 4096, 1, 1), biases copied;
  * encoder head 'authors_1x1': out_0's weight = classifier.0's (4096, 25088) matrix row-major
    reshaped to (200704, 512, 1, 1) (the authors' scrambled reuse); its bias and out_2 keep their
    initialisation. Head 'fcn_7x7': fc6/fc7 as for the initializer.
"""

from __future__ import annotations

import numpy as np

from rnn_vos_jax.models import backbones
from rnn_vos_jax.models.torch_keys import KeyIndex
from rnn_vos_jax.models.torch_layouts import ModuleDictLayout

CHECKPOINT = ModuleDictLayout(
    "s2s_pp",
    modules=("initializer", "encoder", "decoder", "convlstm", "convlstm_middle", "convlstm_3"),
    required=("initializer", "encoder", "decoder", "convlstm"),
    sequentials=("encoder", "mid_layer", "out"),
)
TRUNKS = ("initializer.vgg_backbone", "encoder.vgg_backbone")
FC6, FC7 = "classifier.0", "classifier.3"


def _as_conv(w: np.ndarray | None, k: int) -> np.ndarray | None:
    # A Linear over the flattened (C, k, k) pool output is a k x k conv over C channels.
    if w is None or w.ndim != 2 or w.shape[1] % (k * k):
        return w
    return w.reshape(w.shape[0], w.shape[1] // (k * k), k, k)


def init_backbones(state, flat, model_config, source) -> dict:
    """The Family.init_backbones hook: torchvision VGG16 into the trunks and the FC layers."""
    del model_config  # the variables say which heads exist
    index = KeyIndex(flat)
    fc = {f"{FC6}.weight": _as_conv(state.get(f"{FC6}.weight"), 7)}
    fc[f"{FC6}.bias"] = state.get(f"{FC6}.bias")
    fc[f"{FC7}.weight"] = _as_conv(state.get(f"{FC7}.weight"), 1)
    fc[f"{FC7}.bias"] = state.get(f"{FC7}.bias")
    fc_targets = [("initializer.mid_layer.0", "initializer.mid_layer.2")]
    if index.resolve("encoder.fc6.weight", 4) is not None:
        fc_targets.append(("encoder.fc6", "encoder.fc7"))
    extra = {}
    for fc6, fc7 in fc_targets:
        for target, src in ((fc6, FC6), (fc7, FC7)):
            for leaf in ("weight", "bias"):
                extra[f"{target}.{leaf}"] = fc[f"{src}.{leaf}"]
    if index.resolve("encoder.out.0.weight", 4) is not None:
        w = state.get(f"{FC6}.weight")
        if w is not None and w.ndim == 2 and w.shape[1] % 49 == 0:
            # The authors' view of fc6 as (4096*49, 512, 1, 1): row-major, hence scrambled.
            w = w.reshape(-1, w.shape[1] // 49, 1, 1)
        extra["encoder.out.0.weight"] = w
    claimed = [k for k in fc if k in state]
    targets = [(trunk, "vgg16") for trunk in TRUNKS]
    return backbones.torchvision_init(state, flat, targets, source, extra=extra, claimed=claimed)
