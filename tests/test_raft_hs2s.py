"""RAFT-HS2S: the flow head learns a translation, full-size shapes, and save_flow evaluation.

The family contract (scan == streaming, gradients, bfloat16, checkpoint round trip) is covered by
tests/test_contract.py; the RAFT pieces by tests/test_raft_blocks.py.
"""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import model_testing as mt
import numpy as np
import optax
import pytest
from PIL import Image

from rnn_vos_jax import models
from rnn_vos_jax.configs import raft_hs2s as raft_config
from rnn_vos_jax.data import vos_reader
from rnn_vos_jax.evaluation import job, predict
from rnn_vos_jax.inference import predictors
from rnn_vos_jax.models import torch_keys
from rnn_vos_jax.models.layers import Conv
from rnn_vos_jax.models.raft import photometric
from rnn_vos_jax.models.raft.flow import estimate_flow
from rnn_vos_jax.models.raft.update import BasicUpdateBlock
from rnn_vos_jax.runtime import checkpoints


class _PatchFlow(nn.Module):
    """RAFT's loop on learned 8x8-patch features and context (a stand-in for the encoders)."""

    @nn.compact
    def __call__(self, im1, im2):
        fnet = Conv(16, 8, strides=8, padding=0, name="fnet")
        net, inp = jnp.split(Conv(32, 8, strides=8, padding=0, name="cnet")(im1), 2, axis=-1)
        block = BasicUpdateBlock(8, name="update_block")
        flows, _ = estimate_flow(
            block, fnet(im1), fnet(im2), jnp.tanh(net), nn.relu(inp), iters=3, levels=2, radius=3
        )
        return flows  # [N, iters, H, W, 2]


def _textures(rng, n, size):
    """float32 [n, size, size, 3] smooth random textures in [0, 1] (bilinear-upsampled noise)."""
    small = rng.uniform(0, 255, (n, size // 4, size // 4, 3)).astype(np.uint8)
    big = [np.asarray(Image.fromarray(s).resize((size, size), Image.BILINEAR)) for s in small]
    return np.stack(big).astype(np.float32) / 255.0


def _translated_pairs(rng, n, shift, size=64):
    """(im1, im2): im2's content is im1's moved by shift = (dx, dy) pixels (crops of one texture)."""
    tex = _textures(rng, n, size + 16)
    dx, dy = shift
    im1 = tex[:, 8 : 8 + size, 8 : 8 + size]
    im2 = tex[:, 8 - dy : 8 - dy + size, 8 - dx : 8 - dx + size]
    return im1, im2


def test_flow_head_learns_a_global_translation_from_the_photometric_loss():
    rng = np.random.default_rng(0)
    shift = (3, -2)
    model = _PatchFlow()
    im1, im2 = _translated_pairs(rng, 4, shift)
    params = jax.jit(model.init)(jax.random.key(0), im1, im2)
    tx = optax.adam(2e-3)

    def loss_fn(p, a, b):
        flows = model.apply(p, a, b)
        frames = jnp.stack([a, b], axis=1) * 255.0
        valid = jnp.ones(frames.shape[:2], bool)
        loss = photometric.sequence_photometric_loss(frames, flows[:, None], valid)
        # End-point error of the final flow away from the border (not trained on).
        epe = jnp.linalg.norm(flows[:, -1, 8:-8, 8:-8] - jnp.asarray(shift, jnp.float32), axis=-1)
        return loss, jnp.mean(epe)

    @jax.jit
    def train_step(p, opt, a, b):
        (_, epe), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, a, b)
        updates, opt = tx.update(grads, opt, p)
        return optax.apply_updates(p, updates), opt, epe

    opt = tx.init(params)
    errors = []
    for _ in range(31):  # the error of each fresh batch is measured before its update
        params, opt, epe = train_step(params, opt, *_translated_pairs(rng, 4, shift))
        errors.append(float(epe))
    norm = float(np.hypot(*shift))
    assert errors[0] > 0.7 * norm  # starts near zero flow
    assert errors[-1] < 0.3 * norm, errors


def test_full_size_parameters_and_hs2s_part_unchanged():
    """At 256x448: HS2S's variables under the same names and shapes, plus the RAFT modules."""
    frames = jax.ShapeDtypeStruct((1, 2, 256, 448, 3), jnp.uint8)
    masks = jax.ShapeDtypeStruct((1, 2, 256, 448, 1), jnp.float32)
    shapes = {}
    for name in ("hs2s", "raft_hs2s"):
        cfg = {k: v for k, v in raft_config.get_config().model.items() if k != "raft_init"}
        if name == "hs2s":
            cfg = {k: v for k, v in cfg.items() if k not in raft_config.RAFT_FIELDS}
        model = models.build({**cfg, "name": name})
        shapes[name] = torch_keys.flatten_variables(mt.variable_shapes(model, frames, masks))
    hs2s, raft = shapes["hs2s"], shapes["raft_hs2s"]
    assert {p: v.shape for p, v in raft.items() if p in hs2s} == {
        p: v.shape for p, v in hs2s.items()
    }
    extra = {p[1] for p in set(raft) - set(hs2s)}
    assert extra == {"match_proj", "context_proj", "update_block"}

    def count(flat, prefix=""):
        return sum(
            int(np.prod(v.shape))
            for p, v in flat.items()
            if p[0] == "params" and p[1].startswith(prefix)
        )

    assert count(hs2s) == 395_759_593
    assert count(raft, "update_block") == 3_120_960
    assert count(raft) == 399_143_209


# --- evaluation with save_flow ------------------------------------------------------------------

TINY = {"name": "raft_hs2s", **models.family("raft_hs2s").tiny}
IMAGE_SIZE = (32, 64)


def _config(synthetic, model, **eval_overrides):
    return mt.config_with_model(
        model,
        **{
            "data.image_size": IMAGE_SIZE,
            "data.eval_dir": synthetic.valid,
            "eval.save_flow": True,
            **{f"eval.{k}": v for k, v in eval_overrides.items()},
        },
    )


def test_save_flow_writes_colour_pngs_per_frame(synthetic, tmp_path):
    model = models.build(TINY)
    variables = mt.random_variables(model)
    workdir = str(tmp_path / "work")
    ckpt = checkpoints.TrainCheckpointer(workdir, save_interval_steps=1, max_to_keep=1)
    ckpt.save(3, dict(variables), force=True)
    ckpt.wait()
    ckpt.close()
    config = _config(synthetic, TINY)
    result = job.run(config, workdir)
    assert result["scored"]
    out = os.path.join(workdir, "eval", "valid")
    reader = vos_reader.VOSReader(synthetic.valid)
    for video in reader.video_names():
        info = reader.video(video)
        written = sorted(os.listdir(os.path.join(out, "Flow", video)))
        # Every frame after the first object's first (frame 0: videos start with an object) has
        # the flow into it.
        assert written == [s + ".png" for s in info.frames[1:]]
        for name in written:
            with Image.open(os.path.join(out, "Flow", video, name)) as im:
                assert im.mode == "RGB" and im.size == (info.width, info.height)
                rgb = np.asarray(im)
            assert rgb.std() > 0  # a random model's flow is not constant
    # A finished video whose flows are gone is evaluated again.
    video = reader.video_names()[0]
    for name in os.listdir(os.path.join(out, "Flow", video)):
        os.remove(os.path.join(out, "Flow", video, name))
    os.rmdir(os.path.join(out, "Flow", video))
    job.run(config, workdir)
    assert len(os.listdir(os.path.join(out, "Flow", video))) >= 2

    # The streaming predictor hands the flows out per object, at the model size.
    predictor = predictors.predictor_for(model, variables, IMAGE_SIZE, outputs=("flow",))
    clip = np.asarray(mt.clip(1, 3, 40, 60)[0][0])
    first = np.zeros((40, 60), bool)
    first[10:30, 10:40] = True
    steps = list(predictor.predict_with_outputs(clip, {2: (0, first)}))
    assert steps[0][1] == {"flow": {}}
    assert steps[1][1]["flow"][2].shape == (*IMAGE_SIZE, 2)


def test_save_flow_without_a_flow_output_is_an_error(synthetic):
    hs2s = {"name": "hs2s", **models.family("hs2s").tiny}
    config = _config(synthetic, hs2s)
    with pytest.raises(ValueError, match="save_flow=True.*'hs2s'.*no 'flow' output"):
        predict.predictor(config, None)
    with pytest.raises(ValueError, match="no per-frame outputs"):
        predictors.predictor_for(models.build(hs2s), None, IMAGE_SIZE, outputs=("flow",))
