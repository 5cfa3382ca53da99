"""Fusion blocks 'cosine' and 'axial' and the axial attention layer: known answers against
explicit-loop NumPy implementations (float64), errors, and full-size shapes and sizes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import model_testing as mt
import numpy as np
import pytest

from rnn_vos_jax.models import fusion
from rnn_vos_jax.models.axial_attention import AxialAttention

EPS = 1e-5  # BatchNorm epsilon (torch's)


def _np(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def _bn(x, params, stats, train):
    """torch BatchNorm over the last axis: batch statistics (biased variance) or running ones."""
    axes = tuple(range(x.ndim - 1))
    mean, var = (x.mean(axes), x.var(axes)) if train else (stats["mean"], stats["var"])
    return (x - mean) / np.sqrt(var + EPS) * params["scale"] + params["bias"]


def _with_big_tables(variables, seed=5):
    """The random variables with N(0, 1) relative tables, so a misread table shows."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        if path[-1].key == "relative":
            return rng.normal(0, 1, leaf.shape).astype(np.float32)
        return leaf

    return jax.tree_util.tree_map_with_path(fill, variables)


# ----------------------------------------------------------------------------- cosine


def _np_cosine(query, reference, params):
    n, h, w, c = query.shape
    hq, r = query.reshape(n, h * w, c), reference.reshape(n, -1, c)
    unit = lambda v: v / np.sqrt(max(v @ v, 1e-12))
    kernel, bias = params["conv"]["kernel"][0, 0], params["conv"]["bias"]
    out = np.zeros((n, h * w, kernel.shape[1]))
    for b in range(n):
        for p in range(h * w):
            sims = [unit(hq[b, p]) @ unit(r[b, j]) for j in range(r.shape[1])]
            agg, total = np.zeros(c), 0.0
            for j, s in enumerate(sims):
                agg += max(s, 0.0) * r[b, j]
                total += max(s, 0.0)
            feat = np.concatenate([hq[b, p], agg / (total + 1e-6), [max(sims)]])
            out[b, p] = np.maximum(feat @ kernel + bias, 0.0)
    return out.reshape(n, h, w, -1)


def test_cosine_matches_numpy_loops():
    rng = np.random.default_rng(0)
    query = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    reference = rng.normal(size=(2, 2, 5, 5)).astype(np.float32)  # any reference size
    query[0, 1, 2] = 0.0  # zero vectors: guarded norms
    reference[1, 0, 3] = 0.0
    block = fusion.build("cosine", features=7)
    variables = mt.random_variables(block, query, reference)
    got = jax.jit(block.apply)(variables, query, reference)
    assert got.shape == (2, 3, 4, 7)
    want = _np_cosine(*_np((query, reference)), _np(variables["params"]))
    mt.assert_close(got, want)
    grads = jax.grad(lambda q: jnp.sum(block.apply(variables, q, reference)))(query)
    assert np.isfinite(grads).all()


def test_cosine_rejects_unequal_widths():
    block = fusion.build("cosine", features=4)
    q, r = jnp.zeros((1, 2, 2, 3)), jnp.zeros((1, 2, 2, 5))
    with pytest.raises(ValueError, match=r"\(1, 2, 2, 3\).*\(1, 2, 2, 5\)"):
        jax.eval_shape(lambda: block.init(jax.random.key(0), q, r))


# ----------------------------------------------------------------------------- axial


def _np_axial(x, params, stats, axis, train, heads=8):
    """Axial-DeepLab's AxialAttention with explicit loops over lines, heads and positions."""
    n, hh, ww, _ = x.shape
    height = axis == "height"
    length, others = (hh, ww) if height else (ww, hh)
    line = (lambda a, b, o: a[b, :, o]) if height else (lambda a, b, o: a[b, o, :])
    qkv = _bn(x @ params["qkv_transform"]["kernel"], params["bn_qkv"], stats["bn_qkv"], train)
    feats = qkv.shape[-1] // 2
    gp, half, rel = feats // heads, feats // heads // 2, params["relative"]
    off = lambda a, b: a - b + length - 1  # table column of offset a - b

    def qkv_of(b, o, g):
        seq = line(qkv, b, o)[:, g * 2 * gp : (g + 1) * 2 * gp]
        return seq[:, :half], seq[:, half:gp], seq[:, gp:]

    sims = np.zeros((n, others, length, length, 3 * heads))
    for b in range(n):
        for o in range(others):
            for g in range(heads):
                q, k, _ = qkv_of(b, o, g)
                for i in range(length):
                    for j in range(length):
                        sims[b, o, i, j, g] = q[i] @ k[j]
                        sims[b, o, i, j, heads + g] = q[i] @ rel[:half, off(i, j)]
                        sims[b, o, i, j, 2 * heads + g] = k[j] @ rel[half:gp, off(j, i)]
    sims = _bn(sims, params["bn_similarity"], stats["bn_similarity"], train)
    logits = sims[..., :heads] + sims[..., heads : 2 * heads] + sims[..., 2 * heads :]
    attn = np.exp(logits - logits.max(3, keepdims=True))
    attn /= attn.sum(3, keepdims=True)

    out = np.zeros((n, others, length, 2 * feats))
    for b in range(n):
        for o in range(others):
            for g in range(heads):
                _, _, v = qkv_of(b, o, g)
                chans = 2 * (g * gp + np.arange(gp))  # a.v at even, a.rv at odd channels
                for i in range(length):
                    for j in range(length):
                        out[b, o, i, chans] += attn[b, o, i, j, g] * v[j]
                        out[b, o, i, chans + 1] += attn[b, o, i, j, g] * rel[gp:, off(i, j)]
    out = _bn(out, params["bn_output"], stats["bn_output"], train)
    out = out[..., 0::2] + out[..., 1::2]
    img = np.zeros((n, hh, ww, feats))
    for b in range(n):
        for o in range(others):
            for i in range(length):
                img[(b, i, o) if height else (b, o, i)] = out[b, o, i]
    return img


def _apply(module, variables, x, train):
    if train:
        return jax.jit(lambda v, a: module.apply(v, a, train=True, mutable=["batch_stats"])[0])(
            variables, x
        )
    return jax.jit(module.apply)(variables, x)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("axis", ["height", "width"])
def test_axial_attention_matches_numpy_loops(axis, train):
    x = np.random.default_rng(1).normal(size=(2, 3, 5, 6)).astype(np.float32)  # H != W
    layer = AxialAttention(features=32, axis=axis)  # 8 heads of q/k 2, v 4
    variables = _with_big_tables(mt.random_variables(layer, x))
    want_table = (8, 2 * (3 if axis == "height" else 5) - 1)
    assert variables["params"]["relative"].shape == want_table
    got = _apply(layer, variables, x, train)
    v = _np(variables)
    mt.assert_close(got, _np_axial(np.float64(x), v["params"], v["batch_stats"], axis, train))


def test_axial_attention_stride_pools_and_checks():
    x = jax.random.normal(jax.random.key(2), (1, 4, 6, 3))
    layer = AxialAttention(features=16, axis="width")
    variables = mt.random_variables(layer, x)
    pooled = jax.jit(layer.clone(stride=2).apply)(variables, x)
    want = nn.avg_pool(layer.apply(variables, x), (2, 2), strides=(2, 2))
    assert pooled.shape == (1, 2, 3, 16)
    mt.assert_close(pooled, want)
    init = lambda m, a: jax.eval_shape(lambda: m.init(jax.random.key(0), a))
    init(layer.clone(span=6), x)
    with pytest.raises(ValueError, match="span=4 .* 6"):
        init(layer.clone(span=4), x)
    for features in (8, 24):  # 1 and 3 channels per head: q/k cannot take half
        with pytest.raises(ValueError, match=f"features={features}, heads=8"):
            init(layer.clone(features=features), x)
    with pytest.raises(ValueError, match="training resolution"):
        jax.eval_shape(layer.apply, variables, x[:, :, :4])


def test_axial_block_matches_numpy_composition():
    rng = np.random.default_rng(3)
    query = rng.normal(size=(2, 3, 5, 4)).astype(np.float32)
    reference = rng.normal(size=(2, 3, 5, 4)).astype(np.float32)
    block = fusion.build("axial", features=16, width_divisor=16)
    variables = _with_big_tables(mt.random_variables(block, query, reference))
    got = jax.jit(block.apply)(variables, query, reference)
    p, s = _np(variables["params"]), _np(variables["batch_stats"])
    x = np.concatenate(_np((reference, query)), -1) @ p["conv_down"]["kernel"][0, 0]
    x = np.maximum(_bn(x, p["bn1"], s["bn1"], False), 0.0)
    for name, axis in (("height_block", "height"), ("width_block", "width")):
        x = _np_axial(x, p[name], s[name], axis, False)
    mt.assert_close(got, np.maximum(x, 0.0))


# ----------------------------------------------------------------------------- full size


def _axial_layer_size(length, feats=512, heads=8):
    gp = feats // heads
    qkv, bns = feats * 2 * feats, 2 * (2 * feats + 3 * heads + 2 * feats)
    return qkv + bns + 2 * gp * (2 * length - 1)


@pytest.mark.parametrize("hw", [(8, 14), (16, 28)], ids=["s32", "s16"])
@pytest.mark.parametrize("name", ["cosine", "axial"])
def test_full_size_shapes_and_parameter_counts(name, hw):
    block = fusion.build(name, features=512)
    x = jax.ShapeDtypeStruct((1, *hw, 1024), jnp.float32)
    variables = jax.eval_shape(lambda a: block.init(jax.random.key(0), a, a), x)
    out = jax.eval_shape(lambda v, a: block.apply(v, a, a), variables, x)
    assert out.shape == (1, *hw, 512)
    count = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(variables["params"]))
    if name == "cosine":
        want = (2 * 1024 + 1) * 512 + 512
    else:
        want = 2048 * 512 + 2 * 512 + _axial_layer_size(hw[0]) + _axial_layer_size(hw[1])
    assert count == want
