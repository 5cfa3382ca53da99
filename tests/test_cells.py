"""Known answers of the DeepRNN and Conv-TT-LSTM cells against NumPy versions of their equations.

The references below are written from the equations in the cells' docstrings (float64, explicit
'same' convolutions), with random parameters and BatchNorm statistics.
"""

import functools

import jax
import jax.numpy as jnp
import model_testing as mt
import numpy as np
import pytest

from rnn_vos_jax.models import cells
from rnn_vos_jax.models.cells.deep_rnn import ContextBridge

N, H, W, CIN, F = 2, 3, 4, 3, 4
EPS = 1e-5


# --- NumPy references ---------------------------------------------------------------------------


def np_conv(x, kernel, bias=None):
    """Stride-1 conv with padding k // 2: x [N,H,W,I], kernel [kh,kw,I,O] -> [N,H,W,O]."""
    x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
    kh, kw = kernel.shape[:2]
    n, h, w, _ = x.shape
    xp = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    out = np.zeros((n, h, w, kernel.shape[-1]))
    for dy in range(kh):
        for dx in range(kw):
            out += np.einsum("nhwi,io->nhwo", xp[:, dy : dy + h, dx : dx + w], kernel[dy, dx])
    return out if bias is None else out + np.asarray(bias, np.float64)


def np_bn(x, params, stats, train):
    if train:
        mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
    else:
        mean, var = np.asarray(stats["mean"], np.float64), np.asarray(stats["var"], np.float64)
    return (x - mean) / np.sqrt(var + EPS) * params["scale"] + params["bias"]


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def np_cbm(p, s, c, x, train):
    """One context-bridge layer: (c', x')."""
    r = np.tanh(np_bn(np_conv(x, p["conv_r"]["kernel"]), p["bn_r"], s["bn_r"], train))
    xc = np.concatenate([x, c], -1)
    t = sigmoid(np_bn(np_conv(xc, p["conv_t"]["kernel"]), p["bn_t"], s["bn_t"], train))
    return t, r * t


def np_deep_rnn(variables, carry, x, train):
    p, s = variables["params"], variables["batch_stats"]
    h, states = np.asarray(x, np.float64), []
    for l, c in enumerate(carry):
        c, h = np_cbm(p[f"layer_{l}"], s[f"layer_{l}"], c, h, train)
        states.append(c)
    sc = np_bn(np_conv(x, p["shortcut"]["kernel"]), p["shortcut_bn"], s["shortcut_bn"], train)
    return states, h + np.maximum(sc, 0.0)


def np_tt_lstm(params, order, steps, carry, x):
    hbuf, c = [np.asarray(h, np.float64) for h in carry[0]], carry[1]
    lags, t = steps - order + 1, None

    def conv(name, inputs):
        return np_conv(inputs, params[name]["kernel"], params[name]["bias"])

    for l in range(order):
        p = conv(f"window_{l}", np.concatenate(hbuf[l : l + lags], -1))
        t = p if l == 0 else p + conv(f"chain_{l - 1}", t)
    zi, zf, zo, zg = np.split(conv("gates", np.concatenate([x, t], -1)), 4, -1)
    c = sigmoid(zf) * c + sigmoid(zi) * np.tanh(zg)
    h = sigmoid(zo) * np.tanh(c)
    return (hbuf[1:] + [h], c), h


# --- helpers ------------------------------------------------------------------------------------


def _xs(t, seed=0):
    return np.random.default_rng(seed).normal(size=(t, N, H, W, CIN)).astype(np.float32)


@functools.cache
def _stepper(cell, train):
    """Jitted one step (carry, y) of `cell` with the given BatchNorm mode."""

    def step(v, carry, x):
        if train:
            return cell.apply(v, carry, x, train=True, mutable=["batch_stats"])[0]
        return cell.apply(v, carry, x, train=False)

    return jax.jit(step)


def _param_count(cell, cin=1024, hw=8):
    carry = cell.initialize_carry(1, hw, hw)
    shapes = jax.eval_shape(
        lambda: cell.init(jax.random.key(0), carry, jnp.zeros((1, hw, hw, cin)))
    )
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes["params"]))


# --- DeepRNN ------------------------------------------------------------------------------------


@pytest.mark.parametrize("train", [False, True])
def test_context_bridge_layer(train):
    layer = ContextBridge(F, 3)
    rng = np.random.default_rng(3)
    c = rng.uniform(0, 1, (N, H, W, F)).astype(np.float32)
    x = _xs(1)[0]
    v = mt.random_variables(layer, c, x, train=False)
    c_new, y = _stepper(layer, train)(v, c, x)
    c_want, y_want = np_cbm(v["params"], v["batch_stats"], c, x, train)
    mt.assert_close(c_new, c_want)
    mt.assert_close(y, y_want)
    assert c_new.dtype == y.dtype == jnp.float32


@pytest.mark.parametrize("train", [False, True])
def test_deep_rnn_sequence_matches_numpy(train):
    """One step, then three with the states carried (BN eval: running stats; train: batch)."""
    cell = cells.build("deep_rnn", features=F, kernel_size=3)
    xs = _xs(3)
    carry = cell.initialize_carry(N, H, W)
    assert len(carry) == 5 and all(c.shape == (N, H, W, F) for c in carry)
    v = mt.random_variables(cell, carry, xs[0])
    step = _stepper(cell, train)
    want_carry = [np.zeros((N, H, W, F))] * 5
    for t in range(3):
        carry, y = step(v, carry, xs[t])
        want_carry, want_y = np_deep_rnn(v, want_carry, xs[t], train)
        mt.assert_close(y, want_y)
        for got, want in zip(carry, want_carry, strict=True):
            mt.assert_close(got, want)
    # The states matter: the same input with fresh zero states gives another answer.
    _, y_fresh = step(v, cell.initialize_carry(N, H, W), xs[2])
    assert not np.allclose(y_fresh, y, atol=1e-3)


def test_deep_rnn_param_count_full_size():
    # Per CBM: conv_r 3*3*1024*1024 + conv_t 3*3*2048*1024 + 2 BN (scale, bias) 2*2*1024.
    per_layer = 9 * 1024 * 1024 + 9 * 2048 * 1024 + 4 * 1024
    shortcut = 1024 * 1024 + 2 * 1024
    assert 5 * per_layer + shortcut == 142_628_864
    assert _param_count(cells.build("deep_rnn", features=1024, kernel_size=3)) == 142_628_864


# --- Conv-TT-LSTM -------------------------------------------------------------------------------


@pytest.mark.parametrize("order,steps", [(3, 3), (2, 3), (1, 2)])
def test_tt_lstm_sequence_matches_numpy(order, steps):
    """Five steps: the buffer fills (steps zeros at first) and then rolls."""
    cell = cells.build("tt_lstm", features=F, kernel_size=3, order=order, steps=steps, rank=2)
    xs = _xs(5, seed=1)
    carry = cell.initialize_carry(N, H, W)
    v = mt.random_variables(cell, carry, xs[0])
    step = _stepper(cell, False)
    want = ([np.zeros((N, H, W, F))] * steps, np.zeros((N, H, W, F)))
    for t in range(5):
        carry, y = step(v, carry, xs[t])
        want, want_y = np_tt_lstm(v["params"], order, steps, want, xs[t])
        mt.assert_close(y, want_y)
        mt.assert_close(carry[1], want[1])
        for got, w in zip(carry[0], want[0], strict=True):
            mt.assert_close(got, w)
    assert len(carry[0]) == steps
    mt.assert_close(carry[0][-1], y)


def test_tt_lstm_buffer_order_oldest_first():
    """order 2, steps 3 (lags 2): windows Hbuf[0:2] and Hbuf[1:3] differ, so order matters."""
    cell = cells.build("tt_lstm", features=F, kernel_size=3, order=2, steps=3, rank=3)
    rng = np.random.default_rng(5)
    hbuf = tuple(rng.uniform(-1, 1, (N, H, W, F)).astype(np.float32) for _ in range(3))
    c = rng.uniform(-1, 1, (N, H, W, F)).astype(np.float32)
    x = _xs(1, seed=2)[0]
    v = mt.random_variables(cell, (hbuf, c), x)
    assert v["params"]["window_0"]["kernel"].shape == (3, 3, 2 * F, 3)
    step = _stepper(cell, False)
    (new_buf, _), y = step(v, (hbuf, c), x)
    _, want_y = np_tt_lstm(v["params"], 2, 3, (hbuf, c), x)
    mt.assert_close(y, want_y)
    # Oldest dropped, h' appended.
    for got, want in zip(new_buf, (hbuf[1], hbuf[2], y), strict=True):
        np.testing.assert_array_equal(got, want)
    _, y_swapped = step(v, (hbuf[::-1], c), x)
    assert not np.allclose(y_swapped, y, atol=1e-3)


def test_tt_lstm_oldest_window_warms_up_after_steps_frames():
    """Window 0 reads the oldest of `steps` zero-initialised states: its kernel gets a gradient
    only from step steps + 1 on (so a 3-frame clip leaves it untrained at the defaults)."""
    cell = cells.build("tt_lstm", features=F, kernel_size=3)
    xs = _xs(4, seed=3)
    carry = cell.initialize_carry(N, H, W)
    v = mt.random_variables(cell, carry, xs[0])

    def loss(v, t):
        c, total = carry, 0.0
        for x in xs[:t]:
            c, y = cell.apply(v, c, x)
            total += jnp.sum(y**2)
        return total

    g3 = jax.jit(jax.grad(functools.partial(loss, t=3)))(v)["params"]["window_0"]["kernel"]
    g4 = jax.jit(jax.grad(functools.partial(loss, t=4)))(v)["params"]["window_0"]["kernel"]
    assert np.abs(g3).max() == 0 and np.abs(g4).max() > 0


def test_tt_lstm_validates_order_and_steps():
    x = jnp.zeros((1, 3, 4, CIN))
    with pytest.raises(ValueError, match="steps must be >= order"):
        cells.build("tt_lstm", features=F, kernel_size=3, order=3, steps=2).initialize_carry(
            1, 3, 4
        )
    cell = cells.build("tt_lstm", features=F, kernel_size=3, order=0, steps=2)
    carry = ((jnp.zeros((1, 3, 4, F)),) * 2, jnp.zeros((1, 3, 4, F)))
    with pytest.raises(ValueError, match="order must be >= 1"):
        cell.init(jax.random.key(0), carry, x)


def test_tt_lstm_param_count_full_size():
    windows = 3 * (9 * 1024 * 8 + 8)  # lags = 1: 1024 -> rank 8
    chain = 2 * (9 * 8 * 8 + 8)
    gates = 9 * (1024 + 8) * 4096 + 4096
    assert windows + chain + gates == 38_270_120
    assert _param_count(cells.build("tt_lstm", features=1024, kernel_size=3)) == 38_270_120
