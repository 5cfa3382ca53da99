"""Known-answer tests of rnn_vos_jax.models.losses against hand computations in numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_vos_jax.models import losses


def _np_log_sigmoid(z):
    return -np.log1p(np.exp(-z))


def _np_frame_terms(z, y, dlog, dlab):
    """One frame, whole batch: (balanced BCE, Jaccard, CE) written out directly from the spec."""
    z = z.astype(np.float64)
    y = (y >= 0.5).astype(np.float64)
    n = y.size
    pos, neg = y.sum(), (1 - y).sum()
    lpos = -(y * _np_log_sigmoid(z)).sum()
    lneg = -((1 - y) * np.log1p(-1.0 / (1.0 + np.exp(-z)))).sum()
    bce = (neg / n * lpos + pos / n * lneg) / n
    p = 1.0 / (1.0 + np.exp(-z))
    inter = (p * y).sum()
    union = p.sum() + y.sum()
    jac = -np.log((inter + 1e-15) / (union - inter + 1e-15))
    d = dlog.astype(np.float64)
    d = d - d.max(-1, keepdims=True)
    logp = d - np.log(np.exp(d).sum(-1, keepdims=True))
    ce = -np.take_along_axis(logp, dlab[..., None], -1).mean()
    return bce, jac, ce


def _make(seed=0, b=3, t=4, h=5, w=6, k=7):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (b, t, h, w, 1)).astype(np.float32)
    masks = (rng.random((b, t, h, w, 1)) > 0.6).astype(np.float32)
    dlog = rng.normal(0, 1, (b, t, h, w, k)).astype(np.float32)
    dlab = rng.integers(0, k, (b, t, h, w)).astype(np.int32)
    return logits, masks, dlog, dlab


def test_tiny_hand_example():
    # 1 sample, 1 frame, 2 pixels: fg logit 0 and bg logit 0 -> every pixel costs log 2.
    logits = np.zeros((1, 1, 1, 2, 1), np.float32)
    masks = np.array([1.0, 0.0], np.float32).reshape(1, 1, 1, 2, 1)
    valid = np.ones((1, 1), bool)
    loss, parts = losses.sequence_loss(logits, None, masks, None, valid)
    # pos = neg = 1, N = 2: (1/2*log2 + 1/2*log2)/2 = log2/2.
    np.testing.assert_allclose(parts["bce"], np.log(2) / 2, rtol=1e-6)
    # p = 0.5 each: I = 0.5, U - I = 1.5 -> -log(1/3).
    np.testing.assert_allclose(parts["jaccard"], np.log(3), rtol=1e-6)
    assert float(parts["distance"]) == 0.0
    np.testing.assert_allclose(loss, 0.6 * np.log(2) / 2 + 0.2 * np.log(3), rtol=1e-6)


def test_authors_kind_matches_numpy_per_frame_batch_statistics():
    logits, masks, dlog, dlab = _make()
    valid = np.ones(logits.shape[:2], bool)
    loss, parts = losses.sequence_loss(logits, dlog, masks, dlab, valid)
    terms = np.array(
        [_np_frame_terms(logits[:, t], masks[:, t], dlog[:, t], dlab[:, t]) for t in range(4)]
    )
    bce, jac, ce = terms.mean(0)
    np.testing.assert_allclose(parts["bce"], bce, rtol=1e-5)
    np.testing.assert_allclose(parts["jaccard"], jac, rtol=1e-5)
    np.testing.assert_allclose(parts["distance"], ce, rtol=1e-5)
    np.testing.assert_allclose(loss, 0.6 * bce + 0.2 * jac + 0.2 * ce, rtol=1e-5)


def test_paper_kind_weighting_and_custom_weights():
    logits, masks, dlog, dlab = _make(1)
    valid = np.ones(logits.shape[:2], bool)
    _, parts = losses.sequence_loss(logits, dlog, masks, dlab, valid)
    loss_p, _ = losses.sequence_loss(logits, dlog, masks, dlab, valid, kind="paper")
    np.testing.assert_allclose(loss_p, 0.8 * parts["bce"] + 0.2 * parts["distance"], rtol=1e-6)
    loss_p5, _ = losses.sequence_loss(
        logits, dlog, masks, dlab, valid, kind="paper", seg_lambda=0.5
    )
    np.testing.assert_allclose(loss_p5, 0.5 * parts["bce"] + 0.5 * parts["distance"], rtol=1e-6)
    loss_w, _ = losses.sequence_loss(
        logits, dlog, masks, dlab, valid, bce_weight=1.0, jaccard_weight=0.0, distance_weight=0.0
    )
    np.testing.assert_allclose(loss_w, parts["bce"], rtol=1e-6)
    with pytest.raises(ValueError, match="kind"):
        losses.sequence_loss(logits, dlog, masks, dlab, valid, kind="nope")


def test_padded_frames_and_samples_are_excluded():
    logits, masks, dlog, dlab = _make(2)
    # Sample 0 has 4 real frames, sample 1 has 2, sample 2 has 3 (valid is a prefix per sample).
    valid = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]], bool)
    loss, parts = losses.sequence_loss(logits, dlog, masks, dlab, valid)
    per_frame = []
    for t in range(4):
        keep = valid[:, t]
        per_frame.append(
            _np_frame_terms(logits[keep, t], masks[keep, t], dlog[keep, t], dlab[keep, t])
        )
    bce, jac, ce = np.array(per_frame).mean(0)
    np.testing.assert_allclose(parts["bce"], bce, rtol=1e-5)
    np.testing.assert_allclose(parts["jaccard"], jac, rtol=1e-5)
    np.testing.assert_allclose(parts["distance"], ce, rtol=1e-5)
    # Garbage in padded positions must not change anything (including NaN-free gradients).
    logits2 = logits.copy()
    logits2[~valid] = 1e4
    dlog2 = dlog.copy()
    dlog2[~valid] = -1e4
    loss2, _ = losses.sequence_loss(logits2, dlog2, masks, dlab, valid)
    np.testing.assert_allclose(loss2, loss, rtol=1e-6)
    # A frame with no valid sample at all is left out of the mean.
    valid3 = valid.copy()
    valid3[:, 3] = False
    _, parts3 = losses.sequence_loss(logits, dlog, masks, dlab, valid3)
    np.testing.assert_allclose(parts3["bce"], np.array(per_frame)[:3, 0].mean(), rtol=1e-5)


def test_bfloat16_inputs_are_stable_and_match_float32():
    logits, masks, dlog, dlab = _make(3)
    # Extreme logits: naive log(sigmoid) would give inf; the loss must stay finite.
    logits[0, 0, 0, 0, 0] = 300.0
    logits[0, 0, 0, 1, 0] = -300.0
    valid = np.ones(logits.shape[:2], bool)
    lb = jnp.asarray(logits, jnp.bfloat16)
    db = jnp.asarray(dlog, jnp.bfloat16)
    loss_b, parts_b = losses.sequence_loss(lb, db, masks, dlab, valid)
    assert loss_b.dtype == jnp.float32
    loss_r, _ = losses.sequence_loss(
        np.asarray(lb.astype(jnp.float32)), np.asarray(db.astype(jnp.float32)), masks, dlab, valid
    )
    np.testing.assert_allclose(loss_b, loss_r, rtol=1e-6)
    grad = jax.grad(lambda x, d: losses.sequence_loss(x, d, masks, dlab, valid)[0], (0, 1))(lb, db)
    for g in grad:
        assert g.dtype == jnp.bfloat16
        assert np.all(np.isfinite(np.asarray(g.astype(jnp.float32))))
    assert all(np.isfinite(float(v)) for v in parts_b.values())


def test_perfect_prediction_has_small_loss_and_bad_input_errors():
    masks = np.zeros((2, 2, 4, 4, 1), np.float32)
    masks[:, :, 1:3, 1:3] = 1.0
    logits = (masks * 2 - 1) * 30.0
    valid = np.ones((2, 2), bool)
    loss, parts = losses.sequence_loss(logits, None, masks, None, valid)
    assert float(loss) < 1e-6 and float(parts["jaccard"]) < 1e-6
    with pytest.raises(ValueError, match="masks shape"):
        losses.sequence_loss(logits, None, masks[:, :1], None, valid)
    with pytest.raises(ValueError, match="valid shape"):
        losses.sequence_loss(logits, None, masks, None, valid[:1])
    with pytest.raises(ValueError, match="distance_labels"):
        losses.sequence_loss(logits, np.zeros((2, 2, 4, 4, 3), np.float32), masks, None, valid)
