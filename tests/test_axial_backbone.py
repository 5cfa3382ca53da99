"""Axial-DeepLab-S backbone ('axial_s', paper B Table 3): full-size pyramid, spans and count,
weights from axialnet-layout state dicts (forward parity with tests/axial_reference.py, the
relative-table resize, mismatch reports), rematerialisation, and a tiny HS2S on it."""

import re

import jax
import jax.numpy as jnp
import model_testing as mt
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import axial_reference as ar

from rnn_vos_jax import models
from rnn_vos_jax.models import backbones, torch_keys
from rnn_vos_jax.models.backbones import axial

NEW_LAYERS = ("mask_conv", "added_conv", "added_bn")
# Tiny parity model: widths / 4 (attention widths 16..128, none floored), two blocks in layer1
# (same span) and layer2 (the second attends after the stride), at 64 x 96 (non-square spans).
DIV, DEPTHS, H, W = 4, (2, 2, 1, 1), 64, 96


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _tables(params):
    """{'layerK.i.hight_block': relative shape, ...} of a backbone's params."""
    flat = torch_keys.flatten_variables({"params": params})
    return {".".join(p[1:-2] + (p[-2],)): v.shape for p, v in flat.items() if p[-1] == "relative"}


# --- full size ---------------------------------------------------------------------------------


def test_full_size_pyramid_spans_and_count():
    net = backbones.build("axial_s")
    x = jax.ShapeDtypeStruct((1, 256, 448, 3), jnp.float32)
    variables = jax.eval_shape(net.init, jax.random.key(0), x)
    feats = jax.eval_shape(net.apply, variables, x)
    channels = {"f2": 32, "f4": 128, "f8": 256, "f16": 512, "f32": 1024}
    assert net.channels() == channels
    assert net.strides() == {"f2": 2, "f4": 4, "f8": 8, "f16": 16, "f32": 32}
    assert {k: v.shape for k, v in feats.items()} == {
        k: (1, 256 // s, 448 // s, channels[k]) for k, s in net.strides().items()
    }
    # Global spans per axis; the first block of layer2..4 attends before its stride.
    spans = axial.block_spans((256, 448))
    assert spans == (
        ((64, 112),) * 3,
        ((64, 112),) + ((32, 56),) * 3,
        ((32, 56),) + ((16, 28),) * 5,
        ((16, 28),) + ((8, 14),) * 2,
    )
    tables = _tables(variables["params"])
    assert len(tables) == 2 * 16
    for k, (stage, gp) in enumerate(zip(spans, (8, 16, 32, 64))):
        for i, (sh, sw) in enumerate(stage):
            assert tables[f"layer{k + 1}.{i}.hight_block"] == (2 * gp, 2 * sh - 1)
            assert tables[f"layer{k + 1}.{i}.width_block"] == (2 * gp, 2 * sw - 1)
    assert variables["params"]["layer1"]["0"]["hight_block"]["qkv_transform"]["kernel"].shape == (
        64,
        128,
    )
    assert _count(variables["params"]) == 10_609_440
    # At 224x224 (axialnet's spans) the trunk is axial50s without fc, plus the HS2S added_conv
    # and added_bn (32 * 32 * 9 + 32 + 2 * 32).
    at224 = jax.eval_shape(
        net.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    )
    ref = ar.AxialNet((3, 4, 6, 3), 0.5, (56, 56))
    n_ref = sum(p.numel() for name, p in ref.named_parameters() if not name.startswith("fc."))
    assert _count(at224["params"]) == n_ref + 9248 + 64 == 10_561_216 + 9312


def test_tiny_widths_and_errors():
    # The contract's width / 16: attention widths floored at 16 (8 heads, even group width).
    net = backbones.build("axial_s", width_divisor=16, blocks=(1, 1, 1, 1))
    assert net.widths() == (16, 16, 16, 32)
    assert net.channels() == {"f2": 2, "f4": 8, "f8": 16, "f16": 32, "f32": 64}
    assert backbones.build("axial_s", width_divisor=4).widths() == (16, 32, 64, 128)
    x = jnp.zeros((1, 64, 64, 3))
    with pytest.raises(ValueError, match="width_divisor=3"):
        jax.eval_shape(backbones.build("axial_s", width_divisor=3).init, jax.random.key(0), x)
    with pytest.raises(ValueError, match="4 positive stage depths"):
        jax.eval_shape(axial.AxialDeepLabS(depths=(1, 1)).init, jax.random.key(0), x)
    # Spans are the training resolution's.
    v = jax.eval_shape(net.init, jax.random.key(0), x)
    with pytest.raises(ValueError, match="tied to their training resolution"):
        jax.eval_shape(net.apply, v, jnp.zeros((1, 64, 96, 3)))


# --- weights from an axialnet state dict -------------------------------------------------------


def _torch_net(depths=DEPTHS, div=DIV, spans=(H // 4, W // 4), seed=0):
    """A random axialnet-layout model of our tiny widths, with non-trivial BatchNorm state."""
    torch.manual_seed(seed)
    net = ar.AxialNet(depths, 0.5 / div, spans, num_classes=10, min_width=axial.MIN_WIDTH)
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _state(net, prefix=""):
    return {prefix + k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


def _ours(depths=DEPTHS, div=DIV, h=H, w=W):
    """(backbone, its random variables with a mask conv, flat under the scope 'enc')."""
    model = axial.AxialDeepLabS(width_divisor=div, depths=depths)
    x, mask = jnp.zeros((1, h, w, 3)), jnp.zeros((1, h, w, 1))
    variables = mt.random_variables(model, x, mask=mask)
    flat = {(p[0], "enc", *p[1:]): v for p, v in torch_keys.flatten_variables(variables).items()}
    return model, flat


def _load(state, flat):
    filled = backbones.torchvision_init(state, flat, [("enc", "axial_s")], "axialnet file")
    merged = {(p[0], *p[2:]): v for p, v in {**flat, **filled}.items()}
    return filled, torch_keys.unflatten_variables(merged)


def _new_layers(variables):
    """The HS2S layers of our variables as torch keys -> Flax-layout arrays."""
    flat = torch_keys.flatten_variables(variables)
    return {
        ".".join([*p[1:-1], torch_keys.torch_leaf(p[0], p[-1])]): v
        for p, v in flat.items()
        if p[1] in NEW_LAYERS
    }


def test_axialnet_weights_forward_parity():
    net = _torch_net()
    model, flat = _ours()
    # DataParallel's prefix as in axialnet's saved files; fc.* ignored, flatten_index dropped.
    state = _state(net, "module.")
    filled, variables = _load(state, flat)
    assert {p[2] for p in set(flat) - set(filled)} == set(NEW_LAYERS)
    dropped = ("num_batches_tracked", "flatten_index")
    trunk = {k[len("module.") :]: v for k, v in state.items()
             if not k.startswith("module.fc.") and not k.endswith(dropped)}  # fmt: skip
    assert len(filled) == len(trunk)
    # The inverse map writes the file back: axialnet's keys, layouts (Conv1d qkv, relative) and
    # values, at equal spans.
    back = backbones.torchvision_state(variables, "axial_s")
    assert {k: v.shape for k, v in back.items()} == {k: v.shape for k, v in trunk.items()}
    for key, value in trunk.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)

    # The HS2S layers are ours (fresh): the same values into the torch stem.
    stem = {
        "mask_conv": torch.nn.Conv2d(1, 32 // DIV, 7, 2, 3, bias=False),
        "added_conv": torch.nn.Conv2d(32 // DIV, 32 // DIV, 3, padding=1),
        "added_bn": torch.nn.BatchNorm2d(32 // DIV),
    }
    own = {
        k: torch.from_numpy(torch_keys.to_torch_layout(np.asarray(v)))
        for k, v in _new_layers(variables).items()
    }
    for name, mod in stem.items():
        mod.load_state_dict({k[len(name) + 1 :]: v for k, v in own.items() if k.startswith(name)})
        mod.eval()

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, H, W, 3)).astype(np.float32)
    mask = (rng.uniform(size=(2, H, W, 1)) > 0.5).astype(np.float32)
    tx, tm = (torch.from_numpy(a.transpose(0, 3, 1, 2)) for a in (x, mask))
    names = ("f2", "f4", "f8", "f16", "f32")
    with torch.no_grad():
        want = ar.hs2s_features(net, stem, tx, tm)
    got = jax.jit(lambda v, a, m: model.apply(v, a, False, m))(variables, x, mask)
    for name, ref in zip(names, want):
        mt.assert_close(got[name], ref.numpy().transpose(0, 2, 3, 1), rtol=1e-4)
    # Train mode: batch statistics over the few positions of the last stages amplify float32
    # rounding (torch's own float32 result is ~1e-4 of the scale from its float64 one), so the
    # reference is torch in float64.
    net.double().train()
    for mod in stem.values():
        mod.double().train()
    with torch.no_grad():
        want = ar.hs2s_features(net, stem, tx.double(), tm.double())
    got, _ = jax.jit(lambda v, a, m: model.apply(v, a, True, m, mutable=["batch_stats"]))(
        variables, x, mask
    )
    for name, ref in zip(names, want):
        mt.assert_close(got[name], ref.numpy().transpose(0, 2, 3, 1), rtol=2e-4)


def test_relative_tables_resized_to_our_spans():
    # A file at square spans 8 (e.g. ImageNet's 56 at 224x224), our model at 64 x 96 (16, 24).
    net = _torch_net(spans=(8, 8))
    _, flat = _ours()
    _, variables = _load(_state(net), flat)
    ours = axial.block_spans((H, W), DEPTHS)
    for k in range(4):
        for i, (sh, sw) in enumerate(ours[k]):
            for axis, span in (("hight_block", sh), ("width_block", sw)):
                table = getattr(getattr(net, f"layer{k + 1}")[i], axis).relative.detach().numpy()
                got = variables["params"][f"layer{k + 1}"][str(i)][axis]["relative"]
                assert got.shape == (table.shape[0], 2 * span - 1)
                # The documented interpolation: offset o reads o * (L - 1) / (S - 1).
                length = (table.shape[1] + 1) // 2
                src = np.arange(-(span - 1), span) * (length - 1) / max(span - 1, 1)
                grid = np.arange(-(length - 1), length)
                want = np.stack([np.interp(src, grid, row) for row in table])
                np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    # Identity at equal spans; span 9 -> 5 keeps every second offset; span 1 keeps offset 0;
    # a span-1 table is repeated.
    table = np.random.default_rng(0).normal(size=(4, 17)).astype(np.float32)
    np.testing.assert_array_equal(axial.resize_relative(table, 9), table)
    np.testing.assert_allclose(axial.resize_relative(table, 5), table[:, ::2], rtol=1e-6)
    np.testing.assert_allclose(axial.resize_relative(table, 1), table[:, 8:9], rtol=1e-6)
    np.testing.assert_allclose(axial.resize_relative(table[:, 8:9], 3), table[:, [8] * 5])


def test_mismatched_axialnet_files_list_every_tensor():
    # axial26s-like depths for a (2, 2, 1, 1) model: layer1.1's tensors are missing, layer3.1's
    # unexpected; another width: every tensor of the stem and stages mis-shaped.
    _, flat = _ours()
    with pytest.raises(torch_keys.ConversionError) as err:
        _load(_state(_torch_net(depths=(1, 2, 2, 1))), flat)
    msg = str(err.value)
    assert "(38 missing, 38 unexpected, 0 mis-shaped)" in msg  # one block's 38 tensors each
    assert "enc/layer1/1/hight_block/relative" in msg and "enc.layer3.1.conv_up.weight" in msg
    with pytest.raises(torch_keys.ConversionError, match="mis-shaped") as err:
        _load(_state(_torch_net(div=2)), flat)
    assert "layer4.0.width_block.qkv_transform.weight" in str(err.value)


# --- rematerialisation and HS2S ----------------------------------------------------------------


def _residual_bytes(fn, *args):
    """Bytes the backward pass of fn keeps from the forward (jax.vjp residuals, no compile)."""
    vjp = jax.eval_shape(lambda *a: jax.vjp(fn, *a)[1], *args)
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(vjp))


def test_remat_gives_the_same_outputs_and_gradients():
    # A strided block with a downsample, in the stage that wraps it.
    stage = axial.AxialStage(planes=8, width=16, depth=1, strides=2)
    remat = stage.clone(remat=True)
    x = jax.random.normal(jax.random.key(0), (2, 8, 12, 16))
    variables = mt.random_variables(stage, x, train=False)
    params, stats = variables["params"], variables["batch_stats"]
    assert jax.tree.structure(variables) == jax.tree.structure(
        jax.eval_shape(lambda a: remat.init(jax.random.key(0), a, False), x)
    )

    def loss(params, stats, net):
        y, upd = net.apply({"params": params, "batch_stats": stats}, x, True, mutable=True)
        return jnp.sum(y**2), upd

    def grads(net):
        fn = jax.value_and_grad(lambda p, s: loss(p, s, net), has_aux=True)
        return jax.jit(fn)(params, stats)

    (l0, u0), g0 = grads(stage)
    (l1, u1), g1 = grads(remat)
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u0)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # Gradients that vanish analytically (a bias before a train-mode BatchNorm, bn_similarity's
    # under the softmax) are float32 noise, ~1e-7 of the gradient scale, in both programs.
    scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(g0))
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * scale)
    # The backward keeps the blocks' inputs instead of their attention maps.
    kept = {
        n.remat: _residual_bytes(lambda p, n=n: loss(p, stats, n)[0], params)
        for n in (stage, remat)
    }
    assert kept[True] < kept[False] / 4, kept
    # The backbone hands the flag to its stages.
    net = backbones.build("axial_s", width_divisor=16, blocks=(1, 1, 1, 1), remat=True)
    xs = jnp.zeros((1, 32, 32, 3))
    jaxpr = jax.make_jaxpr(lambda v: net.apply(v, xs))(
        jax.eval_shape(net.init, jax.random.key(0), xs)
    )
    # jax.checkpoint's primitive ('remat2' in jax 0.10, 'checkpoint' in older releases).
    assert len(re.findall(r"= (?:checkpoint|remat\w*)\[", str(jaxpr))) == 4


def test_tiny_hs2s_on_axial_s_trains():
    fam = models.family("hs2s")
    model = models.build({"name": "hs2s", **fam.tiny, "backbone": "axial_s"})
    frames, masks = mt.clip(1, 2, 64, 64)
    variables = mt.random_variables(model, frames, masks)
    assert "hight_block" in variables["params"]["encoder"]["layer4"]["0"]
    batch = mt.batch(frames, masks, model.num_classes)

    def loss_fn(params):
        out, _ = model.apply(
            {**variables, "params": params}, frames, masks, train=True, mutable=["batch_stats"]
        )
        return fam.loss(out, batch)[0]

    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(variables["params"])
    assert np.isfinite(float(loss))
    enc = grads["encoder"]
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    assert np.abs(enc["layer1"]["0"]["hight_block"]["relative"]).max() > 0
    assert np.abs(enc["layer4"]["0"]["width_block"]["qkv_transform"]["kernel"]).max() > 0
