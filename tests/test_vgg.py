"""VGG16 trunk (models/backbones/vgg.py) and the S2S / S2S++ encoder heads (models/s2s_encoder.py)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_vos_jax.models import layers, s2s_encoder
from rnn_vos_jax.models.backbones import vgg


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def _shapes(module, *args):
    return jax.eval_shape(functools.partial(module.init, jax.random.key(0)), *args)


def test_trunk_features_names_and_param_count_full_size():
    x = jax.ShapeDtypeStruct((1, 256, 448, 3), jnp.float32)
    variables = _shapes(vgg.VGG16(), x)
    params = variables["params"]
    assert sorted(params) == sorted(vgg.TRUNK_CONV_NAMES)
    assert len(vgg.TRUNK_CONV_NAMES) == len(vgg.TORCHVISION_CONV_INDICES) == 13
    # torchvision vgg16().features has 14,714,688 parameters.
    assert _count(params) == 14_714_688
    assert params["encoder_0_0"]["kernel"].shape == (3, 3, 3, 64)
    assert params["encoder_4_4"]["kernel"].shape == (3, 3, 512, 512)
    feats = jax.eval_shape(lambda v, a: vgg.VGG16().apply(v, a), variables, x)
    expected = {
        "f2": (1, 128, 224, 64),
        "f4": (1, 64, 112, 128),
        "f8": (1, 32, 56, 256),
        "f16": (1, 16, 28, 512),
        "f32": (1, 8, 14, 512),
    }
    assert {k: v.shape for k, v in feats.items()} == expected


@pytest.mark.parametrize(
    "head,names,count",
    [
        # 1x1 512->200704 (+bias) and 1x1 200704->512 (+bias) on top of the trunk.
        ("authors_1x1", {"out_0", "out_2"}, 512 * 200704 + 200704 + 200704 * 512 + 512),
        # fc6 7x7 512->4096, fc7 1x1 4096->4096, reduce 1x1 4096->512 (all with bias).
        (
            "fcn_7x7",
            {"fc6", "fc7", "reduce_conv"},
            512 * 49 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 512 + 512,
        ),
    ],
)
def test_encoder_heads_full_size(head, names, count):
    x = jax.ShapeDtypeStruct((2, 256, 448, 3), jnp.float32)
    enc = s2s_encoder.VGGEncoder(head=head)
    variables = _shapes(enc, x)
    params = variables["params"]
    assert set(params) == {"vgg_backbone"} | names
    assert _count(params) - _count(params["vgg_backbone"]) == count
    e, feats = jax.eval_shape(lambda v, a: enc.apply(v, a), variables, x)
    assert e.shape == (2, 8, 14, 512)
    assert feats["f2"].shape == (2, 128, 224, 64)


def test_trunk_matches_torch_reference():
    torch = pytest.importorskip("torch")
    d = 16
    trunk = vgg.VGG16(width_divisor=d)
    x = np.random.default_rng(0).normal(size=(2, 64, 96, 4)).astype(np.float32)
    rng = np.random.default_rng(0)
    variables = jax.tree_util.tree_map(
        lambda s: rng.normal(0, 0.1, s.shape).astype(np.float32), _shapes(trunk, x)
    )
    feats = trunk.apply(variables, x)
    # Independent torch reference: conv3x3(pad 1) + ReLU per conv, MaxPool2d(2) per block.
    t = torch.from_numpy(x).permute(0, 3, 1, 2)
    for b, block in enumerate(vgg.VGG16_BLOCKS):
        for j in range(len(block)):
            p = variables["params"][f"encoder_{b}_{2 * j}"]
            w = torch.from_numpy(np.array(p["kernel"])).permute(3, 2, 0, 1)
            bias = torch.from_numpy(np.array(p["bias"]))
            t = torch.relu(torch.nn.functional.conv2d(t, w, bias, padding=1))
        t = torch.nn.functional.max_pool2d(t, 2)
        ref = t.permute(0, 2, 3, 1).numpy()
        got = np.asarray(feats[vgg.FEATURE_NAMES[b]])
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
    # A 4-channel input (the initializer's rgb+mask) changes only conv1_1's kernel.
    assert variables["params"]["encoder_0_0"]["kernel"].shape == (3, 3, 4, 64 // d)


def test_authors_head_is_relu_1x1_stack_and_bad_inputs_fail():
    enc = s2s_encoder.VGGEncoder(width_divisor=64)
    x = np.random.default_rng(1).normal(size=(1, 32, 64, 3)).astype(np.float32)
    rng = np.random.default_rng(1)
    variables = jax.tree_util.tree_map(
        lambda s: rng.normal(0, 0.2, s.shape).astype(np.float32), _shapes(enc, x)
    )
    e, feats = enc.apply(variables, x)
    p = variables["params"]
    y = np.maximum(feats["f32"] @ p["out_0"]["kernel"][0, 0] + p["out_0"]["bias"], 0)
    ref = np.maximum(y @ p["out_2"]["kernel"][0, 0] + p["out_2"]["bias"], 0)
    assert p["out_0"]["kernel"].shape == (1, 1, 8, 200704 // 64)
    np.testing.assert_allclose(e, ref, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="multiples of 32"):
        enc.init(jax.random.key(0), np.zeros((1, 40, 64, 3), np.float32))
    with pytest.raises(ValueError, match="width_divisor"):
        layers.scaled(64, 3)
    with pytest.raises(ValueError, match="encoder_head"):
        s2s_encoder.VGGEncoder(head="nope").init(jax.random.key(0), x)
