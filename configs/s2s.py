r"""S2S baseline (Xu et al. 2018) as the authors reimplemented it ("base model", paper A table II).

VGG16 initializer/encoder, one ConvLSTM at 1/32, skip-connected decoder with a single logit head
(no distance branch), trained with the S2S++ recipe (see configs/s2s_pp.py) minus the distance
loss: 0.6 balanced BCE + 0.2 Jaccard per frame.

Train:
  python -m rnn_vos_jax.main --config=configs/s2s.py --workdir=runs/s2s \
      --config.data.train_records=DATA/train --config.data.eval_dir=YTVOS/valid
Demo (laptop CPU):
  python -m rnn_vos_jax.main --config=configs/s2s.py:demo --workdir=runs/demo_s2s

Arguments (comma separated): demo, bf16.
"""

import ml_collections

from rnn_vos_jax.configs import common, s2s_pp

# Config arguments of the variants benchmarks/param_counts.py lists ("" = the default recipe).
VARIANTS = ("",)


def get_config(arg=None):
    arg = common.parse_arg(arg, demo=False, bf16=False)
    c = common.base_config()
    m = ml_collections.ConfigDict()
    m.name = "s2s"
    m.encoder_head = "authors_1x1"
    m.cell = "authors"
    m.width_divisor = 1
    m.remat = False
    m.scan_unroll = 1  # time steps per scan iteration; CPU runs: the clip length
    m.dtype = "bfloat16" if arg.bf16 else "float32"
    m.backbone_init = ""  # ImageNet VGG16 weights (.pth); '' = random
    c.model = m
    s2s_pp.recipe(c)
    c.train.loss.distance_weight = 0.0
    if arg.demo:
        common.shrink_for_demo(c)
        c.model.width_divisor = 16
    c.lock()
    return c
