"""Shared by test_train.py, test_demo.py and test_multiprocess.py: the tiny training run.

test_train and test_demo train the demo's tiny HS2S with exactly these settings, so the step
compiled by one (in-process or in a subprocess) is a hit in the session's persistent compilation
cache (conftest.py) for the other.
"""

from rnn_vos_jax.configs import hs2s

STEPS = 6
# Dotted config keys and their values: `tiny_config` applies them, `command_line` writes them as
# --config.KEY=VALUE flags.
OVERRIDES = {
    "data.image_size": (32, 64),
    "model.width_divisor": 16,  # demo_base's width: the tests' tiny model
    "data.batch_size": 2,
    "data.min_clip_len": 1,
    "data.max_clip_len": 2,
    "data.shuffle_buffer": 8,
    "mesh.num_devices": 2,
    "train.steps_per_epoch": 2.0,
    "train.num_steps": STEPS,
    "train.log_every_steps": 1,
    "train.checkpoint.every_steps": 2,
    "train.checkpoint.keep": 10,
    "train.scheduled_sampling.offset_epochs": 0,
    "train.scheduled_sampling.slope": 0.25,
    "train.bn_freeze_after_epoch": 1,
    "train.learning_rate": 1e-3,
    "train.lr_warmup_steps": 0,  # the demo's 50 would keep 6 steps at a tiny rate
}


def tiny_config(records: str = "", **changes):
    """configs/hs2s.py:demo with OVERRIDES (and `changes`, dotted keys) applied."""
    c = hs2s.get_config("demo")
    c.data.train_records = records
    c.update_from_flattened_dict({**OVERRIDES, **changes})
    return c


def command_line(**changes) -> list[str]:
    """OVERRIDES (and `changes`) as --config.KEY=VALUE flags (a tuple as '(32, 64)')."""
    return [f"--config.{k}={v}" for k, v in {**OVERRIDES, **changes}.items()]
