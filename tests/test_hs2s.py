"""HS2S-specific checks: the authors' inits and parameter counts, teacher forcing vs scheduled
sampling, BatchNorm modes with remat, whole-clip prediction. The generic checks (scan ==
streaming, gradients, bfloat16, unrolled scan, conversion round trip) are in test_contract.py."""

import functools
import importlib.util
import math
import os

import jax
import jax.numpy as jnp
import model_testing as mt
import numpy as np
import pytest

from rnn_vos_jax import models
from rnn_vos_jax.models.hs2s import FAMILY, HS2S

BENCH = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "param_counts.py")
B, T, H, W = 2, 3, 64, 64
TINY = dict(FAMILY.tiny)


@pytest.fixture(scope="module")
def tiny():
    model = HS2S(**TINY)
    frames, masks = mt.clip(B, T, H, W)
    # rbg keys: threefry's per-parameter random streams dominate the init compile time on CPU.
    init = jax.jit(lambda k: model.init({"params": k}, frames, masks, sample_prob=0.0))
    variables = init(jax.random.key(0, impl="rbg"))
    return model, variables, frames, masks


@pytest.fixture(scope="module")
def scanned_eval(tiny):
    """Jitted eval-mode forward with a traced sample_prob; returns (outputs, batch_stats)."""
    model, variables, frames, masks = tiny

    @jax.jit
    def run(v, p):
        return model.apply(
            v,
            frames,
            masks,
            sample_prob=p,
            train=False,
            rngs={"sample": jax.random.key(3)},
            mutable=["batch_stats"],
        )

    return {p: run(variables, jnp.float32(p)) for p in (0.0, 1.0)}


def _stream(model, variables, frames, masks, feed_gt):
    """Python loop over the streaming step; returns logits [B, T-1, H, W, 1] and the carries."""
    # Variables are arguments, not closed-over constants XLA would try to fold.
    init_carry = jax.jit(lambda v, f, m: model.apply(v, f, m, method="init_carry"))
    step = jax.jit(lambda v, c, f: model.apply(v, c, f, method="step"))
    carry = init_carry(variables, frames[:, 0], masks[:, 0])
    carries, logits = [carry], []
    for t in range(1, frames.shape[1]):
        if feed_gt:
            carry = dict(carry, prev_pred=masks[:, t - 1])
        carry, logit = step(variables, carry, frames[:, t])
        carries.append(carry)
        logits.append(logit)
    return jnp.stack(logits, 1), carries


def _assert_close(logits, expected):
    """Equal up to float32 reassociation: 1e-5 of the logits' scale, 1e-5 in probability."""
    mt.assert_close(logits, expected)
    np.testing.assert_allclose(jax.nn.sigmoid(logits), jax.nn.sigmoid(expected), atol=1e-5)


def test_init_names_and_authors_inits(tiny):
    _, variables, _, _ = tiny
    params = variables["params"]
    assert set(params) == {"encoder_ref", "encoder", "memory", "skip_memory", "decoder"}
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))
    enc = params["encoder"]
    assert enc["mask_conv"]["kernel"].shape == (7, 7, 1, 4)
    assert "bias" not in enc["mask_conv"] and "bias" not in enc["conv1"]
    np.testing.assert_array_equal(enc["added_conv"]["bias"], 0.0)
    np.testing.assert_array_equal(enc["reduce_channel_"]["bias"], 0.0)
    # Decoder: N(0, sqrt(2 / (kh * kw * out))) weights, zero biases everywhere.
    for path, leaf in jax.tree_util.tree_leaves_with_path(params["decoder"]):
        if path[-1].key == "bias":
            np.testing.assert_array_equal(leaf, 0.0, err_msg=str(path))
    k = np.asarray(params["decoder"]["conv_1"]["kernel"])  # 1x1, out 64
    assert abs(k.std() - math.sqrt(2.0 / 64)) < 0.05 * math.sqrt(2.0 / 64)
    assert abs(k.mean()) < 0.01
    # ConvLSTMs keep torch's default init: U(+-1/sqrt(fan_in)).
    mem = params["memory"]["conv"]
    bound = 1.0 / math.sqrt(3 * 3 * 128)
    assert mem["kernel"].shape == (3, 3, 128, 256)
    assert np.abs(mem["kernel"]).max() <= bound and np.abs(mem["kernel"]).max() > 0.9 * bound
    assert params["skip_memory"]["conv"]["kernel"].shape == (5, 5, 128, 256)
    for path, leaf in jax.tree_util.tree_leaves_with_path(variables["batch_stats"]):
        np.testing.assert_array_equal(leaf, 0.0 if path[-1].key == "mean" else 1.0)


def test_real_config_shapes_and_authors_param_count():
    """configs/hs2s.py at 256x448 (via benchmarks/param_counts.py) vs the authors' layout."""
    spec = importlib.util.spec_from_file_location("param_counts", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    model, variables = bench.abstract_variables("hs2s")
    assert isinstance(model, HS2S) and model.backbone == "resnet50"

    def conv(cin, cout, kh, kw=None, bias=True):
        return cin * cout * kh * (kw or kh) + (cout if bias else 0)

    # The authors' named_parameters, layer by layer (torchvision resnet50 minus fc = 23,508,032).
    encoder = 23_508_032 + conv(1, 64, 7, bias=False) + conv(64, 64, 3) + 2 * 64
    encoder += conv(2048, 1024, 1) + 2 * 1024
    gc = 2 * (conv(2048, 256, 7, 1) + conv(256, 512, 1, 7))
    decoder = 4 * gc + 2 * conv(1024, 512, 1)
    for cin, c1, c5 in ((512 + 2048, 1024, 512), (2048, 512, 256), (768, 256, 128)):
        decoder += conv(cin, c1, 1) + conv(c1, c5, 5)
    decoder += conv(384, 128, 1) + conv(128, 64, 5) + conv(128, 64, 1) + conv(64, 64, 5)
    decoder += 2 * conv(64, 42, 3) + conv(84, 1, 1)
    expected = {
        "encoder_ref": encoder,
        "encoder": encoder,
        "memory": conv(2048, 4096, 3),
        "skip_memory": conv(2048, 4096, 5),
        "decoder": decoder,
    }
    counts = bench.counts_of(variables)
    assert counts == expected
    assert sum(counts.values()) == 395_759_593
    assert expected["encoder"] == 25_648_448 and expected["memory"] == 75_501_568
    assert expected["skip_memory"] == 209_719_296 and expected["decoder"] == 59_241_833

    frame = jax.ShapeDtypeStruct((1, 256, 448, 3), jnp.uint8)
    mask = jax.ShapeDtypeStruct((1, 256, 448, 1), jnp.float32)
    carry = jax.eval_shape(
        lambda v, f, m: model.apply(v, f, m, method="init_carry"), variables, frame, mask
    )
    shapes = jax.tree.map(lambda x: x.shape, carry)
    assert shapes["memory"] == ((1, 8, 14, 1024),) * 2 and shapes["ref"] == (1, 8, 14, 1024)
    assert shapes["skip_memory"] == ((1, 16, 28, 1024),) * 2
    assert shapes["ref_mid"] == (1, 16, 28, 1024)
    assert shapes["prev_frame"] == (1, 256, 448, 3) and shapes["prev_pred"] == (1, 256, 448, 1)
    new_carry, logits = jax.eval_shape(
        lambda v, c, f: model.apply(v, c, f, method="step"), variables, carry, frame
    )
    assert logits.shape == (1, 256, 448, 1) and logits.dtype == jnp.float32
    assert jax.tree.map(lambda x: (x.shape, x.dtype), new_carry) == jax.tree.map(
        lambda x: (x.shape, x.dtype), carry
    )


def test_teacher_forcing_equals_gt_loop_and_differs_from_sampling(tiny, scanned_eval):
    model, variables, frames, masks = tiny
    out0, _ = scanned_eval[0.0]
    out1, _ = scanned_eval[1.0]
    logits, _ = _stream(model, variables, frames, masks, feed_gt=True)
    _assert_close(logits, out0["logits"])
    # The first step always sees the GT first mask; later steps depend on which mask is fed.
    np.testing.assert_allclose(out0["logits"][:, 0], out1["logits"][:, 0], atol=1e-6)
    assert np.abs(out0["logits"][:, 1] - out1["logits"][:, 1]).max() > 1e-4


def _train_grads(variables, frames, masks, remat):
    """(loss, batch_stats updates, gradients) of a fixed linear loss in train mode."""
    rng = np.random.default_rng(1)
    w_seg = jnp.asarray(rng.normal(size=(B, T - 1, H, W, 1)), jnp.float32)
    w_dist = jnp.asarray(rng.normal(size=(B, T - 1, H, W, 42)), jnp.float32)
    remat_model = HS2S(remat=remat, **TINY)

    def loss_fn(params, batch_stats):
        out, upd = remat_model.apply(
            {"params": params, "batch_stats": batch_stats},
            frames,
            masks,
            sample_prob=1.0,
            train=True,
            mutable=["batch_stats"],
        )
        loss = jnp.mean(out["logits"] * w_seg) + jnp.mean(out["distance"] * w_dist)
        return loss, upd

    grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    (loss, upd), grads = grad_fn(variables["params"], variables["batch_stats"])
    return loss, upd, grads


def test_train_mode_gradients_running_stats_and_remat_policies(tiny):
    _, variables, frames, masks = tiny
    loss, upd, grads = _train_grads(variables, frames, masks, remat=True)
    assert np.isfinite(loss)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.isfinite(g).all(), path
        assert np.abs(g).max() > 0, f"zero gradient for {jax.tree_util.keystr(path)}"
    # Train mode updates every running statistic (torch: momentum 0.1 per call).
    for path, new in jax.tree_util.tree_leaves_with_path(upd["batch_stats"]):
        old = variables["batch_stats"]
        for p in path:
            old = old[p.key]
        assert np.abs(np.asarray(new) - np.asarray(old)).max() > 0, path
    # Every remat policy recomputes instead of storing: the same loss, updates and gradients.
    for policy in ("steps", "none"):
        loss_p, upd_p, grads_p = _train_grads(variables, frames, masks, remat=policy)
        np.testing.assert_allclose(loss_p, loss, rtol=1e-5)
        for got, want in zip(jax.tree.leaves((upd_p, grads_p)), jax.tree.leaves((upd, grads))):
            mt.assert_close(got, want)
    with pytest.raises(ValueError, match="config.model.remat 'stpes'"):
        HS2S(remat="stpes", **TINY).init(jax.random.key(0), frames, masks)


def test_remat_steps_warns_when_the_scan_is_unrolled(tiny, caplog):
    """Unrolled, 'steps' keeps what 'none' keeps (benchmarks/RESULTS.md): say so."""
    _, variables, frames, masks = tiny
    for unroll, warned in ((1, False), (frames.shape[1], True)):
        caplog.clear()
        model = HS2S(remat="steps", scan_unroll=unroll, **TINY)
        jax.eval_shape(functools.partial(model.apply, sample_prob=0.0), variables, frames, masks)
        assert ("saves no memory with the scan unrolled" in caplog.text) == warned


def test_build_and_bad_inputs(tiny):
    _, variables, frames, masks = tiny
    model = models.build({"name": "hs2s", "width_divisor": 16, "blocks": [1, 1, 1, 1]})
    assert isinstance(model, HS2S) and model.blocks == (1, 1, 1, 1)

    def shape_of(*args, **kw):
        return jax.eval_shape(lambda: model.apply(variables, *args, **kw))

    with pytest.raises(ValueError, match="'sample' rng"):
        shape_of(frames, masks, sample_prob=jnp.float32(0.5))
    with pytest.raises(ValueError, match="multiple of 32"):
        shape_of(frames[:, :, :48], masks[:, :, :48])
    with pytest.raises(ValueError, match="masks shape"):
        shape_of(frames, masks[..., 0])
    with pytest.raises(ValueError, match="at least 2 frames"):
        shape_of(frames[:, :1], masks[:, :1])
    for field, value in (("backbone", "resnet18"), ("cell", "gru"), ("fusion", "dot")):
        with pytest.raises(ValueError, match=f"config.model.{field} '{value}'; known"):
            jax.eval_shape(
                lambda: HS2S(**{field: value}).init(jax.random.key(0), frames, masks)  # noqa: B023
            )


def test_predict_clip_equals_feeding_back_predictions(tiny, scanned_eval):
    model, variables, frames, masks = tiny
    got = jax.jit(lambda v, f, m: model.apply(v, f, m, method="predict_clip"))(
        variables, frames, masks[:, 0]
    )
    _assert_close(got, scanned_eval[1.0][0]["logits"])
