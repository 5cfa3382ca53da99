"""Authors'-format PyTorch checkpoints -> Flax: coverage, errors, and frame-by-frame parity.

Checkpoints are written in the authors' layouts by tests/torch_reference.py (tiny widths); the
torch reference's own inference loop (the authors' submit-script semantics) is the oracle.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch_reference as tr

from rnn_vos_jax import api, models
from rnn_vos_jax.models import torch_keys
from rnn_vos_jax.weights import torch_checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = (64, 96)
TOL = 1e-4


def _hs2s_config():
    # Tiny HS2S: every width / 16, one bottleneck per stage; the authors' kernels and cell.
    c = api.load_config(os.path.join(ROOT, "configs/hs2s.py:demo"))
    c.data.image_size = SIZE
    c.model.update(
        backbone="resnet50", num_ch=1024, num_classes=6, mem_kernel=3, sm_kernel=5,
        cell="authors", width_divisor=16, blocks=(1, 1, 1, 1), dtype="float32",
    )  # fmt: skip
    return c


def _s2spp_config():
    c = api.load_config(os.path.join(ROOT, "configs/s2s_pp.py:demo"))
    c.data.image_size = SIZE
    c.model.update(
        num_skip_memories=2, use_distance=True, num_classes=6, encoder_head="authors_1x1",
        cell="authors", width_divisor=16, dtype="float32",
    )  # fmt: skip
    return c


def _spread(model, merge):
    # Random weights give logits near 0; scale the last conv so probabilities span (0, 1).
    with torch.no_grad():
        merge.weight.mul_(30.0)
    return model


@pytest.fixture(scope="module")
def hs2s_torch():
    m = tr.randomize_(tr.ModelMatch(blocks=(1, 1, 1, 1), div=16, num_classes=6), 0).eval()
    return _spread(m, m.decoder.merge_)


@pytest.fixture(scope="module")
def s2spp_torch():
    m = tr.randomize_(tr.S2SPlusPlus(div=16, num_classes=6), 1).eval()
    return _spread(m, m.decoder.merge_)


def _video(seed, t=4):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (t, *SIZE, 3), dtype=np.uint8)
    ids = np.zeros(SIZE, np.int32)
    ids[8:40, 10:50] = 3
    ids[30:60, 60:90] = 7
    return frames, ids


def _torch_probs(model, frames, masks):
    """Reference loop on K objects: masks bool[K,H,W] -> float32[T-1, K, H, W]."""
    x = tr.normalize(frames)[:, None].expand(-1, len(masks), -1, -1, -1)
    m = torch.tensor(np.asarray(masks, np.float32))[:, None]
    return np.stack([p.numpy() for p in model.predict(x, m)])


def test_cli_s2spp_parity_frame_by_frame(s2spp_torch, tmp_path):
    """S2S++: module-dict checkpoint -> CLI -> orbax -> Segmenter == torch loop, 2 objects."""
    pth = str(tmp_path / "s2s_pp.pth")
    torch.save(tr.s2spp_checkpoint(s2spp_torch), pth)
    out = str(tmp_path / "converted")
    cmd = [
        sys.executable, "-m", "rnn_vos_jax.convert_torch", f"--checkpoint={pth}",
        "--config=configs/s2s_pp.py", "--config.model.num_classes=6",
        "--config.model.width_divisor=16", f"--output={out}",
    ]  # fmt: skip
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    res = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Converted" in res.stdout
    seg = api.Segmenter.from_checkpoint(out, _s2spp_config())
    frames, ids = _video(1)
    probs = seg.segment(frames, ids)
    ref = _torch_probs(s2spp_torch, frames, np.stack([ids == 3, ids == 7]))
    assert probs.shape == (4, 2, *SIZE)
    np.testing.assert_array_equal(probs[0, 1], (ids == 7).astype(np.float32))
    assert ref.std() > 0.05  # the comparison is informative
    for t in range(1, 4):
        np.testing.assert_allclose(probs[t], ref[t - 1], atol=TOL, rtol=0)


def test_hs2s_pth_in_memory_parity_frame_by_frame(hs2s_torch, tmp_path):
    """HS2S: DataParallel checkpoint loaded as .pth by the API (converted in memory)."""
    pth = str(tmp_path / "weights_HS2S.pth")
    torch.save(tr.hs2s_checkpoint(hs2s_torch), pth)
    seg = api.Segmenter.from_checkpoint(pth, _hs2s_config())
    frames, ids = _video(0)
    mask = ids == 3
    probs = seg.segment(frames, mask)
    ref = _torch_probs(hs2s_torch, frames, mask[None])[:, 0]
    assert probs.shape == (4, *SIZE)
    np.testing.assert_array_equal(probs[0], mask.astype(np.float32))
    assert ref.std() > 0.1
    for t in range(1, 4):
        np.testing.assert_allclose(probs[t], ref[t - 1], atol=TOL, rtol=0)


@pytest.mark.parametrize("family", ["hs2s", "s2s_pp"])
def test_every_variable_covered_exactly_once(family, hs2s_torch, s2spp_torch):
    if family == "hs2s":
        model, cfg = hs2s_torch, _hs2s_config()
        ckpt = tr.hs2s_checkpoint(model)
        state = model.state_dict()
    else:
        model, cfg = s2spp_torch, _s2spp_config()
        ckpt = tr.s2spp_checkpoint(model)
        state = {f"{n}.{k}": v for n in tr.S2SPP_MODULES for k, v in ckpt[n].items()}
    numpy_ckpt = {
        k: ({kk: vv.numpy() for kk, vv in v.items()} if k != "optimizer" else v)
        for k, v in ckpt.items()
    }
    variables = torch_checkpoints.convert_state(numpy_ckpt, cfg.model)
    flat = torch_keys.flatten_variables(variables)
    expected = models.expected_variables(models.build(cfg.model))
    assert set(flat) == set(expected)
    tensors = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert len(tensors) == len(flat)
    assert sum(v.numel() for v in tensors.values()) == sum(v.size for v in flat.values())
    # Inverse map: every torch tensor comes back bit-exactly from its own Flax variable.
    index = torch_keys.KeyIndex(flat)
    hits = {index.resolve(k, v.ndim) for k, v in tensors.items()}
    assert len(hits) == len(flat)
    for k, v in tensors.items():
        back = torch_keys.to_torch_layout(flat[index.resolve(k, v.ndim)])
        np.testing.assert_array_equal(back, v.numpy(), err_msg=k)
    if family == "hs2s":
        bn = variables["batch_stats"]["encoder"]["conv2"]["0"]["bn3"]["var"]
        np.testing.assert_array_equal(bn, state["encoder.conv2.0.bn3.running_var"].numpy())
    # Exporting gives the authors' file back: same structure, same keys, same tensors.
    exported = torch_checkpoints.export_state(variables, cfg.model)
    want = {k: v for k, v in numpy_ckpt.items() if k != "optimizer"}
    assert set(exported) == set(want)
    for part, sd in want.items():
        assert set(exported[part]) == set(sd), part
        for k, v in sd.items():
            if not k.endswith("num_batches_tracked"):
                np.testing.assert_array_equal(exported[part][k], v, err_msg=k)


def test_hs2s_bare_state_dict_and_layout_errors(hs2s_torch):
    cfg = _hs2s_config()
    bare = {k: v.numpy() for k, v in hs2s_torch.state_dict().items()}  # no 'module.' prefix
    variables = torch_checkpoints.convert_state(bare, cfg.model)
    np.testing.assert_array_equal(
        variables["params"]["decoder"]["merge_"]["bias"], bare["decoder.merge_.bias"]
    )
    with pytest.raises(ValueError, match="'hs2s' checkpoint but config.model.name is 's2s_pp'"):
        torch_checkpoints.convert_state(bare, _s2spp_config().model, "x.pth")
    backbone = {k: v.numpy() for k, v in tr.ResNet((1, 1, 1, 1), div=16).state_dict().items()}
    with pytest.raises(ValueError, match="none of its 104 tensors .*backbone_init"):
        torch_checkpoints.convert_state(backbone, cfg.model, "resnet50.pth")
    with pytest.raises(ValueError, match=r"unknown checkpoint layout .*\['epoch', 'net'\]"):
        torch_checkpoints.convert_state({"net": 1, "epoch": 3}, cfg.model, "x.pth")


def test_missing_unexpected_misshaped_all_listed(hs2s_torch, tmp_path):
    ckpt = tr.hs2s_checkpoint(hs2s_torch)
    sd = ckpt["model"]
    del sd["module.decoder.conv_1.weight"]
    del sd["module.encoder.reduce_bn.running_mean"]
    sd["module.decoder.extra_head.weight"] = torch.zeros(3, 3, 1, 1)
    sd["module.memory.conv.bias"] = torch.zeros(5)
    pth = str(tmp_path / "bad.pth")
    torch.save(ckpt, pth)
    with pytest.raises(torch_keys.ConversionError) as err:
        torch_checkpoints.convert_checkpoint(pth, _hs2s_config().model)
    msg = str(err.value)
    assert "2 missing, 1 unexpected, 1 mis-shaped" in msg
    assert "params/decoder/conv_1/kernel" in msg
    assert "batch_stats/encoder/reduce_bn/mean" in msg
    assert "decoder.extra_head.weight" in msg
    assert "memory.conv.bias: torch shape (5,)" in msg and "needs (256,)" in msg
    with pytest.raises(torch_keys.ConversionError):  # nothing is written on failure
        torch_checkpoints.convert_to_directory(pth, _hs2s_config().model, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    with pytest.raises(FileExistsError, match="already exists"):
        torch_checkpoints.convert_to_directory(pth, _hs2s_config().model, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        torch_checkpoints.convert_checkpoint(str(tmp_path / "nope.pth"), _hs2s_config().model)
