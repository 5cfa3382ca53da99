"""RAFT pieces (models/raft/): correlation lookup, convex upsampling, photometric loss, the
update block's torch parity and raft_init, and the flow colour wheel (flow_viz)."""

import jax
import jax.numpy as jnp
import model_testing as mt
import numpy as np
import pytest

from rnn_vos_jax import models
from rnn_vos_jax.models import torch_keys
from rnn_vos_jax.models.raft import correlation, flow_viz, photometric, weights
from rnn_vos_jax.models.raft.update import BasicUpdateBlock
from rnn_vos_jax.models.raft.upsample import convex_upsample
from rnn_vos_jax.weights import backbone_init

# --- NumPy references ---------------------------------------------------------------------------


def _np_bilinear(img, x, y):
    """img [H, W] at (x, y), align_corners=True pixel coordinates, zeros outside."""
    h, w = img.shape
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    total = 0.0
    for xi in (x0, x0 + 1):
        for yi in (y0, y0 + 1):
            if 0 <= xi < w and 0 <= yi < h:
                total += (1 - abs(x - xi)) * (1 - abs(y - yi)) * img[yi, xi]
    return total


def _np_lookup(f1, f2, coords, levels, r):
    n, h, w, c = f1.shape
    corr = np.einsum("nijc,nklc->nijkl", f1, f2) / np.sqrt(c)
    pyr = [corr]
    for _ in range(levels - 1):
        p = pyr[-1]
        hh, ww = p.shape[-2] // 2, p.shape[-1] // 2
        pooled = np.zeros(p.shape[:3] + (hh, ww))
        for a in range(hh):
            for b in range(ww):
                pooled[..., a, b] = p[..., 2 * a : 2 * a + 2, 2 * b : 2 * b + 2].mean((-2, -1))
        pyr.append(pooled)
    k = 2 * r + 1
    out = np.zeros((n, h, w, levels * k * k))
    for b in range(n):
        for i in range(h):
            for j in range(w):
                for lvl, p in enumerate(pyr):
                    cx, cy = coords[b, i, j] / 2**lvl
                    for a in range(k):  # x offset major, as RAFT
                        for e in range(k):
                            ch = lvl * k * k + a * k + e
                            out[b, i, j, ch] = _np_bilinear(p[b, i, j], cx + a - r, cy + e - r)
    return out


def test_correlation_lookup_matches_brute_force():
    rng = np.random.default_rng(0)
    f1, f2 = rng.normal(size=(2, 2, 5, 6, 4))
    # Fractional coordinates, some windows far outside the map (zeros there).
    coords = rng.uniform(-4, 10, (2, 5, 6, 2))
    coords[0, 0, 0] = (2.0, 3.0)  # an integer centre: the window reads pixels exactly
    got = correlation.lookup(correlation.pyramid(f1, f2, 2), jnp.asarray(coords), 2)
    want = _np_lookup(f1, f2, coords, 2, 2)
    assert got.shape == (2, 5, 6, 50)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(want).max() > 0.5 and (want == 0).any()
    with pytest.raises(ValueError, match="too small"):
        correlation.pyramid(f1[:, :1, :1], f2[:, :1, :1], 2)


def test_convex_upsample_matches_numpy():
    rng = np.random.default_rng(1)
    flow = rng.normal(size=(2, 3, 4, 2))
    mask = rng.normal(size=(2, 3, 4, 9 * 64))
    got = np.asarray(convex_upsample(jnp.asarray(flow), jnp.asarray(mask)))
    want = np.zeros((2, 24, 32, 2))
    for n in range(2):
        for y in range(3):
            for x in range(4):
                for i in range(8):
                    for j in range(8):
                        logits = np.array([mask[n, y, x, k * 64 + i * 8 + j] for k in range(9)])
                        wgt = np.exp(logits - logits.max())
                        wgt /= wgt.sum()
                        for k in range(9):
                            yy, xx = y + k // 3 - 1, x + k % 3 - 1
                            if 0 <= yy < 3 and 0 <= xx < 4:
                                want[n, 8 * y + i, 8 * x + j] += wgt[k] * 8 * flow[n, yy, xx]
    np.testing.assert_allclose(got, want, atol=1e-5)
    # A constant flow away from the border upsamples to 8x the constant (convex weights).
    const = convex_upsample(jnp.ones((1, 3, 3, 2)), jnp.asarray(mask[:1, :3, :3]))
    np.testing.assert_allclose(const[0, 8:16, 8:16], 8.0, atol=1e-5)


# --- photometric loss ---------------------------------------------------------------------------


def _smooth_frame(rng, h, w):
    noise = rng.uniform(0, 1, (h + 8, w + 8, 3))
    kernel = np.ones(5) / 5  # a blurred texture: bilinear sampling then sees smooth images
    for axis in (0, 1):
        noise = np.apply_along_axis(lambda v: np.convolve(v, kernel, "same"), axis, noise)
    return noise[4 : 4 + h, 4 : 4 + w]


_photo_error = jax.jit(photometric.photometric_error)
_photo_loss = jax.jit(photometric.photometric_loss)


def test_photometric_loss_known_answers():
    rng = np.random.default_rng(2)
    prev = _smooth_frame(rng, 16, 20)[None]
    zero = jnp.zeros((1, 16, 20, 2))
    assert float(_photo_loss(prev, prev, zero)) == 0.0
    # Content moves by d = (dx, dy) = (3, -2): nxt(x, y) = prev(x - 3, y + 2), so sampling nxt
    # at p + d gives prev(p) exactly wherever p + d is inside the frame (the valid pixels);
    # what enters nxt from outside (zeros here) is never sampled.
    nxt = np.zeros_like(prev)
    nxt[:, :-2, 3:] = prev[:, 2:, :-3]
    flow = jnp.broadcast_to(jnp.asarray([3.0, -2.0], jnp.float32), (1, 16, 20, 2))
    err, count = _photo_error(prev, nxt, flow)
    ys, xs = np.mgrid[0:16, 0:20]
    assert float(count[0]) == ((xs + 3 <= 19) & (ys - 2 >= 0)).sum()
    assert float(err[0]) < 1e-5
    assert float(_photo_loss(prev, nxt, zero)) > 0.05
    # Half the flow is worse than the true one, better than none on a smooth texture.
    half = _photo_loss(prev, nxt, flow / 2)
    assert 1e-3 < float(half) < float(_photo_loss(prev, nxt, zero))
    # Gradients reach the flow through the bilinear weights.
    g = jax.jit(jax.grad(lambda f: photometric.photometric_loss(prev, nxt, f)))(flow / 2)
    assert np.isfinite(g).all() and np.abs(g).max() > 0


def test_sequence_photometric_loss_weights_iterations_and_frames():
    rng = np.random.default_rng(3)
    frames = (rng.uniform(0, 255, (2, 3, 8, 8, 3))).astype(np.uint8)
    flows = jnp.asarray(rng.normal(size=(2, 2, 3, 8, 8, 2)), jnp.float32)
    valid = np.array([[True, True, True], [True, True, False]])
    got = jax.jit(photometric.sequence_photometric_loss, static_argnums=3)(
        frames, flows, valid, 0.5
    )
    x = frames / 255.0
    w = np.array([0.25, 0.5, 1.0]) / 1.75
    per_frame = []
    for t in range(2):
        samples = [b for b in range(2) if valid[b, t] and valid[b, t + 1]]
        losses = []
        for i in range(3):
            errs = [
                _photo_error(x[b : b + 1, t], x[b : b + 1, t + 1], flows[b : b + 1, t, i])
                for b in samples
            ]
            losses.append(sum(float(e[0][0]) for e in errs) / sum(float(e[1][0]) for e in errs))
        per_frame.append(np.dot(w, losses))
    np.testing.assert_allclose(float(got), np.mean(per_frame), rtol=1e-5)
    np.testing.assert_allclose(photometric.iteration_weights(3, 0.8).sum(), 1.0, rtol=1e-6)


# --- flow colour wheel --------------------------------------------------------------------------


def test_flow_colours_known_flows():
    wheel = flow_viz.color_wheel()
    assert wheel.shape == (55, 3)
    np.testing.assert_array_equal(wheel[0], [255, 0, 0])
    np.testing.assert_array_equal(wheel[15], [255, 255, 0])  # yellow starts the 2nd ramp
    np.testing.assert_array_equal(wheel[21], [0, 255, 0])
    np.testing.assert_array_equal(wheel[25], [0, 255, 255])
    np.testing.assert_array_equal(wheel[36], [0, 0, 255])
    np.testing.assert_array_equal(wheel[49], [255, 0, 255])
    # Zero flow is white; unit vectors at full saturation in the four directions.
    flow = np.array([[[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]]], np.float32)
    rgb = flow_viz.flow_to_color(flow).astype(int)[0]
    np.testing.assert_array_equal(rgb[0], [255, 255, 255])
    right, down, left, up = rgb[1:]
    assert right[0] >= 254 and right[1] <= 1 and right[2] <= 1  # red
    assert down[0] >= 254 and down[1] > 200 and down[2] <= 1  # yellow
    assert left[0] <= 1 and 150 < left[1] < 255 and left[2] >= 254  # light blue
    assert 50 < up[0] < 150 and up[1] <= 1 and up[2] >= 254  # blue-violet
    # Half the length keeps the hue and halves the saturation (towards white).
    half = flow_viz.flow_to_color(np.array([[[0.5, 0], [1, 0]]]))[0, 0].astype(int)
    np.testing.assert_allclose(half, [254, 127, 127], atol=1)
    # Resizing scales the vectors with the image.
    big = flow_viz.resize_flow(np.ones((4, 5, 2), np.float32), (8, 15))
    np.testing.assert_allclose(big[..., 0], 3.0, rtol=1e-5)
    np.testing.assert_allclose(big[..., 1], 2.0, rtol=1e-5)


# --- update block: torch parity and raft_init ---------------------------------------------------


def _raft_state(seed=0):
    """A RAFT-layout state dict (module.update_block.* + other modules) of random tensors."""
    torch = pytest.importorskip("torch")
    import raft_torch_reference as rt

    torch.manual_seed(seed)
    block = rt.BasicUpdateBlock()
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape) / max(1, p[0].numel()) ** 0.5)
    state = {f"module.update_block.{k}": v.numpy() for k, v in block.state_dict().items()}
    state["module.fnet.conv1.weight"] = np.zeros((64, 3, 7, 7), np.float32)
    state["module.cnet.norm1.running_mean"] = np.zeros((64,), np.float32)
    return block, state


def _update_block_flat():
    block = BasicUpdateBlock()
    x = jnp.zeros((1, 4, 6, 128))
    shapes = jax.eval_shape(
        lambda: block.init(jax.random.key(0), x, x, jnp.zeros((1, 4, 6, 324)), x[..., :2])
    )
    return block, {
        ("params", "update_block", *p[1:]): v
        for p, v in torch_keys.flatten_variables(shapes).items()
    }


def test_raft_init_maps_every_tensor_and_matches_torch():
    torch = pytest.importorskip("torch")
    tblock, state = _raft_state()
    block, flat = _update_block_flat()
    filled = weights.init_update_block(state, flat, {}, "raft-things.pth")
    assert set(filled) == set(flat) and len(filled) == 30
    # Round trip: our variables back in torch layout are the file's tensors.
    for path, value in filled.items():
        key = "module." + ".".join([*path[1:-1], torch_keys.torch_leaf(path[0], path[-1])]).replace(
            "mask_0", "mask.0"
        ).replace("mask_2", "mask.2")
        np.testing.assert_array_equal(torch_keys.to_torch_layout(value), state[key])
    params = {"params": torch_keys.unflatten_variables({p[2:]: v for p, v in filled.items()})}
    rng = np.random.default_rng(4)
    net, inp = rng.normal(size=(2, 1, 4, 6, 128)).astype(np.float32)
    corr = rng.normal(size=(1, 4, 6, 324)).astype(np.float32)
    flow = rng.normal(size=(1, 4, 6, 2)).astype(np.float32)
    got = jax.jit(block.apply)(params, net, inp, corr, flow)
    nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
    with torch.no_grad():
        want = tblock(nchw(net), nchw(inp), nchw(corr), nchw(flow))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.numpy().transpose(0, 2, 3, 1), atol=1e-4)

    # Mis-shaped (a thinner update block), missing and unexpected tensors are all listed.
    thin = dict(flat)
    thin[("params", "update_block", "mask_2", "kernel")] = jax.ShapeDtypeStruct(
        (1, 1, 32, 576), jnp.float32
    )
    broken = dict(state)
    del broken["module.update_block.gru.convz1.bias"]
    broken["module.update_block.extra.weight"] = np.zeros((2, 2, 1, 1), np.float32)
    with pytest.raises(torch_keys.ConversionError) as err:
        weights.init_update_block(broken, thin, {}, "bad.pth")
    msg = str(err.value)
    assert "bad.pth" in msg and "update_block/gru/convz1/bias" in msg
    assert "update_block.extra.weight" in msg and "update_block.mask.2.weight" in msg
    assert weights.split_state(state)[1] == ["cnet.norm1.running_mean", "fnet.conv1.weight"]


def test_lookup_and_upsample_match_torch_raft():
    """Our channel orders are RAFT's: the torch CorrBlock lookup and upsample_flow agree."""
    torch = pytest.importorskip("torch")
    import raft_torch_reference as rt

    rng = np.random.default_rng(5)
    f1, f2 = rng.normal(size=(2, 1, 8, 10, 6)).astype(np.float32)
    coords = rng.uniform(-3, 12, (1, 8, 10, 2)).astype(np.float32)
    got = correlation.lookup(correlation.pyramid(f1, f2, 3), coords, 3)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
    want = rt.corr_lookup(t(f1), t(f2), t(coords), 3, 3).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(got, want, atol=1e-5)
    flow = rng.normal(size=(1, 3, 4, 2)).astype(np.float32)
    mask = rng.normal(size=(1, 3, 4, 576)).astype(np.float32)
    up = rt.convex_upsample(t(flow), t(mask)).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(convex_upsample(flow, mask), up, atol=1e-5)


def test_raft_init_through_the_family_on_a_tiny_model(tmp_path):
    """config.model.raft_init (an .npz here) fills exactly the update block of a RAFT-HS2S."""
    _, state = _raft_state(seed=1)
    cfg = {
        **models.family("raft_hs2s").tiny,
        "name": "raft_hs2s",
        "raft_width_divisor": 1,
        "corr_levels": 4,
        "corr_radius": 4,
    }
    model = models.build(cfg)
    frames, masks = mt.clip(1, 2, 64, 64)
    shapes = mt.variable_shapes(model, frames, masks)
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    npz = str(tmp_path / "raft.npz")
    np.savez(npz, **state)
    after = backbone_init.apply_init_files(zeros, {**cfg, "raft_init": npz})
    flat_after = torch_keys.flatten_variables(after)
    changed = {p for p, v in flat_after.items() if np.any(v != 0)}
    assert changed and all(p[:2] == ("params", "update_block") for p in changed)
    assert backbone_init.init_file_keys({**cfg, "raft_init": ""}) == []
    with pytest.raises(FileNotFoundError, match="raft_init"):
        backbone_init.apply_init_files(zeros, {**cfg, "raft_init": str(tmp_path / "no.pth")})
