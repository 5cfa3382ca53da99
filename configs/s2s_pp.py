r"""S2S++ (paper A, authors' RS2S code): S2S with skip-memories and the border-distance loss.

Default = the authors' recipe: VGG16 encoder/initializer, 2 skip-memories, 256x448, Adam 1e-5,
batch 4 (one object per sample), 400 epochs, clip length 5 + epoch // 10 until it passes 10, then
U{5..10}, StepLR x0.99 every 4 epochs after epoch 150, loss 0.6 BCE + 0.2 Jaccard + 0.2 distance
CE (border 20, bin 1 -> 42 classes). No scheduled sampling (the encoder takes no mask).

Train:
  python -m rnn_vos_jax.main --config=configs/s2s_pp.py --workdir=runs/s2s_pp \
      --config.data.train_records=DATA/train --config.data.eval_dir=YTVOS/valid
Ablation with one skip-memory (paper A table II):
  python -m rnn_vos_jax.main --config=configs/s2s_pp.py:skip=1 --workdir=runs/s2s_pp_skip1
Demo (laptop CPU):
  python -m rnn_vos_jax.main --config=configs/s2s_pp.py:demo --workdir=runs/demo_s2s_pp

Arguments (comma separated): skip=0|1|2 (skip-memories), demo, bf16, fcn (proper FCN fc6/fc7
encoder head instead of the authors' 1x1 reuse of fc6; cannot load their checkpoints).
"""

import ml_collections

from rnn_vos_jax.configs import common

# Config arguments of the variants benchmarks/param_counts.py lists ("" = the default recipe).
VARIANTS = ("", "fcn")


def model_config(arg, data) -> ml_collections.ConfigDict:
    """config.model for S2S++; every key but name/backbone_init is a field of the model."""
    if arg.skip not in (0, 1, 2):
        raise ValueError(f"config argument skip={arg.skip}; S2S++ has 0, 1 or 2 skip-memories")
    m = ml_collections.ConfigDict()
    m.name = "s2s_pp"
    m.num_skip_memories = arg.skip
    m.use_distance = True
    m.num_classes = common.distance_classes(data)  # 42 = 2 * (data.border // data.bin_size) + 2
    m.encoder_head = "fcn_7x7" if arg.fcn else "authors_1x1"
    m.cell = "authors"  # ConvLSTM with sigmoid g / ReLU c ('tanh': the standard cell)
    m.width_divisor = 1
    m.remat = False
    m.scan_unroll = 1  # time steps per scan iteration; CPU runs: the clip length
    m.dtype = "bfloat16" if arg.bf16 else "float32"
    m.backbone_init = ""  # ImageNet VGG16 weights (.pth); '' = random
    return m


def recipe(c: ml_collections.ConfigDict) -> None:
    """Data and training of the authors' RS2S train.py (shared with the S2S baseline)."""
    c.data = common.data_config(batch_size=4, curriculum="fixed_then_uniform")
    c.train = common.train_config(
        learning_rate=1e-5,
        num_epochs=400,
        decay_after_epoch=150,
        decay_every_epochs=4,
        decay_factor=0.99,
        scheduled_sampling=False,
        bn_freeze_after_epoch=-1,
    )


def get_config(arg=None):
    arg = common.parse_arg(arg, skip=2, demo=False, bf16=False, fcn=False)
    c = common.base_config()
    recipe(c)
    c.model = model_config(arg, c.data)
    if arg.demo:
        common.shrink_for_demo(c)
        c.model.width_divisor = 16
    c.lock()
    return c
