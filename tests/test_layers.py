"""Shared layers and the ConvLSTM: known answers and torch semantics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_vos_jax.models import cells, fusion, layers, recurrent


def test_upsample_align_corners_true_known_answer():
    x = jnp.asarray([0.0, 3.0]).reshape(1, 2, 1, 1)
    y = layers.upsample2x(jnp.broadcast_to(x, (1, 2, 2, 1)), align_corners=True)
    # Source coordinates i * (2 - 1) / (4 - 1) = 0, 1/3, 2/3, 1.
    np.testing.assert_allclose(y[0, :, 0, 0], [0.0, 1.0, 2.0, 3.0], atol=1e-6)


def test_upsample_align_corners_false_known_answer():
    x = jnp.asarray([0.0, 4.0]).reshape(1, 2, 1, 1)
    y = layers.upsample2x(jnp.broadcast_to(x, (1, 2, 2, 1)), align_corners=False)
    # Half-pixel source coordinates -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to index 1).
    np.testing.assert_allclose(y[0, :, 0, 0], [0.0, 1.0, 3.0, 4.0], atol=1e-6)


def test_upsample_matches_jax_image_resize_half_pixel():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 5, 4))
    ours = layers.upsample2x(x, align_corners=False)
    ref = jax.image.resize(x, (2, 6, 10, 4), "bilinear")
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_conv_uses_symmetric_padding_unlike_same():
    x = jax.random.normal(jax.random.PRNGKey(1), (1, 8, 8, 2))
    conv = layers.Conv(3, 3, strides=2)
    v = conv.init(jax.random.PRNGKey(2), x)
    y = conv.apply(v, x)
    k = v["params"]["kernel"]
    sym = jax.lax.conv_general_dilated(
        x, k, (2, 2), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    same = jax.lax.conv_general_dilated(
        x, k, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    np.testing.assert_allclose(y, sym + v["params"]["bias"], atol=1e-5)
    assert not np.allclose(y, same + v["params"]["bias"], atol=1e-3)


def test_conv_torch_default_init_bounds():
    x = jnp.zeros((1, 4, 4, 8))
    v = layers.Conv(16, 3).init(jax.random.PRNGKey(3), x)["params"]
    bound = 1.0 / np.sqrt(3 * 3 * 8)
    assert np.abs(v["kernel"]).max() <= bound and np.abs(v["bias"]).max() <= bound
    assert np.abs(v["kernel"]).max() > 0.8 * bound


def test_batchnorm_torch_semantics():
    x = jax.random.normal(jax.random.PRNGKey(4), (2, 3, 3, 4)) * 2.0 + 1.0
    bn = layers.BatchNorm()
    v = bn.init(jax.random.PRNGKey(0), x, train=True)
    np.testing.assert_array_equal(v["batch_stats"]["mean"], 0.0)  # init does not update
    y, upd = bn.apply(v, x, train=True, mutable=["batch_stats"])
    xn = np.asarray(x).reshape(-1, 4)
    np.testing.assert_allclose(
        y.reshape(-1, 4), (xn - xn.mean(0)) / np.sqrt(xn.var(0) + 1e-5), atol=1e-5
    )
    np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.1 * xn.mean(0), atol=1e-6)
    # Running variance uses the unbiased estimate, as torch does.
    np.testing.assert_allclose(upd["batch_stats"]["var"], 0.9 + 0.1 * xn.var(0, ddof=1), atol=1e-5)
    # Eval mode reads the running statistics and changes nothing.
    v2 = {"params": v["params"], "batch_stats": upd["batch_stats"]}
    y_eval, upd2 = bn.apply(v2, x, train=False, mutable=["batch_stats"])
    st = upd["batch_stats"]
    np.testing.assert_allclose(y_eval, (x - st["mean"]) / np.sqrt(st["var"] + 1e-5), atol=1e-5)
    np.testing.assert_array_equal(upd2["batch_stats"]["var"], st["var"])


def _np_sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


@pytest.mark.parametrize("activation", ["authors", "tanh"])
def test_convlstm_known_answer(activation):
    n, h, w, cin, f = 2, 4, 5, 3, 2
    cell = cells.build(activation, f, kernel_size=1)
    x = jax.random.normal(jax.random.PRNGKey(5), (n, h, w, cin))
    carry = (
        jax.random.normal(jax.random.PRNGKey(6), (n, h, w, f)),
        jnp.abs(jax.random.normal(jax.random.PRNGKey(7), (n, h, w, f))),
    )
    v = cell.init(jax.random.PRNGKey(8), carry, x)
    (h1, c1), y = cell.apply(v, carry, x)
    k = np.asarray(v["params"]["conv"]["kernel"])[0, 0]
    z = np.concatenate([x, carry[0]], -1) @ k + np.asarray(v["params"]["conv"]["bias"])
    zi, zf, zo, zg = np.split(z, 4, -1)  # gate order i, f, o, g
    g = _np_sigmoid(zg) if activation == "authors" else np.tanh(zg)
    c = _np_sigmoid(zf) * np.asarray(carry[1]) + _np_sigmoid(zi) * g
    act = np.maximum(c, 0) if activation == "authors" else np.tanh(c)
    np.testing.assert_allclose(c1, c, atol=1e-5)
    np.testing.assert_allclose(h1, _np_sigmoid(zo) * act, atol=1e-5)
    np.testing.assert_array_equal(y, h1)


def test_scan_over_time_equals_python_loop_and_carries_batch_stats():
    import flax.linen as nn

    class Step(nn.Module):
        @nn.compact
        def __call__(self, carry, x):
            y = layers.BatchNorm(name="bn")(layers.Conv(2, 1, name="conv")(x), train=True)
            return carry + y.sum(), y

    x = jax.random.normal(jax.random.PRNGKey(9), (2, 3, 4, 4, 1))  # [B, T, H, W, C]
    v = Step().init(jax.random.PRNGKey(0), jnp.zeros(()), x[:, 0])
    scanned = recurrent.scan_over_time(Step, train=True)()
    (c_scan, ys), upd = scanned.apply(v, jnp.zeros(()), x, mutable=["batch_stats"])
    c, stats = jnp.zeros(()), v["batch_stats"]
    for t in range(3):
        (c, y), mut = Step().apply(
            {"params": v["params"], "batch_stats": stats}, c, x[:, t], mutable=["batch_stats"]
        )
        stats = mut["batch_stats"]
        np.testing.assert_allclose(ys[:, t], y, atol=1e-5)
    np.testing.assert_allclose(c_scan, c, atol=1e-4)
    np.testing.assert_allclose(upd["batch_stats"]["bn"]["var"], stats["bn"]["var"], atol=1e-5)


def test_gc_fusion_is_relu_of_two_branches_over_reference_then_query():
    query = jax.random.normal(jax.random.PRNGKey(10), (1, 8, 14, 2))
    reference = jax.random.normal(jax.random.PRNGKey(11), (1, 8, 14, 4))
    gc = fusion.build("gc", features=5, width_divisor=64)  # middle width 256 / 64 = 4
    v = gc.init(jax.random.PRNGKey(0), query, reference)
    y = gc.apply(v, query, reference)
    assert y.shape == (1, 8, 14, 5) and float(y.min()) >= 0
    p = v["params"]
    assert p["conv_l1"]["kernel"].shape == (7, 1, 6, 4)
    assert p["conv_r1"]["kernel"].shape == (1, 7, 6, 4)
    # Known answer: relu(left + right) of x = cat[reference, query], convs with torch padding.
    x = jnp.concatenate([reference, query], axis=-1)

    def conv(params, x, pad):
        out = jax.lax.conv_general_dilated(
            x, params["kernel"], (1, 1), pad, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return out + params["bias"]

    left = conv(p["conv_l2"], conv(p["conv_l1"], x, ((3, 3), (0, 0))), ((0, 0), (3, 3)))
    right = conv(p["conv_r2"], conv(p["conv_r1"], x, ((0, 0), (3, 3))), ((3, 3), (0, 0)))
    np.testing.assert_allclose(y, jax.nn.relu(left + right), atol=1e-5)


def test_resize_and_conv_match_torch():
    torch = pytest.importorskip("torch")
    x = np.random.RandomState(0).randn(2, 3, 5, 4).astype(np.float32)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    for ac in (True, False):
        ref = torch.nn.functional.interpolate(xt, scale_factor=2, mode="bilinear", align_corners=ac)
        ours = layers.upsample2x(jnp.asarray(x), align_corners=ac)
        np.testing.assert_allclose(ours, ref.permute(0, 2, 3, 1).numpy(), atol=1e-5)
    conv_t = torch.nn.Conv2d(4, 6, 7, stride=2, padding=3)
    conv = layers.Conv(6, 7, strides=2, padding=3)
    params = {
        "kernel": jnp.asarray(conv_t.weight.detach().numpy().transpose(2, 3, 1, 0)),
        "bias": jnp.asarray(conv_t.bias.detach().numpy()),
    }
    ours = conv.apply({"params": params}, jnp.asarray(x))
    np.testing.assert_allclose(ours, conv_t(xt).permute(0, 2, 3, 1).detach().numpy(), atol=1e-4)
