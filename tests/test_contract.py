"""The model-family contract (models/family.py), run over every registered family and block.

Adding a family, cell, fusion block or backbone to its registry is all it takes to be tested
here: tiny variants (each family's `tiny` fields), compiled with cheap options and shared between
the checks; full-size shapes through jax.eval_shape only.
"""

import dataclasses
import functools
import io

import jax
import jax.numpy as jnp
import model_testing as mt
import numpy as np
import pytest
from PIL import Image

from rnn_vos_jax import models
from rnn_vos_jax.configs import common
from rnn_vos_jax.inference import predictors
from rnn_vos_jax.inference import tracker as tracker_lib
from rnn_vos_jax.models import backbones, cells, fusion, torch_keys
from rnn_vos_jax.models.recurrent import scan_over_time
from rnn_vos_jax.weights import torch_checkpoints

FAMILIES = models.FAMILIES.names()
B, T, H, W = 2, 3, 64, 64

# Whole tiny HS2S models built from the other cells, fusion blocks and reference choices (paper
# B's ablations), so each block also goes through the family's streaming and checkpoint
# checks. Combined to keep the compile count low; (family, fields, clip length):
# tt_lstm needs 4 predicted frames before its oldest lag window sees a non-zero state.
VARIANTS = {
    "hs2s[deep_rnn,cosine,first]": (
        "hs2s",
        {"cell": "deep_rnn", "fusion": "cosine", "references": "first"},
        T,
    ),
    "hs2s[tt_lstm,axial,previous,tanh]": (
        "hs2s",
        {"cell": "tt_lstm", "fusion": "axial", "references": "previous", "skip_cell": "tanh"},
        5,
    ),
}
MODELS = (*FAMILIES, *VARIANTS)


@functools.cache
def _tiny(name):
    """(family, tiny model, random variables, frames, masks) of a family or VARIANTS entry."""
    family, fields, t = VARIANTS.get(name, (name, {}, T))
    fam = models.family(family)
    model = models.build({"name": family, **fam.tiny, **fields})
    frames, masks = mt.clip(B, t, H, W)
    return fam, model, mt.random_variables(model, frames, masks), frames, masks


def _tiny_family(name):
    return models.family(VARIANTS.get(name, (name,))[0])


@functools.cache
def _eval_outputs(name):
    """Eval-mode outputs with every fed-back mask the model's own prediction (sample_prob 1)."""
    _, model, variables, frames, masks = _tiny(name)
    run = jax.jit(
        lambda v, f, m: model.apply(
            v, f, m, sample_prob=1.0, train=False, rngs={"sample": jax.random.key(3)}
        )
    )
    return run(variables, frames, masks)


def _train_apply(model, variables, frames, masks):
    return model.apply(
        variables,
        frames,
        masks,
        sample_prob=jnp.float32(0.5),
        train=True,
        rngs={"sample": jax.random.key(7)},
        mutable=["batch_stats"],
    )


@pytest.mark.parametrize("name", FAMILIES)
def test_family_record_and_output_shapes(name):
    fam, model, variables, frames, masks = _tiny(name)
    assert fam.name == name and type(model) is fam.model and models.family_of(model) is fam
    assert {x.dtype for x in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    out = jax.eval_shape(lambda v: model.apply(v, frames, masks), variables)
    assert out["logits"].shape == (B, T - 1, H, W, 1) and out["logits"].dtype == jnp.float32
    for key, value in out.items():
        if value is not None:
            assert value.shape[:2] == (B, T - 1) and value.dtype == jnp.float32, key
    batch = mt.batch(frames, masks, getattr(model, "num_classes", 42))
    loss, parts = jax.eval_shape(lambda o: fam.loss(o, batch), out)
    assert loss.shape == () and all(p.shape == () for p in parts.values())


@pytest.mark.parametrize("name", MODELS)
def test_scan_equals_prediction_and_carry_is_flat(name, tmp_path):
    """__call__ feeding its own predictions == the family's predictor methods, step by step."""
    fam, model, variables, frames, masks = _tiny(name)
    want = _eval_outputs(name)["logits"]
    if fam.prediction == "clip":
        got = jax.jit(lambda v, f, m: model.apply(v, f, m, method="predict_clip"))(
            variables, frames, masks[:, 0]
        )
        mt.assert_close(got, want)
        return
    init = jax.jit(lambda v, f, m: model.apply(v, f, m, method="init_carry"))
    step = jax.jit(lambda v, c, f: model.apply(v, c, f, method="step"))
    carry = init(variables, frames[:, 0], masks[:, 0])
    spec = jax.tree.map(lambda x: (x.shape, x.dtype), carry)
    assert all(x.shape[0] == B for x in jax.tree.leaves(carry))
    fed = fam.fed_back_mask  # what generic inference replaces (config.eval.feedback)
    if fed is not None:
        np.testing.assert_array_equal(carry[fed], masks[:, 0])  # the given mask before step 1
    for t in range(1, frames.shape[1]):
        before = carry
        carry, logits = step(variables, carry, frames[:, t])
        assert jax.tree.map(lambda x: (x.shape, x.dtype), carry) == spec  # flat in video length
        mt.assert_close(logits, want[:, t - 1])
        if fed is not None:  # the model's own probability, and the next step reads it
            mt.assert_close(carry[fed], jax.nn.sigmoid(logits))
            emptied = dict(before, **{fed: jnp.zeros_like(before[fed])})
            assert not np.allclose(step(variables, emptied, frames[:, t])[1], logits)
    assert float(np.std(np.asarray(want))) > 0
    # Per-frame outputs: step_outputs gives each one [B, H, W, C]; its switch is a config.eval
    # key (default off) and its writer makes an image of the frame's size.
    cfg = common.eval_config()
    for out_name, output in fam.frame_outputs.items():
        _, _, extras = jax.eval_shape(
            lambda v, c, f: model.apply(v, c, f, method="step_outputs"), variables, carry,
            frames[:, 1],
        )  # fmt: skip
        value = extras[out_name]
        assert value.shape[:3] == (B, H, W) and value.dtype == jnp.float32, out_name
        assert cfg[output.switch] is False, output.switch
        png = output.encode(np.zeros(value.shape[1:], np.float32), (H + 3, W + 5))
        assert Image.open(io.BytesIO(png)).size == (W + 5, H + 3), output.folder


@pytest.mark.parametrize(
    "name", [n for n in FAMILIES if models.family(n).prediction == "streaming"]
)
def test_tracker_state_saved_and_resumed_equals_uninterrupted(name, tmp_path):
    """A video's tracking state saved after frame 1 and loaded gives, bit for bit, the
    probabilities of the tracker that never stopped (inference/tracker.py)."""
    _, model, variables, frames, masks = _tiny(name)
    predictor = predictors.StreamingPredictor(model, variables, (H, W))
    video = np.asarray(frames[0])  # one video, its two objects: the clip's two first masks
    first = {o: np.asarray(masks[i, 0, ..., 0]) > 0.5 for i, o in enumerate((3, 8))}
    tracker = tracker_lib.Tracker(predictor, reserve=list(first))
    want = [tracker.step(video[0], add=first)] + [tracker.step(f) for f in video[1:]]
    assert float(np.std(want[-1])) > 0
    state = tracker_lib.Tracker(predictor, reserve=list(first))
    state.step(video[0], add=first)
    state.step(video[1])
    state.save(str(tmp_path / "state"))
    loaded = tracker_lib.Tracker.load(str(tmp_path / "state"), predictor)
    assert loaded.object_ids == [3, 8] and loaded.frame_index == 2
    for t in range(2, video.shape[0]):
        np.testing.assert_array_equal(loaded.step(video[t]), want[t])


# Per family only: the blocks' own gradient checks are below (a variant's gradient compile
# costs ~30 s on 2 cores).
@pytest.mark.parametrize("name", FAMILIES)
def test_gradients_finite_and_unrolled_scan_equals_rolled(name):
    fam, model, variables, frames, masks = _tiny(name)
    batch = mt.batch(frames, masks, getattr(model, "num_classes", 42))

    def loss_fn(params, m):
        out, upd = _train_apply(m, {**variables, "params": params}, frames, masks)
        return fam.loss(out, batch)[0], (out, upd)

    grad_fn = jax.jit(jax.value_and_grad(functools.partial(loss_fn, m=model), has_aux=True))
    (loss, (out, upd)), grads = grad_fn(variables["params"])
    assert np.isfinite(float(loss))
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.isfinite(g).all(), jax.tree_util.keystr(path)
        assert np.abs(g).max() > 0, f"zero gradient for {jax.tree_util.keystr(path)}"
    # scan_unroll changes only how XLA loops: same logits, sampling coins and BatchNorm updates.
    unrolled = model.clone(scan_unroll=T - 1)
    out_u, upd_u = jax.jit(lambda v: _train_apply(unrolled, v, frames, masks))(variables)
    mt.assert_close(out_u["logits"], out["logits"])
    for a, b in zip(jax.tree.leaves(upd_u), jax.tree.leaves(upd)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", FAMILIES)
def test_bfloat16_runs_close_to_float32(name):
    _, model, variables, frames, masks = _tiny(name)
    bf = model.clone(dtype=jnp.bfloat16)
    out = jax.jit(lambda v: bf.apply(v, frames, masks, sample_prob=1.0))(variables)
    want = _eval_outputs(name)["logits"]
    assert out["logits"].dtype == jnp.float32 and np.isfinite(out["logits"]).all()
    scale = float(np.abs(want).max())
    assert float(np.abs(out["logits"] - want).max()) < 0.05 * scale + 1e-3
    shapes = mt.variable_shapes(bf, frames, masks)
    assert {x.dtype for x in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize("name", FAMILIES)
def test_convolution_lowerings_give_the_same_outputs(name, monkeypatch):
    """Every convolution as windows + matmul (the CPU path of deep layers, here forced on all
    of them) gives today's outputs: models/conv_lowering.py."""
    from rnn_vos_jax.models import conv_lowering

    _, model, variables, frames, masks = _tiny(name)
    # Traced under the default: the tiny models' convs are shallow (NHWC gradients in loops).
    want = _eval_outputs(name)
    monkeypatch.setenv(conv_lowering.ENV, "patches")
    got = jax.jit(
        lambda v, f, m: model.apply(
            v, f, m, sample_prob=1.0, train=False, rngs={"sample": jax.random.key(3)}
        )
    )(variables, frames, masks)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        mt.assert_close(a, b)


@pytest.mark.parametrize("name", [n for n in MODELS if _tiny_family(n).checkpoint])
def test_checkpoint_conversion_round_trip(name):
    """Our variables -> the authors' file layout -> convert_state gives them back, bit for bit."""
    fam, _, variables = _tiny(name)[:3]
    config = {"name": fam.name, **fam.tiny, **VARIANTS.get(name, (None, {}))[1]}
    ckpt = torch_checkpoints.export_state(variables, config)
    back = torch_checkpoints.convert_state(ckpt, config, "exported")
    want = torch_keys.flatten_variables(variables)
    got = torch_keys.flatten_variables(back)
    assert set(got) == set(want)
    for path, value in want.items():
        np.testing.assert_array_equal(got[path], value, err_msg=torch_keys.path_str(path))


# --- building blocks ---------------------------------------------------------------------------


def _hs2s_with(**fields):
    """Shapes of a tiny HS2S built with `fields` (a block plugs into a family): its variables,
    after checking the shapes of a training forward pass."""
    fam = models.family("hs2s")
    model = models.build({"name": "hs2s", **fam.tiny, **fields})
    frames, masks = mt.clip(1, 2, 64, 64)
    variables = mt.variable_shapes(model, frames, masks)
    out, _ = jax.eval_shape(lambda v: _train_apply(model, v, frames, masks), variables)
    assert out["logits"].shape == (1, 1, 64, 64, 1)
    return variables


def _cell_fields(cell):
    """The module fields of a cell (to build its scanned twin)."""
    names = {f.name for f in dataclasses.fields(cell) if f.init} - {"parent", "name"}
    return {n: getattr(cell, n) for n in names}


@pytest.mark.parametrize("name", cells.REGISTRY.names())
def test_cell_contract(name):
    cell = cells.build(name, features=4, kernel_size=3)
    # One frame more than a multi-step cell keeps (tt_lstm's 3): its oldest window is then
    # non-zero once, so every weight gets a gradient.
    t = 4
    x = jax.random.normal(jax.random.key(0), (B, t, 4, 6, 3))
    carry = cell.initialize_carry(B, 4, 6)
    assert all(c.dtype == jnp.float32 for c in jax.tree.leaves(carry))
    variables = cell.init(jax.random.key(1), carry, x[:, 0])

    def loop(v, carry, xs):
        ys = []
        for t in range(xs.shape[1]):
            carry, y = cell.apply(v, carry, xs[:, t])
            ys.append(y)
        return carry, jnp.stack(ys, 1)

    carry_loop, ys = jax.jit(loop)(variables, carry, x)
    assert ys.shape == (B, t, 4, 6, 4)
    spec = jax.tree.map(lambda c: (c.shape, c.dtype), carry)
    assert jax.tree.map(lambda c: (c.shape, c.dtype), carry_loop) == spec
    scanned = scan_over_time(type(cell), train=False)(**_cell_fields(cell))
    carry_scan, ys_scan = jax.jit(scanned.apply)(variables, carry, x)
    mt.assert_close(ys_scan, ys)
    jax.tree.map(mt.assert_close, carry_scan, carry_loop)
    grads = jax.jit(jax.grad(lambda v: jnp.sum(loop(v, carry, x)[1] ** 2)))(variables)
    assert all(np.isfinite(g).all() and np.abs(g).max() > 0 for g in jax.tree.leaves(grads))
    bf = cell.clone(dtype=jnp.bfloat16)
    carry_bf, y_bf = jax.jit(bf.apply)(variables, carry, x[:, 0])
    assert all(c.dtype == jnp.float32 for c in jax.tree.leaves(carry_bf))
    assert np.isfinite(np.asarray(y_bf, np.float32)).all()
    params = _hs2s_with(cell=name)["params"]
    assert set(params["memory"]) == set(variables["params"])


@pytest.mark.parametrize("name", fusion.REGISTRY.names())
def test_fusion_contract(name):
    # 16 outputs: attention blocks split them over 8 heads. Query and reference have the same
    # width, as in HS2S (similarity-based blocks need it).
    block = fusion.build(name, features=16, width_divisor=16)
    query = jax.random.normal(jax.random.key(0), (B, 4, 6, 6))
    reference = jax.random.normal(jax.random.key(1), (B, 4, 6, 6))
    variables = mt.random_variables(block, query, reference)
    apply = jax.jit(block.apply)
    fused = apply(variables, query, reference)
    assert fused.shape == (B, 4, 6, 16) and np.isfinite(fused).all()
    # Both inputs matter.
    assert not np.allclose(fused, apply(variables, query, reference * 2))
    assert not np.allclose(fused, apply(variables, query * 2, reference))
    grads = jax.jit(jax.grad(lambda v: jnp.sum(block.apply(v, query, reference) ** 2)))(variables)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    out_bf = jax.jit(block.clone(dtype=jnp.bfloat16).apply)(variables, query, reference)
    assert out_bf.shape == fused.shape
    params = _hs2s_with(fusion=name)["params"]
    assert set(params["decoder"]["GC"]) == set(variables["params"])


# The pyramid every backbone outputs, at these nominal strides (an output-stride-16 backbone
# keeps f32 at 16); a deep head's 'top' may come with it.
STRIDES = {"f2": 2, "f4": 4, "f8": 8, "f16": 16, "f32": 32}


def _tiny_backbone(name, **fields):
    has_depths = "depths" in backbones.REGISTRY[name].__dataclass_fields__
    return backbones.build(name, blocks=(1, 1, 1, 1) if has_depths else None, **fields)


@pytest.mark.parametrize("name", backbones.REGISTRY.names())
def test_backbone_contract(name):
    def _pyramid(net, h, w):
        """Output shapes the backbone declares through strides() and channels() at h x w."""
        strides, channels = net.strides(), net.channels()
        assert set(strides) == set(channels) and set(STRIDES) <= set(strides) <= {*STRIDES, "top"}
        assert all(strides[k] in (STRIDES[k], STRIDES[k] // 2) for k in STRIDES)
        assert strides["f16"] == 16 and strides.get("top", strides["f32"]) == strides["f32"]
        return {k: (1, h // s, w // s, channels[k]) for k, s in strides.items()}

    net = _tiny_backbone(name, width_divisor=16)
    x = jax.random.normal(jax.random.key(0), (1, 64, 96, 3))
    mask = (jax.random.uniform(jax.random.key(1), (1, 64, 96, 1)) > 0.5).astype(jnp.float32)
    plain = jax.eval_shape(lambda a: net.init(jax.random.key(2), a), x)
    variables = mt.random_variables(net, x, mask=mask)
    apply = jax.jit(lambda v, m: net.apply(v, x, mask=m))
    feats = apply(variables, mask)
    assert {k: v.shape for k, v in feats.items()} == _pyramid(net, 64, 96)
    # The mask conditioning is one extra conv beside the first one, and it changes the output.
    assert set(variables["params"]) - set(plain["params"]) == {"mask_conv"}
    assert not np.allclose(feats["f2"], apply(variables, 0 * mask)["f2"])
    # Full size, true widths: the same pyramid at 256x448.
    full = backbones.build(name)
    xs = jax.ShapeDtypeStruct((1, 256, 448, 3), jnp.float32)
    shapes = jax.eval_shape(lambda a: full.apply(full.init(jax.random.key(0), a), a), xs)
    assert {k: v.shape for k, v in shapes.items()} == _pyramid(full, 256, 448)
    fields = {"backbone": name}
    if "depths" not in full.__dataclass_fields__:
        fields["blocks"] = None  # the tiny HS2S's stage depths are a ResNet's
    _hs2s_with(**fields)


@pytest.mark.parametrize("name", backbones.REGISTRY.names())
def test_backbone_torchvision_map_round_trip(name):
    """Our trunk -> torchvision keys (the inverse map) -> torchvision_init gives it back."""
    net = _tiny_backbone(name, width_divisor=16)
    x, mask = jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, 64, 64, 1))
    variables = mt.random_variables(net, x, mask=mask)
    state = backbones.torchvision_state(variables, name)
    table = (*type(net).TORCHVISION, *getattr(type(net), "TORCHVISION_HEAD", ()))
    assert state and all(k.startswith(tuple(s for s, _ in table)) for k in state)
    # The backbone as the scope "enc" of a model whose variables start at zero.
    flat = {(p[0], "enc", *p[1:]): v for p, v in torch_keys.flatten_variables(variables).items()}
    zeros = {p: np.zeros_like(v) for p, v in flat.items()}
    filled = backbones.torchvision_init(state, zeros, [("enc", name)], "round trip")
    assert len(filled) == len(state)
    assert all(p[2] == "mask_conv" or p[2].startswith("added") for p in set(flat) - set(filled))
    for path, value in filled.items():
        np.testing.assert_array_equal(value, flat[path], err_msg=torch_keys.path_str(path))
