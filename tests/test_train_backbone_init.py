"""Training from scratch with config.model.backbone_init loads ImageNet weights into both encoders."""

import jax
import numpy as np

from rnn_vos_jax import models
from rnn_vos_jax.models import backbones
from rnn_vos_jax.training import loop
from tests.tiny_run import tiny_config


def _torchvision_npz(path, width_divisor, depth_divisor):
    """A torchvision-layout ResNet state dict (as .npz) made from our own backbone's random init
    through its inverse key map."""
    model = backbones.build("resnet50", depth_divisor=depth_divisor, width_divisor=width_divisor)
    v = model.init(jax.random.PRNGKey(7), np.zeros((1, 32, 64, 3), np.float32))
    state = backbones.torchvision_state(v, "resnet50")
    np.savez(path, **state)
    return state


def test_scratch_variables_take_backbone_init(tmp_path):
    config = tiny_config()
    npz = str(tmp_path / "resnet50.npz")
    state = _torchvision_npz(npz, config.model.width_divisor, config.model.depth_divisor)
    config.model.backbone_init = npz
    model = models.build(config.model)
    got = loop.scratch_variables(config, model)
    key = jax.random.key(int(config.seed), impl="rbg")
    fresh = jax.device_get(models.init_variables(model, key, tuple(config.data.image_size)))
    for enc in ("encoder_ref", "encoder"):
        p, s = got["params"][enc], got["batch_stats"][enc]
        np.testing.assert_array_equal(
            p["conv1"]["kernel"], state["conv1.weight"].transpose(2, 3, 1, 0)
        )
        np.testing.assert_array_equal(p["bn"]["scale"], state["bn1.weight"])
        np.testing.assert_array_equal(s["bn"]["var"], state["bn1.running_var"])
        np.testing.assert_array_equal(
            p["conv5"]["0"]["downsample"]["0"]["kernel"],
            state["layer4.0.downsample.0.weight"].transpose(2, 3, 1, 0),
        )
        # The authors' new layers keep the fresh init.
        np.testing.assert_allclose(
            p["mask_conv"]["kernel"], fresh["params"][enc]["mask_conv"]["kernel"], rtol=1e-6
        )
    np.testing.assert_allclose(
        got["params"]["decoder"]["merge_"]["kernel"],
        fresh["params"]["decoder"]["merge_"]["kernel"],
        rtol=1e-6,
    )
