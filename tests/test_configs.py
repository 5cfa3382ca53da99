"""Configs: recipes, variants, locking/overrides, and the epoch schedules they drive."""

import inspect
import re

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tiny_run
from absl import flags
from ml_collections import config_flags

from rnn_vos_jax import models
from rnn_vos_jax.configs import bi_hs2s, common, hs2s, s2s, s2s_pp
from rnn_vos_jax.data import distance
from rnn_vos_jax.training import schedules

FAMILIES = {"hs2s": hs2s, "s2s": s2s, "s2s_pp": s2s_pp, "bi_hs2s": bi_hs2s}
CLASSES = {"hs2s": "HS2S", "s2s": "S2S", "s2s_pp": "S2SPlusPlus", "bi_hs2s": "BiHS2S"}


def _parse(argv):
    """Parses `argv` as main.py does (config_flags reads overrides from the given argv)."""
    values = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", None, "config", flag_values=values, lock_config=True, sys_argv=argv
    )
    values(argv)
    return values.config


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("arg", [None, "demo"])
def test_every_config_builds_its_model(name, arg):
    config = FAMILIES[name].get_config(arg)
    model = models.build(config.model)
    assert config.model.name == name
    assert type(model).__name__ == CLASSES[name]
    h, w = config.data.image_size
    assert h % 32 == 0 and w % 32 == 0
    if "num_classes" in config.model:
        k = distance.num_distance_classes(config.data.border, config.data.bin_size)
        assert config.model.num_classes == k
    assert config.demo.enabled == (arg == "demo")
    assert config.is_locked


def test_every_registered_family_has_its_config_file():
    """configs/<family>.py is how benchmarks and users find a family's recipe."""
    import importlib

    for name in models.FAMILIES:
        module = importlib.import_module(f"rnn_vos_jax.configs.{name}")
        for arg in module.VARIANTS:
            assert module.get_config(arg or None).model.name == name


def test_hs2s_default_is_the_authors_recipe():
    c = hs2s.get_config()
    assert c.model.backbone == "resnet50" and c.model.num_ch == 1024 and c.model.num_classes == 42
    assert tuple(c.data.image_size) == (256, 448) and c.data.batch_size == 15
    assert (c.data.min_clip_len, c.data.max_clip_len, c.data.curriculum) == (5, 10, "uniform")
    assert (c.data.curriculum_start, c.data.curriculum_epochs) == (5, 10)
    t = c.train
    assert (t.optimizer, t.learning_rate, t.num_epochs) == ("adam", 1e-4, 750)
    assert (t.lr_decay.after_epoch, t.lr_decay.every_epochs, t.lr_decay.factor) == (650, 5, 0.9)
    ss = t.scheduled_sampling
    assert (ss.enabled, ss.offset_epochs, ss.slope, ss.epsilon_floor) == (True, 300, 0.004, 0.5)
    assert t.bn_freeze_after_epoch == 500
    assert (t.loss.bce_weight, t.loss.jaccard_weight, t.loss.distance_weight) == (0.6, 0.2, 0.2)
    assert hs2s.get_config("resnet101,bf16").model.backbone == "resnet101"
    assert hs2s.get_config("bf16").model.dtype == "bfloat16"


def test_demo_is_demo_base_made_wider_and_shorter_and_raft_keeps_demo_base():
    base, demo = hs2s.get_config("demo_base"), hs2s.get_config("demo")
    assert (base.model.width_divisor, demo.model.width_divisor) == (16, 8)
    assert (base.train.num_epochs, demo.train.num_epochs) == (80, 16)
    assert (base.train.lr_decay.kind, demo.train.lr_decay.kind) == ("step", "cosine")
    assert (base.demo.num_train, demo.demo.num_train) == (48, 96)
    assert demo.train.bn_freeze_after_epoch == -1 and base.train.bn_freeze_after_epoch == 72
    assert (base.train.lr_warmup_steps, demo.train.lr_warmup_steps) == (0, 50)
    assert (base.eval.feedback, demo.eval.feedback) == ("independent", "exclusive")
    # Everything else (data, loss, the model's blocks) is demo_base's.
    assert demo.data.to_dict() == base.data.to_dict()
    assert demo.train.loss.to_dict() == base.train.loss.to_dict()
    assert {**demo.model.to_dict(), "width_divisor": 16, "mask_morph": 0} == base.model.to_dict()
    assert {**demo.eval.to_dict(), "feedback": "independent"} == base.eval.to_dict()
    from rnn_vos_jax.configs import raft_hs2s

    for arg in ("demo", "demo_base"):
        raft = raft_hs2s.get_config(arg)
        same = lambda t: {k: v for k, v in t.to_dict().items() if k != "loss"}  # + photo loss
        assert same(raft.train) == same(base.train) and raft.model.width_divisor == 16


def test_bi_hs2s_is_the_hs2s_recipe_with_its_model():
    # Bi-HS2S's demo is HS2S's demo_base (the recipe its recorded demo used).
    for arg in (None, "demo", "resnet101,bf16", "demo,fusion=cosine"):
        hs_arg = arg and arg.replace("demo", "demo_base")
        hs, bi = hs2s.get_config(hs_arg).to_dict(), bi_hs2s.get_config(arg).to_dict()
        assert {k: v for k, v in bi.items() if k != "model"} == {
            k: v for k, v in hs.items() if k != "model"
        }
        del hs["model"]["references"]
        assert bi["model"] == {**hs["model"], "name": "bi_hs2s"}
    with pytest.raises(ValueError, match="'references'"):
        bi_hs2s.get_config("references=first")


def test_s2s_pp_default_is_the_authors_recipe_and_skip_variants():
    c = s2s_pp.get_config()
    assert c.model.num_skip_memories == 2 and c.model.encoder_head == "authors_1x1"
    assert c.data.batch_size == 4 and c.data.curriculum == "fixed_then_uniform"
    t = c.train
    assert (t.learning_rate, t.num_epochs) == (1e-5, 400)
    assert (t.lr_decay.after_epoch, t.lr_decay.every_epochs, t.lr_decay.factor) == (150, 4, 0.99)
    assert not t.scheduled_sampling.enabled and t.bn_freeze_after_epoch == -1
    for skip in (0, 1, 2):
        assert s2s_pp.get_config(f"skip={skip}").model.num_skip_memories == skip
    assert s2s_pp.get_config("fcn").model.encoder_head == "fcn_7x7"
    with pytest.raises(ValueError, match="skip=3"):
        s2s_pp.get_config("skip=3")
    assert s2s.get_config().train.loss.distance_weight == 0.0


def test_data_section_has_exactly_the_pipeline_keys():
    pipeline = pytest.importorskip("rnn_vos_jax.data.pipeline")
    from rnn_vos_jax.data import augment, eval_records, record_files  # TensorFlow too

    expected = set(pipeline.DATA_KEYS)
    assert len(expected) == len(pipeline.DATA_KEYS)
    assert set(common.data_config(batch_size=1, curriculum="none")) == expected
    for module in FAMILIES.values():
        for arg in (None, "demo"):
            assert set(module.get_config(arg).data) == expected
    # Every key the pipeline and the augmentation read is one of them, and is documented.
    read = set()
    for module in (pipeline, augment, eval_records, record_files):
        source = inspect.getsource(module)
        read |= set(re.findall(r"(?<![.\w])data\.(\w+)", source))  # not tf.data.X
        read |= set(re.findall(r"(?<![.\w])data\.get\(\"(\w+)\"", source))
    read -= {"get"}
    assert "max_frame_skip" in read and "affine_units" in read  # the patterns do match
    assert read <= expected, read - expected
    for key in expected:
        assert re.search(rf"^  (\w+, )*{key}\b", pipeline.__doc__, re.MULTILINE), key


def test_bad_config_argument_is_named():
    with pytest.raises(ValueError, match="'resnet152'"):
        hs2s.get_config("demo,resnet152")
    with pytest.raises(ValueError, match="skip"):
        common.parse_arg("skip=two", skip=2)
    assert common.parse_arg("demo, skip=1", demo=False, skip=2).to_dict() == {
        "demo": True,
        "skip": 1,
    }


def test_command_line_overrides_and_misspelled_key():
    config = _parse(
        [
            "main",
            "--config=configs/hs2s.py:demo",
            "--config.train.learning_rate=0.5",
            "--config.data.image_size=(32,64)",
            "--config.eval.step=7",
            "--config.model.blocks=(1,2,1,1)",
        ]
    )
    assert config.train.learning_rate == 0.5
    assert tuple(config.data.image_size) == (32, 64)
    assert config.eval.step == 7 and tuple(config.model.blocks) == (1, 2, 1, 1)
    with pytest.raises(AttributeError, match="learnin_rate"):
        _parse(["main", "--config=configs/hs2s.py", "--config.train.learnin_rate=0.5"])
    with pytest.raises(KeyError, match="bogus"):
        _parse(["main", "--config=configs/s2s_pp.py:skip=1", "--config.bogus.x=1"])
    # Code typos fail too: the config is locked.
    config = hs2s.get_config()
    with pytest.raises(AttributeError, match="num_epoch"):
        config.train.num_epoch = 3


def test_tiny_run_command_line_gives_its_config():
    """tests/tiny_run.py's flags (tuples written as '(32, 64)') parse to the config its
    tiny_config builds: the subprocess runs train what the in-process runs train."""
    changes = {"demo.frame_size": (32, 64), "data.train_records": "/records"}
    argv = ["main", "--config=configs/hs2s.py:demo", *tiny_run.command_line(**changes)]
    assert "--config.data.image_size=(32, 64)" in argv
    assert _parse(argv).to_dict() == tiny_run.tiny_config(**changes).to_dict()


@pytest.mark.parametrize("name", ["hs2s", "s2s_pp"])
def test_num_classes_follows_the_distance_data_keys(name):
    from rnn_vos_jax.training import loop  # TensorFlow-free at import

    config = _parse(
        [
            "main",
            f"--config=configs/{name}.py",
            "--config.data.border=10",
            "--config.data.bin_size=5",
        ]
    )
    assert config.model.num_classes == 6 == distance.num_distance_classes(10, 5)
    assert hs2s.get_config("demo").model.num_classes == 6  # the demo sets border 10 / bin 5
    loop.check_distance_classes(config)
    config = _parse(["main", f"--config=configs/{name}.py", "--config.model.num_classes=6"])
    with pytest.raises(ValueError, match="num_classes=6.*border=20.*bin_size=1.*42"):
        loop.check_distance_classes(config)


def test_hs2s_schedules_follow_the_authors_epochs():
    t = hs2s.get_config().train
    spe = 2.5  # steps per epoch (pairs / batch) need not be an integer
    lr = schedules.learning_rate_fn(t, spe)

    def lr_at(epoch):
        return float(lr(jnp.int32(int(np.ceil(epoch * spe)))))

    # StepLR stepped after every epoch > 650: first decay takes effect in epoch 656.
    assert lr_at(0) == pytest.approx(1e-4) and lr_at(655) == pytest.approx(1e-4)
    assert lr_at(656) == pytest.approx(0.9e-4) and lr_at(661) == pytest.approx(0.81e-4)
    assert lr_at(749) == pytest.approx(1e-4 * 0.9**19)

    def prob(epoch):
        return schedules.sample_prob(int(np.ceil(epoch * spe)), t, spe)

    assert prob(0) == 0 and prob(300) == 0
    assert prob(301) == pytest.approx(0.004) and prob(400) == pytest.approx(0.4)
    assert prob(425) == pytest.approx(0.5) and prob(700) == pytest.approx(0.5)
    assert schedules.batchnorm_train(int(500 * spe), t, spe)
    assert not schedules.batchnorm_train(int(np.ceil(501 * spe)), t, spe)
    # The epoch of a step is the pipeline's epoch of the batch's first sample.
    pairs, batch = 7, 3
    for step in range(40):
        assert schedules.epoch_of(step, pairs / batch) == step * batch // pairs


def _cosine_train(after_epoch: int) -> ml_collections.ConfigDict:
    """A copy of HS2S's train config: lr 1e-3 for 30 epochs, cosine to 0.1x from after_epoch."""
    t = ml_collections.ConfigDict(hs2s.get_config().train.to_dict())
    t.learning_rate, t.num_epochs = 1e-3, 30
    t.lr_decay.update(kind="cosine", after_epoch=after_epoch, factor=0.1)
    return t


def test_cosine_learning_rate_decay_known_values_and_bad_kind():
    t, spe = _cosine_train(10), 4.0
    lr = schedules.learning_rate_fn(t, spe)
    at = [float(lr(jnp.int32(round(e * spe)))) for e in (0, 10, 15, 20, 25, 30, 40)]
    half = 0.1 + 0.9 * 0.5  # halfway through the decay: cos(pi / 2) = 0
    quarter = 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi / 4))
    expected = [1.0, 1.0, quarter, half, 0.1 + 0.9 - (quarter - 0.1), 0.1, 0.1]
    np.testing.assert_allclose(at, np.multiply(expected, 1e-3), rtol=1e-5)
    # Per step, not per epoch: the rate already moves within epoch 11.
    assert float(lr(jnp.int32(41))) < float(lr(jnp.int32(40))) == pytest.approx(1e-3)
    # num_steps > 0 ends the run, and the decay with it, at num_steps / steps_per_epoch.
    t.num_steps = 80  # epoch 20
    short = schedules.learning_rate_fn(t, spe)
    assert float(short(jnp.int32(60))) == pytest.approx(1e-3 * half)  # epoch 15: halfway
    assert float(short(jnp.int32(80))) == pytest.approx(1e-4)
    t.num_steps, t.lr_decay.after_epoch = 0, 30  # a run that ends first never decays
    assert float(schedules.learning_rate_fn(t, spe)(jnp.int32(119))) == pytest.approx(1e-3)
    t.lr_decay.kind = "linear"
    with pytest.raises(ValueError, match="lr_decay.kind must be 'step' or 'cosine', got 'linear'"):
        schedules.learning_rate_fn(t, spe)


def test_warmup_ramps_linearly_into_the_decayed_rate_and_rejects_negative_steps():
    t, spe = _cosine_train(0), 4.0
    plain = schedules.learning_rate_fn(t, spe)
    t.lr_warmup_steps = 8
    warm = schedules.learning_rate_fn(t, spe)
    for step in (0, 3, 7):  # the cosine has already started: warmup scales the decayed rate
        assert float(warm(jnp.int32(step))) == pytest.approx(float(plain(step)) * (step + 1) / 8)
    for step in (8, 9, 60, 120):
        assert float(warm(jnp.int32(step))) == pytest.approx(float(plain(step)))
    assert float(warm(0)) == pytest.approx(1e-3 / 8)
    t.lr_warmup_steps = -1
    with pytest.raises(ValueError, match="lr_warmup_steps must be >= 0, got -1"):
        schedules.learning_rate_fn(t, spe)


def test_s2s_pp_schedule_and_disabled_switches():
    t = s2s_pp.get_config().train
    lr = schedules.learning_rate_fn(t, 1.0)
    assert float(lr(jnp.int32(154))) == pytest.approx(1e-5)
    assert float(lr(jnp.int32(155))) == pytest.approx(0.99e-5)
    assert schedules.sample_prob(10**6, t, 1.0) == 0.0
    assert schedules.batchnorm_train(10**6, t, 1.0)
    flat = ml_collections.ConfigDict(t.to_dict())
    flat.lr_decay.after_epoch = -1
    assert float(schedules.learning_rate_fn(flat, 1.0)(jnp.int32(10**5))) == pytest.approx(1e-5)
