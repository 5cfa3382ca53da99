"""The convolution lowerings of models/conv_lowering.py (windows + one matmul; XLA's convolution
with NHWC gradients) against XLA's convolution with JAX's own gradients."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.ad_checkpoint import print_saved_residuals

from rnn_vos_jax.models import conv_lowering, layers

# (H, W, Cin, Cout, k, stride, padding, dilation): the kinds of convolution the models use
# (stem 7x7/2, ResNet 3x3/2, dilated DeepLab and ASPP 3x3, unpadded, odd sizes).
CASES = [
    (9, 11, 3, 5, 3, 1, 1, 1),
    (9, 11, 4, 5, 7, 2, 3, 1),
    (10, 12, 4, 6, 3, 2, 1, 1),
    (9, 9, 4, 6, 3, 1, 2, 2),
    (13, 13, 3, 4, 3, 1, 6, 6),
    (7, 9, 4, 3, 5, 1, 2, 1),
    (8, 10, 3, 4, 3, 1, 0, 1),
    (8, 8, 4, 6, 1, 2, 0, 1),
]


def _conv(method, strides, padding, dilation):
    def conv(x, kernel):
        return conv_lowering.conv2d(x, kernel, strides, padding, dilation, method=method)

    return conv


@pytest.mark.parametrize("method", ["patches", "nhwc_grads"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_lowering_equals_xla_convolution_and_gradients(case, method):
    h, w, cin, cout, k, s, p, d = case
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, h, w, cin), np.float32))
    kernel = jnp.asarray(rng.standard_normal((k, k, cin, cout), np.float32))
    args = ((s, s), (p, p), d)
    want, got = _conv("xla", *args)(x, kernel), _conv(method, *args)(x, kernel)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5 * float(jnp.abs(want).max()))
    cotangent = jnp.asarray(rng.standard_normal(want.shape, np.float32))
    gx, gk = jax.vjp(_conv("xla", *args), x, kernel)[1](cotangent)
    px, pk = jax.vjp(_conv(method, *args), x, kernel)[1](cotangent)
    assert px.shape == gx.shape and pk.shape == gk.shape
    np.testing.assert_allclose(px, gx, atol=1e-5 * float(jnp.abs(gx).max()))
    np.testing.assert_allclose(pk, gk, atol=1e-5 * float(jnp.abs(gk).max()))


def _conv_dimension_numbers(jaxpr):
    """The dimension numbers of every convolution in a (closed) jaxpr, sub-jaxprs included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            found.append(eqn.params["dimension_numbers"])
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                sub = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
                if hasattr(sub, "eqns"):
                    found += _conv_dimension_numbers(sub)
    return found


def test_nhwc_grads_inside_a_loop():
    """In a scanned loop (where XLA:CPU leaves JAX's transposed convolutions in their slow
    dimension orders) every convolution of the gradient is NHWC x HWIO, and the gradients
    equal JAX's own."""
    rng = np.random.default_rng(2)
    xs = jnp.asarray(rng.standard_normal((3, 2, 10, 9, 4), np.float32))
    kernel = jnp.asarray(rng.standard_normal((3, 3, 4, 4), np.float32)) * 0.3

    def loss(method):
        conv = _conv(method, (1, 1), (1, 1), 1)

        def total(xs, k):
            def step(h, x):
                h = jnp.tanh(conv(h + x, k))
                return h, h.sum()

            return jax.lax.scan(step, jnp.zeros_like(xs[0]), xs)[1].sum()

        return total

    canonical = jax.lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), ("NHWC", "HWIO", "NHWC"))
    grads = {}
    for method in ("xla", "nhwc_grads"):
        fn = jax.grad(loss(method), (0, 1))
        numbers = _conv_dimension_numbers(jax.make_jaxpr(fn)(xs, kernel).jaxpr)
        assert len(numbers) == 3, (method, numbers)  # forward, input gradient, kernel gradient
        assert all(n == canonical for n in numbers) == (method == "nhwc_grads"), numbers
        grads[method] = jax.jit(fn)(xs, kernel)
    for got, want in zip(grads["nhwc_grads"], grads["xla"]):
        np.testing.assert_allclose(got, want, atol=1e-5 * float(jnp.abs(want).max()))


def test_backward_rebuilds_windows_without_recomputing_the_matmul(capsys):
    """One matmul forward, two backward (input and kernel); the windows [1, 8, 8, 36] are not
    kept for the backward pass (only the input and kernel are), which rebuilds them."""
    x, kernel = jnp.ones((1, 8, 8, 4)), jnp.ones((3, 3, 4, 6))
    conv = _conv("patches", (1, 1), (1, 1), 1)
    jaxpr = jax.make_jaxpr(jax.grad(lambda x, k: conv(x, k).sum(), (0, 1)))(x, kernel)
    assert str(jaxpr).count("dot_general") == 3
    print_saved_residuals(lambda x, k: conv(x, k).sum(), x, kernel)
    saved = capsys.readouterr().out
    assert "f32[1,8,8,4]" in saved and "f32[3,3,4,6]" in saved
    assert "36]" not in saved, saved


def test_selection_by_environment_and_depth(monkeypatch):
    monkeypatch.delenv(conv_lowering.ENV, raising=False)
    deep, shallow = (5, 5, 2048, 4096), (3, 3, 64, 64)
    cpu = jax.default_backend() == "cpu"
    assert conv_lowering.lowering(deep) == ("patches" if cpu else "xla")
    assert conv_lowering.lowering(shallow) == "xla"
    assert conv_lowering.lowering((1, 1, 4096, 4096)) == "xla"  # already a matmul
    with conv_lowering.traced_in_loop(True):
        # In a loop on CPU: NHWC gradients, 1x1 convolutions included.
        assert conv_lowering.lowering(shallow) == ("nhwc_grads" if cpu else "xla")
        assert conv_lowering.lowering((1, 1, 4096, 4096)) == ("nhwc_grads" if cpu else "xla")
        assert conv_lowering.lowering(deep) == ("patches" if cpu else "xla")
    assert conv_lowering.lowering(shallow) == "xla"
    monkeypatch.setenv(conv_lowering.ENV, "patches")
    assert conv_lowering.lowering(shallow) == "patches"
    assert conv_lowering.lowering((1, 1, 64, 64)) == "xla"
    monkeypatch.setenv(conv_lowering.ENV, "XLA")
    assert conv_lowering.lowering(deep) == "xla"
    monkeypatch.setenv(conv_lowering.ENV, "im2col")
    with pytest.raises(ValueError, match="RNN_VOS_JAX_CONV='im2col'"):
        conv_lowering.lowering(deep)


def test_conv_layer_follows_the_lowering(monkeypatch):
    """layers.Conv's output is the same under every lowering; only the HLO differs."""
    x = jnp.asarray(np.random.default_rng(1).standard_normal((1, 6, 7, 8), np.float32))
    conv = layers.Conv(5, 3, strides=2, dilation=1)
    variables = conv.init(jax.random.key(0), x)
    outs, texts = {}, {}
    for method in conv_lowering.LOWERINGS:
        monkeypatch.setenv(conv_lowering.ENV, method)
        fn = jax.jit(lambda v, x: conv.apply(v, x))
        outs[method] = fn(variables, x)
        texts[method] = fn.lower(variables, x).as_text()
    assert "convolution" in texts["xla"] and "convolution" not in texts["patches"]
    np.testing.assert_allclose(outs["patches"], outs["xla"], atol=1e-5)


def test_scan_over_time_marks_loops_for_the_lowering():
    """A looped scan's convolutions (1x1 and 3x3) differentiate into NHWC convolutions only; a
    fully unrolled one keeps JAX's own gradients (straight-line code)."""
    from rnn_vos_jax.models.recurrent import scan_over_time

    class Clip(nn.Module):
        unroll: int

        def setup(self):
            self.conv3, self.conv1 = layers.Conv(4, 3), layers.Conv(4, 1)

        def step(self, h, x):
            h = jnp.tanh(self.conv3(h + x) + self.conv1(h))
            return h, h.sum()

        def __call__(self, xs):
            body = type(self).step
            scan = scan_over_time(
                body, False, in_axes=0, out_axes=0, unroll=self.unroll, length=xs.shape[0]
            )
            if self.is_initializing():
                self.step(jnp.zeros_like(xs[0]), xs[0])
            return scan(self, jnp.zeros_like(xs[0]), xs)[1].sum()

    xs = jnp.asarray(np.random.default_rng(3).standard_normal((3, 2, 6, 5, 4), np.float32))
    canonical = jax.lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), ("NHWC", "HWIO", "NHWC"))

    for unroll in (1, 3):
        model = Clip(unroll)
        variables = model.init(jax.random.key(0), xs)
        grad = jax.grad(functools.partial(model.apply, xs=xs))
        numbers = _conv_dimension_numbers(jax.make_jaxpr(grad)(variables).jaxpr)
        looped = unroll == 1 and jax.default_backend() == "cpu"
        assert all(n == canonical for n in numbers) == looped, numbers
        assert len(numbers) == 6  # two convolutions, each with two gradients
