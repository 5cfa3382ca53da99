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
        # torchvision's counts without the classifier (fc) layers.
        ("resnet50", {"f2": 64, "f4": 256, "f8": 512, "f16": 1024, "f32": 2048}, 23_508_032),
        ("resnet101", {"f2": 64, "f4": 256, "f8": 512, "f16": 1024, "f32": 2048}, 42_500_160),
        ("vgg16", {"b1": 64, "b2": 128, "b3": 256, "b4": 512, "b5": 512}, 14_714_688),
    ],
)
def test_full_size_pyramids(name, channels, params):
    model = backbones.build(name)
    x = jax.ShapeDtypeStruct((1, 256, 448, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    feats = jax.eval_shape(model.apply, variables, x)
    strides = {"f2": 2, "f4": 4, "f8": 8, "f16": 16, "f32": 32}
    strides.update({f"b{i}": 2**i for i in range(1, 6)})
    assert {k: v.shape for k, v in feats.items()} == {
        k: (1, 256 // strides[k], 448 // strides[k], c) for k, c in channels.items()
    }
    assert _count(variables["params"]) == params


def test_unknown_backbone_is_named():
    with pytest.raises(ValueError, match="resnet34"):
        backbones.build("resnet34")
