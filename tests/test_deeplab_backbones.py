"""Paper B Table 3 backbones: DeepLab-R50 at output stride 16 (with / without ASPP) and HS2S's
VGG16 with its FCN head (fc6 / fc7 as convs).

Oracles: NumPy loops for the dilated bottleneck and the ASPP branches, and the torchvision-layout
re-implementations of tests/torchvision_reference.py (DeepLabV3-ResNet50, ResNet-50, VGG16) for
the key maps and the forward parity of weights loaded through backbone_init (tiny widths).
"""

import copy

import jax
import jax.numpy as jnp
import ml_collections
import model_testing as mt
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch_reference as tr
import torchvision_reference as tvr

from rnn_vos_jax import models
from rnn_vos_jax.models import backbones, torch_keys
from rnn_vos_jax.models.backbones import deeplab, resnet
from rnn_vos_jax.models.hs2s_encoder import HS2SEncoder
from rnn_vos_jax.weights import backbone_init

DIV = 16
# Two conv5 blocks: block 0 at dilation 1 with a stride-1 downsample, block 1 at dilation 2.
BLOCKS = (1, 1, 1, 2)
TOL = 1e-4
EPS = 1e-5
NEW_LAYERS = ("mask_conv", "added_conv", "added_bn")


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


# --- full size ---------------------------------------------------------------------------------

# ASPP: 1x1 and pooling branches 2 * (2048*256 + 2*256), three 3x3 3 * (2048*256*9 + 2*256),
# project 1280*256 + 2*256.
ASPP_PARAMS = 2 * (2048 * 256 + 512) + 3 * (2048 * 256 * 9 + 512) + 1280 * 256 + 512
R50_HS2S = 23_508_032 + 37_056  # torchvision resnet50 without fc, + added_conv / added_bn
VGG_FCN = 138_357_544 - (4096 * 1000 + 1000)  # torchvision vgg16 without classifier.6
# The HS2S encoder adds mask_conv (ResNet 7x7: 3136, VGG 3x3: 576 weights) and the reduction
# 1x1 Ctop -> 1024 with bias (Ctop * 1024 + 1024) + BN (2048).


@pytest.mark.parametrize(
    "name,fields,params,top,f32,enc_params",
    [
        ("deeplab_r50", {}, R50_HS2S, None, (16, 28, 2048), R50_HS2S + 3136 + 2048 * 1024 + 3072),
        (
            "deeplab_r50_aspp",
            {},
            R50_HS2S + ASPP_PARAMS,
            (16, 28, 256),
            (16, 28, 2048),
            R50_HS2S + ASPP_PARAMS + 3136 + 256 * 1024 + 3072,
        ),
        (
            "vgg16",
            {"fcn_head": True},
            VGG_FCN,
            (8, 14, 4096),
            (8, 14, 512),
            VGG_FCN + 576 + 4096 * 1024 + 3072,
        ),
    ],
)
def test_full_size_pyramid_strides_and_counts(name, fields, params, top, f32, enc_params):
    net = backbones.build(name, **fields)
    x = jax.ShapeDtypeStruct((1, 256, 448, 3), jnp.float32)
    variables = jax.eval_shape(net.init, jax.random.key(0), x)
    feats = jax.eval_shape(net.apply, variables, x)
    shapes = {k: v.shape[1:] for k, v in feats.items()}
    assert shapes["f32"] == f32 and shapes.get("top") == top
    assert shapes["f16"][:2] == (16, 28) and shapes["f2"][:2] == (128, 224)
    assert {k: 256 // s for k, s in net.strides().items()} == {k: v[0] for k, v in shapes.items()}
    assert net.channels() == {k: v[2] for k, v in shapes.items()}
    assert _count(variables["params"]) == params
    # HS2S's encoder sets VGG16's fcn_head itself, reduces 'top' and passes the raw f32 on.
    m = jax.ShapeDtypeStruct((1, 256, 448, 1), jnp.float32)
    out, enc_vars = jax.eval_shape(
        lambda a, b: HS2SEncoder(name).init_with_output(jax.random.key(0), a, b), x, m
    )
    assert {k: v.shape[1:] for k, v in out.items()} == {
        **{k: v for k, v in shapes.items() if k != "top"},
        "e": (*f32[:2], 1024),
    }
    assert _count(enc_vars["params"]) == enc_params


# --- NumPy oracles -----------------------------------------------------------------------------


def _np_conv(x, w, dilation=1):
    """Stride-1 conv with torch's symmetric padding dilation * (k // 2), by summing shifted taps.

    x [N,H,W,C], w [kh,kw,C,O] -> [N,H,W,O].
    """
    kh, kw = w.shape[:2]
    ph, pw = dilation * (kh // 2), dilation * (kw // 2)
    xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    h, wd = x.shape[1:3]
    out = np.zeros((*x.shape[:3], w.shape[-1]))
    for i in range(kh):
        for j in range(kw):
            tap = xp[:, i * dilation : i * dilation + h, j * dilation : j * dilation + wd]
            out += tap @ w[i, j]
    return out


def _np_bn(y, p, s):
    return (y - s["mean"]) / np.sqrt(s["var"] + EPS) * p["scale"] + p["bias"]


def _relu(y):
    return np.maximum(y, 0)


def _np64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def test_dilated_bottleneck_equals_direct_dilated_convolution():
    x = np.random.default_rng(0).normal(size=(2, 9, 10, 16)).astype(np.float32)
    block = resnet.Bottleneck(4, dilation=2)
    variables = mt.random_variables(block, x, train=False)
    got = jax.jit(lambda v: block.apply(v, x, False))(variables)
    p, s = _np64(variables["params"]), _np64(variables["batch_stats"])
    y = _relu(_np_bn(_np_conv(x, p["conv1"]["kernel"]), p["bn1"], s["bn1"]))
    y = _relu(_np_bn(_np_conv(y, p["conv2"]["kernel"], dilation=2), p["bn2"], s["bn2"]))
    y = _np_bn(_np_conv(y, p["conv3"]["kernel"]), p["bn3"], s["bn3"])
    np.testing.assert_allclose(got, _relu(y + x), atol=1e-4, rtol=1e-4)
    undilated = resnet.Bottleneck(4).apply(variables, x, False)
    assert not np.allclose(got, undilated, atol=1e-3)


def test_aspp_branches_and_image_pooling_match_numpy():
    assert deeplab.ASPP().rates == (6, 12, 18)
    rates = (1, 2, 4)  # small enough for the dilated taps to land inside a 7x9 map
    aspp = deeplab.ASPP(features=3, rates=rates)
    x = np.random.default_rng(1).normal(size=(2, 7, 9, 5)).astype(np.float32)
    variables = mt.random_variables(aspp, x)
    got = jax.jit(lambda v: aspp.apply(v, x))(variables)
    p, s = _np64(variables["params"]), _np64(variables["batch_stats"])

    def cbr(y, conv, bn, dilation=1):
        return _relu(_np_bn(_np_conv(y, p[conv]["kernel"], dilation), p[bn], s[bn]))

    branches = [cbr(x, "convs_0_0", "convs_0_1")]
    branches += [cbr(x, f"convs_{i}_0", f"convs_{i}_1", r) for i, r in enumerate(rates, 1)]
    pooled = cbr(x.mean(axis=(1, 2), keepdims=True), "convs_4_1", "convs_4_2")
    branches.append(np.broadcast_to(pooled, branches[0].shape))
    want = cbr(np.concatenate(branches, -1), "project_0", "project_1")
    assert got.shape == (2, 7, 9, 3)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)


def test_aspp_dropout_draws_from_the_sample_stream_in_train_mode_only():
    aspp = deeplab.ASPP(features=8, rates=(1, 2, 3))
    x = np.random.default_rng(2).normal(size=(2, 6, 7, 4)).astype(np.float32)
    variables = mt.random_variables(aspp, x)

    def train(v, key, module=aspp):
        out, _ = module.apply(v, x, True, rngs={"sample": key}, mutable=["batch_stats"])
        return out

    run = jax.jit(train)
    kept = jax.jit(lambda v, k: train(v, k, aspp.clone(dropout=0.0)))(variables, jax.random.key(0))
    a, b = run(variables, jax.random.key(0)), run(variables, jax.random.key(1))
    np.testing.assert_array_equal(a, run(variables, jax.random.key(0)))
    assert not np.array_equal(a, b)
    alive = np.asarray(kept) > 0
    dropped = np.asarray(a)[alive] == 0
    assert 0.35 < dropped.mean() < 0.65
    np.testing.assert_allclose(
        np.asarray(a)[alive][~dropped], 2 * np.asarray(kept)[alive][~dropped]
    )
    # Eval mode: no rng needed, no dropout.
    np.testing.assert_array_equal(
        aspp.apply(variables, x, False), aspp.clone(dropout=0.0).apply(variables, x, False)
    )
    with pytest.raises(ValueError, match="'sample' rng stream"):
        aspp.apply(variables, x, True, mutable=["batch_stats"])


# --- key maps ----------------------------------------------------------------------------------


def _zeros(net, x):
    shapes = jax.eval_shape(net.init, jax.random.key(0), x)
    return jax.tree.map(lambda s: np.zeros(s.shape, np.float32), shapes)


def _torch_shapes(model, prefixes, drop=()):
    return {
        k: tuple(v.shape)
        for k, v in model.state_dict().items()
        if k.startswith(prefixes) and not k.startswith(drop) and "num_batches" not in k
    }


def test_key_maps_are_the_torchvision_layouts():
    x = jnp.zeros((1, 64, 64, 3))
    dl = tvr.DeepLabV3(BLOCKS, div=DIV)
    for name, prefixes in (
        ("deeplab_r50", ("backbone.",)),
        ("deeplab_r50_aspp", ("backbone.", "classifier.0.")),
    ):
        net = backbones.build(name, blocks=BLOCKS, width_divisor=DIV)
        got = {k: v.shape for k, v in backbones.torchvision_state(_zeros(net, x), name).items()}
        assert got == _torch_shapes(dl, prefixes), name
    # VGG16 with fcn_head: the whole torchvision vgg16 but classifier.6, fc6/fc7 as Linear.
    net = backbones.build("vgg16", width_divisor=DIV, fcn_head=True)
    rng = np.random.default_rng(3)
    variables = jax.tree.map(lambda z: rng.normal(size=z.shape).astype(np.float32), _zeros(net, x))
    state = backbones.torchvision_state(variables, "vgg16")
    tv = tvr.VGG16(div=DIV, fc=4096 // DIV)
    assert {k: v.shape for k, v in state.items()} == _torch_shapes(
        tv, ("features.", "classifier."), ("classifier.6",)
    )
    flat = {(p[0], "enc", *p[1:]): v for p, v in torch_keys.flatten_variables(variables).items()}
    zeros = {p: np.zeros_like(v) for p, v in flat.items()}
    filled = backbones.torchvision_init(state, zeros, [("enc", "vgg16")], "round trip")
    assert set(filled) == set(flat)
    for path, value in filled.items():
        np.testing.assert_array_equal(value, flat[path], err_msg=torch_keys.path_str(path))


# --- loading torchvision state dicts into HS2S, forward parity ---------------------------------


def _cfg(backbone, blocks=BLOCKS):
    return ml_collections.ConfigDict(
        {
            "name": "hs2s",
            "num_classes": 6,
            "width_divisor": DIV,
            "dtype": "float32",
            "backbone_init": "",
            "backbone": backbone,
            "num_ch": 1024,
            "blocks": blocks,
        }
    )


def _load(sd, cfg, tmp_path, name="file.pth"):
    path = str(tmp_path / name)
    torch.save(sd, path)
    before = mt.random_variables(models.build(cfg))
    after = backbone_init.apply(before, path, cfg)
    fb, fa = torch_keys.flatten_variables(before), torch_keys.flatten_variables(after)
    changed = {p for p in fb if not np.array_equal(np.asarray(fb[p]), np.asarray(fa[p]))}
    return after, changed


def _n_tensors(sd, prefixes):
    return sum(1 for k in sd if k.startswith(prefixes) and "num_batches" not in k)


def _nchw(x):
    return torch.as_tensor(np.ascontiguousarray(np.moveaxis(x, -1, 1)))


def _nhwc(t):
    return np.moveaxis(t.detach().numpy(), 1, -1)


def _inputs(h, w, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, h, w, 3)).astype(np.float32)
    mask = (rng.uniform(size=(2, h, w, 1)) > 0.5).astype(np.float32)
    return x, mask


def _reduction(variables, scope, cin):
    """The encoder's reduce_channel_ + reduce_bn as torch modules, filled from `variables`."""
    conv, bn = torch.nn.Conv2d(cin, 1024 // DIV, 1), torch.nn.BatchNorm2d(1024 // DIV)
    tr.load_flax_into_torch(conv, variables, prefix=f"{scope}.reduce_channel_.")
    tr.load_flax_into_torch(bn, variables, prefix=f"{scope}.reduce_bn.")
    return lambda t: torch.relu(bn.eval()(conv(t)))


def _check_encoder(variables, scope, backbone, x, mask, want):
    sub = {c: variables[c][scope] for c in ("params", "batch_stats")}
    enc = HS2SEncoder(backbone, blocks=BLOCKS, width_divisor=DIV)
    got = jax.jit(lambda v: enc.apply(v, x, mask, False))(sub)
    assert set(got) == set(want)
    for key, w in want.items():
        np.testing.assert_allclose(got[key], w, atol=TOL, rtol=1e-4, err_msg=f"{scope} {key}")


def _hs2s_stem_encoder(trunk, variables, scope, out_ch):
    """The authors' EncoderExtra over a torchvision-layout trunk, new layers from `variables`."""
    ref = tr.EncoderExtra(copy.deepcopy(trunk), out_ch).eval()
    for new in NEW_LAYERS:
        tr.load_flax_into_torch(getattr(ref, new), variables, prefix=f"{scope}.{new}.")
    return ref


@pytest.fixture(scope="module")
def tv_deeplab():
    return tr.randomize_(tvr.DeepLabV3(BLOCKS, div=DIV), 7).eval()


def test_deeplabv3_state_dict_into_aspp_variant_reproduces_torch_at_os16(tv_deeplab, tmp_path):
    sd = tv_deeplab.state_dict()
    after, changed = _load(sd, _cfg("deeplab_r50_aspp"), tmp_path, "deeplabv3.pth")
    owned = {"conv1", "bn", "conv2", "conv3", "conv4", "conv5", "aspp"}
    assert all(p[1] in ("encoder_ref", "encoder") and p[2] in owned for p in changed)
    assert len(changed) == 2 * _n_tensors(sd, ("backbone.", "classifier.0."))
    # The file was trained at output stride 8 (rates 12/24/36); the same weights at 16.
    os16 = tvr.DeepLabV3(BLOCKS, div=DIV, rates=(6, 12, 18), dilate=(0, 0, 1)).eval()
    os16.load_state_dict(sd)
    x, mask = _inputs(128, 160)  # f32 at 8x10: the rate-6 taps land inside
    for scope in ("encoder_ref", "encoder"):
        ref = _hs2s_stem_encoder(os16.backbone, after, scope, 1024 // DIV)
        reduce = _reduction(after, scope, 256 // DIV)
        with torch.no_grad():
            _, *pyramid = ref(_nchw(x), _nchw(mask))
            e = reduce(os16.classifier[0](pyramid[0]))
        want = dict(zip(("f32", "f16", "f8", "f4", "f2"), map(_nhwc, pyramid)), e=_nhwc(e))
        assert want["f32"].shape[1:3] == want["f16"].shape[1:3] == (8, 10)
        _check_encoder(after, scope, "deeplab_r50_aspp", x, mask, want)


def test_deeplabv3_state_dict_into_plain_variant_ignores_the_heads(tv_deeplab, tmp_path):
    sd = tv_deeplab.state_dict()
    _, changed = _load(sd, _cfg("deeplab_r50"), tmp_path)
    assert {p[2] for p in changed} == {"conv1", "bn", "conv2", "conv3", "conv4", "conv5"}
    assert len(changed) == 2 * _n_tensors(sd, ("backbone.",))


def test_imagenet_resnet50_into_both_deeplab_variants(tmp_path):
    tv = tr.randomize_(tvr.ResNet(BLOCKS, div=DIV), 8).eval()
    sd = tv.state_dict()
    trunk = {"conv1", "bn", "conv2", "conv3", "conv4", "conv5"}
    # ASPP variant: the trunk from the file, ASPP keeps its init (the file has none).
    _, changed = _load(sd, _cfg("deeplab_r50_aspp"), tmp_path)
    assert {p[2] for p in changed} == trunk
    assert len(changed) == 2 * _n_tensors(sd, ("conv1", "bn1", "layer"))
    after, changed = _load(sd, _cfg("deeplab_r50"), tmp_path)
    assert len(changed) == 2 * _n_tensors(sd, ("conv1", "bn1", "layer"))
    dilated = tvr.ResNet(BLOCKS, div=DIV, replace_stride_with_dilation=(False, False, True))
    dilated.load_state_dict(sd)
    x, mask = _inputs(64, 96)
    scope = "encoder"
    ref = _hs2s_stem_encoder(dilated.eval(), after, scope, 1024 // DIV)
    for new in ("reduce_channel_", "reduce_bn"):
        tr.load_flax_into_torch(getattr(ref, new), after, prefix=f"{scope}.{new}.")
    with torch.no_grad():
        outs = ref(_nchw(x), _nchw(mask))
    want = dict(zip(("e", "f32", "f16", "f8", "f4", "f2"), map(_nhwc, outs)))
    assert want["f32"].shape[1:3] == (4, 6)
    _check_encoder(after, scope, "deeplab_r50", x, mask, want)


def test_deeplabv3_problems_all_listed(tv_deeplab, tmp_path):
    sd = dict(tv_deeplab.state_dict())
    del sd["classifier.0.convs.2.1.running_var"]
    sd["classifier.0.project.0.weight"] = torch.zeros(3, 3, 1, 1)
    sd["classifier.0.convs.5.0.weight"] = torch.zeros(16, 128, 1, 1)  # a branch we do not have
    sd["conv1.weight"] = sd["backbone.conv1.weight"]  # a second layout of the same tensor
    cfg = _cfg("deeplab_r50_aspp")
    path = str(tmp_path / "bad.pth")
    torch.save(sd, path)
    with pytest.raises(torch_keys.ConversionError) as err:
        backbone_init.apply(mt.random_variables(models.build(cfg)), path, cfg)
    msg = str(err.value)
    assert "batch_stats/encoder_ref/aspp/convs_2_1/var" in msg  # missing
    assert "encoder.aspp.project_0.weight: torch shape (3, 3, 1, 1)" in msg  # mis-shaped
    assert "classifier.0.convs.5.0.weight" in msg and "\n    conv1.weight" in msg  # unexpected
    assert "aux_classifier" not in msg and "classifier.4" not in msg  # ignored heads


def test_imagenet_vgg16_into_hs2s_vgg16_with_fc6_fc7(tmp_path):
    tv = tr.randomize_(tvr.VGG16(div=DIV, fc=4096 // DIV), 9).eval()
    sd = tv.state_dict()
    after, changed = _load(sd, _cfg("vgg16", blocks=None), tmp_path, "vgg16.pth")
    assert len(changed) == 2 * (26 + 4)  # 13 convs and fc6 / fc7, weight + bias, both encoders
    assert {p[2] for p in changed if p[2].startswith("fc")} == {"fc6", "fc7"}
    x, mask = _inputs(64, 96)
    scope = "encoder"
    mask_w = torch_keys.to_torch_layout(np.asarray(after["params"][scope]["mask_conv"]["kernel"]))
    reduce = _reduction(after, scope, 4096 // DIV)
    pyramid, t = [], _nchw(x)
    with torch.no_grad():
        for i, layer in enumerate(tv.features):
            t = layer(t)
            if i == 0:  # HS2S's mask conv joins conv1_1 before its ReLU
                t = t + torch.nn.functional.conv2d(_nchw(mask), torch.as_tensor(mask_w), padding=1)
            if isinstance(layer, torch.nn.MaxPool2d):
                pyramid.append(_nhwc(t))
        e = _nhwc(reduce(tv.fcn(t)))
    want = dict(zip(("f2", "f4", "f8", "f16", "f32"), pyramid), e=e)
    sub = {c: after[c][scope] for c in ("params", "batch_stats")}
    got = jax.jit(lambda v: HS2SEncoder("vgg16", width_divisor=DIV).apply(v, x, mask, False))(sub)
    assert set(got) == set(want)
    for key, w in want.items():
        np.testing.assert_allclose(got[key], w, atol=TOL, rtol=1e-4, err_msg=key)


# --- in HS2S -----------------------------------------------------------------------------------


def test_tiny_hs2s_with_aspp_trains_with_dropout_per_sample_key():
    fam = models.family("hs2s")
    model = models.build({"name": "hs2s", **fam.tiny, "backbone": "deeplab_r50_aspp"})
    frames, masks = mt.clip(1, 2, 64, 64)
    variables = mt.random_variables(model, frames, masks)

    def run(v, key):
        out, _ = model.apply(
            v, frames, masks, train=True, rngs={"sample": key}, mutable=["batch_stats"]
        )
        return out["logits"]

    run = jax.jit(run)
    a = run(variables, jax.random.key(0))
    assert a.shape == (1, 1, 64, 64, 1) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, run(variables, jax.random.key(0)))
    assert not np.allclose(a, run(variables, jax.random.key(1)))
    with pytest.raises(ValueError, match="'sample' rng stream"):
        model.apply(variables, frames, masks, train=True, mutable=["batch_stats"])
