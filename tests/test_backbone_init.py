"""torchvision ImageNet state dicts -> HS2S / S2S++ backbones (backbone_init.apply).

The torchvision-layout ResNet / VGG16 of tests/torch_reference.py (tiny widths) are the oracle:
the initialised Flax backbones must reproduce their forward passes, and every layer the authors
leave freshly initialised must keep its given value.
"""

import copy

import jax
import ml_collections
import model_testing as mt
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch_reference as tr

from rnn_vos_jax import models
from rnn_vos_jax.models import layers, torch_keys
from rnn_vos_jax.models.backbones import vgg
from rnn_vos_jax.models.hs2s_encoder import HS2SEncoder
from rnn_vos_jax.weights import backbone_init

DIV = 16
TOL = 1e-4
_COMMON = {"width_divisor": DIV, "dtype": "float32", "backbone_init": ""}


def _hs2s_cfg():
    fields = {"backbone": "resnet50", "num_ch": 1024, "blocks": (1, 1, 1, 1)}
    return ml_collections.ConfigDict({"name": "hs2s", "num_classes": 6, **_COMMON, **fields})


def _s2spp_cfg(head="authors_1x1"):
    fields = {"num_skip_memories": 2, "encoder_head": head}
    return ml_collections.ConfigDict({"name": "s2s_pp", "num_classes": 6, **_COMMON, **fields})


def _nchw(x):
    return torch.as_tensor(np.ascontiguousarray(np.moveaxis(x, -1, 1)))


def _nhwc(t):
    return np.moveaxis(t.detach().numpy(), 1, -1)


def _changed(before, after):
    fb, fa = torch_keys.flatten_variables(before), torch_keys.flatten_variables(after)
    assert set(fb) == set(fa)
    return {p for p in fb if not np.array_equal(np.asarray(fb[p]), np.asarray(fa[p]))}


@pytest.fixture(scope="module")
def tv_resnet():
    return tr.randomize_(tr.ResNet((1, 1, 1, 1), div=DIV), 5).eval()


def test_resnet_into_both_hs2s_encoders_reproduces_torch(tv_resnet, tmp_path):
    sd = tv_resnet.state_dict()
    pth, npz = str(tmp_path / "r50.pth"), str(tmp_path / "r50.npz")
    torch.save(sd, pth)
    np.savez(npz, **{k: v.numpy() for k, v in sd.items()})
    cfg = _hs2s_cfg()
    before = mt.random_variables(models.build(cfg))
    after = backbone_init.apply(before, pth, cfg)
    from_npz = backbone_init.apply(before, npz, cfg)
    assert not _changed(after, from_npz)  # .npz needs no torch and gives the same tree
    changed = _changed(before, after)
    trunk = {"conv1", "bn", "conv2", "conv3", "conv4", "conv5"}
    n_trunk = sum(1 for k in sd if not k.startswith("fc.") and "num_batches" not in k)
    assert len(changed) == 2 * n_trunk
    assert all(p[1] in ("encoder_ref", "encoder") and p[2] in trunk for p in changed)

    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 64, 96, 3)).astype(np.float32)
    mask = (rng.uniform(size=(2, 64, 96, 1)) > 0.5).astype(np.float32)
    enc = HS2SEncoder(out_ch=1024, blocks=(1, 1, 1, 1), width_divisor=DIV)
    for name in ("encoder_ref", "encoder"):
        # The authors' construction: torchvision trunk + freshly initialised new layers.
        ref = tr.EncoderExtra(copy.deepcopy(tv_resnet), 1024 // DIV).eval()
        for new in ("mask_conv", "added_conv", "added_bn", "reduce_channel_", "reduce_bn"):
            tr.load_flax_into_torch(getattr(ref, new), after, prefix=f"{name}.{new}.")
        with torch.no_grad():
            want = ref(_nchw(x), _nchw(mask))
        sub = {c: after[c][name] for c in ("params", "batch_stats")}
        got = enc.apply(sub, x, mask, False)
        for key, w in zip(("e", "f32", "f16", "f8", "f4", "f2"), want):
            np.testing.assert_allclose(got[key], _nhwc(w), atol=TOL, rtol=1e-4, err_msg=key)


def test_resnet_wrong_depth_missing_and_misshaped_listed(tmp_path):
    deeper = tr.ResNet((1, 1, 2, 1), div=DIV).state_dict()  # like R-101 weights for an R-50
    del deeper["layer4.0.bn3.running_var"]
    deeper["bn1.weight"] = torch.ones(7)
    pth = str(tmp_path / "r101.pth")
    torch.save(deeper, pth)
    cfg = _hs2s_cfg()
    with pytest.raises(torch_keys.ConversionError) as err:
        backbone_init.apply(mt.random_variables(models.build(cfg)), pth, cfg)
    msg = str(err.value)
    assert "backbone_init" in msg and "r101.pth" in msg
    assert "encoder.conv4.1.conv1.weight" in msg  # the extra block, unexpected
    assert "batch_stats/encoder_ref/conv5/0/bn3/var" in msg  # missing
    assert "encoder.bn.weight: torch shape (7,)" in msg  # mis-shaped
    with pytest.raises(ValueError, match="config.model.name 'nope'; known"):
        backbone_init.apply({}, pth, {"name": "nope"})
    assert backbone_init.apply({"params": {}}, "", cfg) == {"params": {}}


@pytest.fixture(scope="module")
def tv_vgg():
    return tr.randomize_(tr.VGG16(div=DIV, fc=4096 // DIV), 6).eval()


def _vgg_blocks(model, x):
    """torchvision VGG16 features -> the five post-pool block outputs (NHWC numpy)."""
    outs, t = [], _nchw(x)
    with torch.no_grad():
        for layer in model.features:
            t = layer(t)
            if isinstance(layer, torch.nn.MaxPool2d):
                outs.append(_nhwc(t))
    return outs


def test_vgg_into_s2spp_initializer_and_encoder(tv_vgg, tmp_path):
    sd = tv_vgg.state_dict()
    pth = str(tmp_path / "vgg16.pth")
    torch.save(sd, pth)
    cfg = _s2spp_cfg()
    before = mt.random_variables(models.build(cfg))
    after = backbone_init.apply(before, pth, cfg)
    p0, p1 = before["params"], after["params"]
    # Only the two trunks, the initializer's fc6/fc7 and the encoder's out_0 kernel change.
    changed = {p[1:3] for p in _changed(before, after)}
    assert changed == {
        ("initializer", "vgg_backbone"), ("initializer", "mid_layer_0"),
        ("initializer", "mid_layer_2"), ("encoder", "vgg_backbone"), ("encoder", "out_0"),
    }  # fmt: skip
    np.testing.assert_array_equal(p1["encoder"]["out_0"]["bias"], p0["encoder"]["out_0"]["bias"])

    x = np.random.default_rng(2).normal(size=(1, 224, 224, 3)).astype(np.float32)
    want = _vgg_blocks(tv_vgg, x)
    trunk = vgg.VGG16(width_divisor=DIV)
    got = trunk.apply({"params": p1["encoder"]["vgg_backbone"]}, x)
    for i, w in enumerate(want):
        np.testing.assert_allclose(got[vgg.FEATURE_NAMES[i]], w, atol=TOL, rtol=1e-4)
    # Initializer conv1_1: RGB input slice and bias from ImageNet, mask slice keeps its own init.
    k0 = p0["initializer"]["vgg_backbone"]["encoder_0_0"]["kernel"]
    k1 = p1["initializer"]["vgg_backbone"]["encoder_0_0"]["kernel"]
    np.testing.assert_array_equal(k1[:, :, 3], k0[:, :, 3])
    x4 = np.concatenate([x, np.zeros_like(x[..., :1])], axis=-1)
    got4 = trunk.apply({"params": p1["initializer"]["vgg_backbone"]}, x4)
    np.testing.assert_allclose(got4["f32"], want[4], atol=TOL, rtol=1e-4)

    # fc6 as a 7x7 conv (pad 3) at the centre of a 7x7 map == the torchvision Linear; fc7 1x1.
    with torch.no_grad():
        fc6 = tv_vgg.classifier[0](torch.as_tensor(np.moveaxis(want[4], -1, 1).copy()).flatten(1))
        fc7 = tv_vgg.classifier[3](torch.relu(fc6))
    conv6 = layers.Conv(4096 // DIV, 7, padding=3)
    y6 = conv6.apply({"params": p1["initializer"]["mid_layer_0"]}, want[4])
    np.testing.assert_allclose(y6[0, 3, 3], fc6[0].numpy(), atol=TOL, rtol=1e-4)
    conv7 = layers.Conv(4096 // DIV, 1, padding=0)
    y7 = conv7.apply({"params": p1["initializer"]["mid_layer_2"]}, jax.nn.relu(y6))
    np.testing.assert_allclose(y7[0, 3, 3], fc7[0].numpy(), atol=TOL, rtol=1e-4)
    # Encoder head: the authors' row-major view of fc6 as (4096*49, 512, 1, 1).
    w = sd["classifier.0.weight"].numpy()
    view = w.reshape(-1, w.shape[1] // 49, 1, 1)
    np.testing.assert_array_equal(p1["encoder"]["out_0"]["kernel"], view.transpose(2, 3, 1, 0))


def test_vgg_fcn_head_and_errors(tv_vgg, tmp_path):
    sd = {k: v.numpy() for k, v in tv_vgg.state_dict().items()}
    npz = str(tmp_path / "vgg16.npz")
    np.savez(npz, **sd)
    cfg = _s2spp_cfg("fcn_7x7")
    after = backbone_init.apply(mt.random_variables(models.build(cfg)), npz, cfg)["params"]
    for a, b in (("fc6", "mid_layer_0"), ("fc7", "mid_layer_2")):
        np.testing.assert_array_equal(
            after["encoder"][a]["kernel"], after["initializer"][b]["kernel"]
        )
    np.testing.assert_array_equal(after["encoder"]["fc6"]["bias"], sd["classifier.0.bias"])

    del sd["features.28.bias"]
    sd["features.30.weight"] = np.zeros((3, 3, 3, 3), np.float32)
    sd["classifier.3.weight"] = sd["classifier.3.weight"][:, :5]
    np.savez(npz, **sd)
    with pytest.raises(torch_keys.ConversionError) as err:
        backbone_init.apply(mt.random_variables(models.build(cfg)), npz, cfg)
    msg = str(err.value)
    assert "params/encoder/vgg_backbone/encoder_4_4/bias" in msg  # missing
    assert "features.30.weight" in msg  # unexpected
    assert "encoder.fc7.weight: torch shape (256, 5, 1, 1)" in msg  # mis-shaped
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        backbone_init.apply({}, str(tmp_path / "missing.npz"), cfg)
