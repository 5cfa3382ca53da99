"""S2S and S2S++ models (rnn_vos_jax.models.s2s): carries, torch parity, variants, parameter counts.

The generic checks (scan == streaming, gradients, bfloat16, unrolled scan, conversion round
trip) are in test_contract.py."""

import functools

import jax
import jax.numpy as jnp
import model_testing as mt
import numpy as np
import pytest

from rnn_vos_jax import models
from rnn_vos_jax.models import losses, s2s
from rnn_vos_jax.models.backbones.vgg import VGG16_BLOCKS
from rnn_vos_jax.models.layers import upsample2x

B, T, H, W, K = 2, 3, 64, 64, 42


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def _batch(seed=0, b=B, t=T, h=H, w=W):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (b, t, h, w, 3)).astype(np.uint8)
    masks = np.zeros((b, t, h, w, 1), np.float32)
    masks[:, :, h // 4 : h // 2, w // 4 : 3 * w // 4] = 1.0
    return frames, masks


def _tiny(name, **fields):
    return models.build({"name": name, **models.family(name).tiny, **fields})


def _loss_and_out(model, variables, frames, masks, dist_labels):
    out = model.apply(
        variables, frames, masks, sample_prob=0.9, train=True, rngs={"sample": jax.random.key(2)}
    )
    valid = jnp.ones(out["logits"].shape[:2], bool)
    loss, _ = losses.sequence_loss(out["logits"], out["distance"], masks[:, 1:], dist_labels, valid)
    return loss, out


def _check_grads(grads):
    for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
        g = np.asarray(g)
        assert np.all(np.isfinite(g)), path
        assert np.any(g != 0), f"zero gradient for {jax.tree_util.keystr(path)}"


@pytest.fixture(scope="module")
def s2spp_run():
    model = _tiny("s2s_pp")
    frames, masks = _batch()
    variables = mt.random_variables(model, frames, masks)
    labels = np.random.default_rng(1).integers(0, K, (B, T - 1, H, W)).astype(np.int32)
    run = functools.partial(_loss_and_out, model)
    loss, out = jax.jit(run)(variables, frames, masks, labels)
    return model, variables, frames, masks, loss, out


def test_s2spp_outputs_and_initializer_carry(s2spp_run):
    model, variables, frames, masks, loss, out = s2spp_run
    assert out["logits"].shape == (B, T - 1, H, W, 1) and out["logits"].dtype == jnp.float32
    assert out["distance"].shape == (B, T - 1, H, W, K) and out["distance"].dtype == jnp.float32
    assert np.isfinite(float(loss))
    init_carry = functools.partial(model.apply, method="init_carry")
    carry = jax.jit(init_carry)(variables, frames[:, 0], masks[:, 0])
    shapes = {k: tuple(x.shape for x in v) for k, v in carry.items()}
    assert shapes == {
        "convlstm": ((B, 2, 2, 16),) * 2,
        "convlstm_middle": ((B, 4, 4, 16),) * 2,
        "convlstm_3": ((B, 8, 8, 8),) * 2,
    }
    # The authors' initializer ReLUs both h and c, so c >= 0 and the cell's ReLU(c) is c.
    assert all(float(x.min()) >= 0 for v in carry.values() for x in v)
    assert np.std(np.asarray(out["logits"])) > 0


def _torch_s2spp_reference(torch, params, frames, masks):
    """Independent torch forward of S2S++ written from the layer spec (NCHW), for parity."""
    fn = torch.nn.functional
    relu, sig = torch.relu, torch.sigmoid

    def conv(x, p, pad):
        w = torch.from_numpy(np.array(p["kernel"])).permute(3, 2, 0, 1)
        return fn.conv2d(x, w, torch.from_numpy(np.array(p["bias"])), padding=pad)

    def trunk(x, p):
        feats = []
        for b, block in enumerate(VGG16_BLOCKS):
            for j in range(len(block)):
                x = relu(conv(x, p[f"encoder_{b}_{2 * j}"], 1))
            x = fn.max_pool2d(x, 2)
            feats.append(x)
        return feats

    def up(x):
        return fn.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)

    def lstm(x, state, p, pad):
        h, c = state
        i, f, o, g = torch.chunk(conv(torch.cat([x, h], 1), p["conv"], pad), 4, dim=1)
        c = sig(f) * c + sig(i) * sig(g)
        return sig(o) * relu(c), c

    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    imgs = (torch.from_numpy(frames.astype(np.float32)).permute(0, 1, 4, 2, 3) / 255 - mean) / std
    p0 = params["initializer"]
    f0 = trunk(
        torch.cat([imgs[:, 0], torch.from_numpy(masks[:, 0]).permute(0, 3, 1, 2)], 1),
        p0["vgg_backbone"],
    )
    x = relu(conv(relu(conv(f0[4], p0["mid_layer_0"], 3)), p0["mid_layer_2"], 0))
    s1 = relu(conv(x, p0["h_1"], 0)), relu(conv(x, p0["c_1"], 0))
    x = relu(conv(x, p0["reduce_conv"], 0))
    u = relu(conv(up(x), p0["upsample_conv"], 1))
    u = relu(conv(torch.cat([u, f0[3]], 1), p0["cat_conv"], 0))
    s2 = relu(conv(u, p0["h_2"], 0)), relu(conv(u, p0["c_2"], 0))
    v = relu(conv(up(u), p0["upsample_conv_2"], 1))
    v = relu(conv(torch.cat([v, f0[2]], 1), p0["cat_conv_2"], 0))
    s3 = relu(conv(v, p0["h_3"], 0)), relu(conv(v, p0["c_3"], 0))
    pe, pd = params["encoder"], params["decoder"]
    logits, dists = [], []
    for t in range(1, frames.shape[1]):
        f = trunk(imgs[:, t], pe["vgg_backbone"])
        e = relu(conv(relu(conv(f[4], pe["out_0"], 0)), pe["out_2"], 0))
        s1 = lstm(e, s1, params["convlstm"], 1)
        s2 = lstm(f[3], s2, params["convlstm_middle"], 1)
        s3 = lstm(f[2], s3, params["convlstm_3"], 2)
        x = s1[0]
        stages = [("1", "11", [f[4]]), ("2", "22", [f[3], s2[0]]), ("3_", "33", [f[2], s3[0]])]
        stages += [("4", "44", [f[1]]), ("5", "55", [f[0]])]
        for a, b, skips in stages:
            x = relu(conv(torch.cat([x] + skips, 1), pd[f"conv_{a}"], 0))
            x = relu(conv(up(x), pd[f"conv_{b}"], 2))
        dist = conv(x, pd["distance_classifier_"], 1)
        seg = conv(x, pd["segmentation_branch_"], 1)
        logits.append(conv(relu(torch.cat([dist, seg], 1)), pd["merge_"], 0))
        dists.append(dist)
    to_np = lambda xs: torch.stack(xs, 1).permute(0, 1, 3, 4, 2).numpy()
    return to_np(logits), to_np(dists)


def test_s2spp_matches_independent_torch_forward(s2spp_run):
    torch = pytest.importorskip("torch")
    _, variables, frames, masks, _, out = s2spp_run
    with torch.no_grad():
        logits, dists = _torch_s2spp_reference(torch, variables["params"], frames, masks)
    for got, ref in ((out["logits"], logits), (out["distance"], dists)):
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * np.abs(ref).max())


def test_s2s_baseline_shapes_and_gradients():
    # Random He-scaled weights: at tiny widths the authors' from-scratch inits (torch default)
    # shrink activations ~6x per ReLU layer, so some gradients would be exactly zero by
    # underflow; in practice the trunks start from ImageNet weights.
    # remat=True: the backward pass recomputes each scanned step (same gradients, less memory).
    model = _tiny("s2s", remat=True)
    frames, masks = _batch(1, t=3)
    variables = mt.random_variables(model, frames, masks, seed=1)
    params = variables["params"]
    assert set(params) == {"initializer", "encoder", "convlstm", "decoder"}
    assert set(params["initializer"]) == {
        "vgg_backbone",
        "mid_layer_0",
        "mid_layer_2",
        "h_1",
        "c_1",
    }
    assert "mask_head" in params["decoder"] and "merge_" not in params["decoder"]
    grad_fn = jax.value_and_grad(functools.partial(_loss_and_out, model), has_aux=True)
    (loss, out), grads = jax.jit(grad_fn)(variables, frames, masks, None)
    assert out["logits"].shape == (B, T - 1, H, W, 1) and out["distance"] is None
    assert np.isfinite(float(loss))
    _check_grads(grads)


@pytest.mark.parametrize(
    "kwargs,memories,dist_shape",
    [
        ({"num_skip_memories": 1, "use_distance": False}, {"convlstm", "convlstm_middle"}, None),
        ({"num_skip_memories": 0, "num_classes": 6}, {"convlstm"}, (B, T - 1, H, W, 6)),
        ({"encoder_head": "fcn_7x7", "cell": "tanh", "remat": True}, None, (B, T - 1, H, W, K)),
    ],
)
def test_variants_shapes(kwargs, memories, dist_shape):
    model = _tiny("s2s_pp", **kwargs)
    frames, masks = _batch()
    variables = mt.variable_shapes(model, frames, masks)
    params = variables["params"]
    if memories is not None:
        assert {k for k in params if k.startswith("convlstm")} == memories
    if kwargs.get("encoder_head") == "fcn_7x7":
        assert {"fc6", "fc7", "reduce_conv"} <= set(params["encoder"])
    out = jax.eval_shape(lambda v, f, m: model.apply(v, f, m), variables, frames, masks)
    assert out["logits"].shape == (B, T - 1, H, W, 1)
    assert (out["distance"] is None) == (dist_shape is None)
    if dist_shape is not None:
        assert out["distance"].shape == dist_shape


def _conv(cin, cout, k):
    return cin * cout * k * k + cout


# Counted from the authors' RS2S modules (torch named_parameters), layer by layer.
_TRUNK = 14_714_688  # torchvision vgg16 features
_FC67 = [_conv(512, 4096, 7), _conv(4096, 4096, 1)]  # initializer mid_layer (fc6, fc7)
_ENCODER = _TRUNK + _conv(512, 200704, 1) + _conv(200704, 512, 1)
_DEC_COMMON = [_conv(1024, 512, 1), _conv(512, 512, 5), _conv(512, 256, 5), _conv(256, 128, 5)]
_DEC_COMMON += [_conv(256, 128, 1), _conv(128, 64, 5), _conv(128, 64, 1), _conv(64, 64, 5)]
_INIT_MEM2 = [3 * _conv(4096, 512, 1), _conv(512, 512, 3), _conv(1024, 512, 1)]
_INIT_MEM2 += [2 * _conv(512, 512, 1), _conv(512, 256, 3), _conv(512, 256, 1)]
_INIT_MEM2 += [2 * _conv(256, 256, 1)]
_DEC_HEADS = [_conv(1536, 512, 1), _conv(768, 256, 1), 2 * _conv(64, 42, 3), _conv(84, 1, 1)]
EXPECTED = {
    "s2s_pp": {
        "initializer": _TRUNK + 9 * 64 + sum(_FC67) + sum(_INIT_MEM2),
        "encoder": _ENCODER,
        "convlstm": _conv(1024, 2048, 3),
        "convlstm_middle": _conv(1024, 2048, 3),
        "convlstm_3": _conv(512, 1024, 5),
        "decoder": sum(_DEC_COMMON) + sum(_DEC_HEADS),
    },
    "s2s": {
        "initializer": _TRUNK + 9 * 64 + sum(_FC67) + 2 * _conv(4096, 512, 1),
        "encoder": _ENCODER,
        "convlstm": _conv(1024, 2048, 3),
        "decoder": sum(_DEC_COMMON) + _conv(1024, 512, 1) + _conv(512, 256, 1) + _conv(64, 1, 3),
    },
}


@pytest.mark.parametrize("name,total", [("s2s_pp", 429_260_841), ("s2s", 389_950_145)])
def test_full_size_parameter_counts_equal_the_authors(name, total):
    model = models.build({"name": name})
    frames = jax.ShapeDtypeStruct((1, 2, 256, 448, 3), jnp.uint8)
    masks = jax.ShapeDtypeStruct((1, 2, 256, 448, 1), jnp.float32)
    variables = mt.variable_shapes(model, frames, masks)
    assert set(variables) == {"params"}  # no BatchNorm anywhere
    counts = {k: _count(v) for k, v in variables["params"].items()}
    assert counts == EXPECTED[name]
    assert sum(counts.values()) == total
    out = jax.eval_shape(lambda v, f, m: model.apply(v, f, m), variables, frames, masks)
    assert out["logits"].shape == (1, 1, 256, 448, 1)


def test_build_bad_inputs_and_align_corners_upsampling():
    model = _tiny("s2s_pp", dtype="bfloat16")  # the name of a dtype
    assert isinstance(model, s2s.S2SPlusPlus) and model.num_skip_memories == 2
    assert model.dtype == jnp.bfloat16
    base = models.build({"name": "s2s"})
    assert isinstance(base, s2s.S2S) and base.num_skip_memories == 0 and not base.use_distance
    frames, masks = _batch(t=2)
    with pytest.raises(ValueError, match="T >= 2"):
        mt.variable_shapes(model, frames[:, :1], masks[:, :1])
    with pytest.raises(ValueError, match="masks must be"):
        mt.variable_shapes(model, frames, masks[..., :32, :])
    with pytest.raises(ValueError, match="multiples of 32"):
        mt.variable_shapes(model, frames[:, :, :48], masks[:, :, :48])
    with pytest.raises(ValueError, match="num_skip_memories"):
        mt.variable_shapes(model.clone(num_skip_memories=3), frames, masks)
    with pytest.raises(ValueError, match="config.model.cell 'gru'; known"):
        mt.variable_shapes(model.clone(cell="gru"), frames, masks)
    # align_corners=True (the S2S++ decoder/initializer): [0, 1] -> [0, 1/3, 2/3, 1].
    x = jnp.asarray([0.0, 1.0]).reshape(1, 1, 2, 1)
    got = upsample2x(x, align_corners=True)[0, 0, :, 0]
    np.testing.assert_allclose(got, [0, 1 / 3, 2 / 3, 1], atol=1e-6)
