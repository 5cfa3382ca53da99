"""Backbones by name: full-size feature pyramids (eval_shape) and parameter counts."""

import jax
import jax.numpy as jnp
import pytest

from rnn_vos_jax.models import backbones


def _count(tree):
    return sum(x.size for x in jax.tree.leaves(tree))


@pytest.mark.parametrize(
    "name,channels,params",
    [
        # torchvision's counts without the classifier (fc) layers, plus the authors' added stem
        # conv (64 * 64 * 9 + 64) and BatchNorm (2 * 64) of the HS2S encoder.
        ("resnet50", (64, 256, 512, 1024, 2048), 23_508_032 + 37_056),
        ("resnet101", (64, 256, 512, 1024, 2048), 42_500_160 + 37_056),
        ("vgg16", (64, 128, 256, 512, 512), 14_714_688),
    ],
)
def test_full_size_pyramids(name, channels, params):
    model = backbones.build(name)
    x = jax.ShapeDtypeStruct((1, 256, 448, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    feats = jax.eval_shape(model.apply, variables, x)
    strides = {"f2": 2, "f4": 4, "f8": 8, "f16": 16, "f32": 32}
    assert {k: v.shape for k, v in feats.items()} == {
        k: (1, 256 // s, 448 // s, c) for (k, s), c in zip(strides.items(), channels)
    }
    assert model.channels() == dict(zip(strides, channels))
    assert _count(variables["params"]) == params


def test_unknown_backbone_is_named():
    with pytest.raises(ValueError, match="config.model.backbone 'resnet34'; known"):
        backbones.build("resnet34")
    with pytest.raises(ValueError, match="'vgg16' has no stage depths"):
        backbones.build("vgg16", blocks=(1, 1, 1, 1))
