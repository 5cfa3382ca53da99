r"""RAFT-HS2S (paper B §3.3; no released code, spec §6): HS2S + a RAFT flow head, multi-task.

The HS2S recipe (configs/hs2s.py, unchanged) plus the flow head between frames t-1 and t: Enc f8
matching features and RefEnc f8 context through 1x1 projections, 4-level radius-4 all-pairs
correlation at 1/8, RAFT's update block, 12 iterations from zero flow, convex x8 upsampling,
trained only by the photometric loss (L1 of frame t-1 against frame t warped back by the flow,
every iteration, gamma 0.8 weights normalised to sum 1) added with weight 1.0 to the HS2S loss.

Train (TPU pod / GPUs; see launch/):
  python -m rnn_vos_jax.main --config=configs/raft_hs2s.py --workdir=runs/raft_hs2s \
      --config.data.train_records=DATA/train --config.data.eval_dir=YTVOS/valid \
      [--config.model.backbone_init=resnet50.pth] [--config.model.raft_init=raft-things.pth]
Evaluate (with the flow of every frame as colour PNGs under eval/<split>/Flow/):
  python -m rnn_vos_jax.main --config=configs/raft_hs2s.py --workdir=runs/raft_hs2s \
      --mode=eval --config.eval.save_flow=True
Demo (laptop CPU, no dataset: synthetic data -> convert -> train -> eval -> J&F table):
  python -m rnn_vos_jax.main --config=configs/raft_hs2s.py:demo --workdir=runs/raft_demo

Arguments: those of configs/hs2s.py (demo, resnet101, bf16, backbone=, cell=, skip_cell=,
fusion=, references=), with the same meaning.

config.model.raft_init=FILE starts the update block from a princeton-vl/RAFT checkpoint
(raft-things.pth layout, module.update_block.*; models/raft/weights.py); it needs the RAFT widths
(raft_width_divisor 1) and corr_levels 4 / corr_radius 4.
"""

import ml_collections

from rnn_vos_jax.configs import hs2s

# Config arguments of the variants benchmarks/param_counts.py lists ("" = the default recipe).
VARIANTS = ("", "resnet101")
# The model fields RAFT-HS2S adds to HS2S's.
RAFT_FIELDS = ("flow_iters", "corr_levels", "corr_radius", "raft_width_divisor")


def add_raft(c: ml_collections.ConfigDict) -> None:
    """The flow head's model fields, its weight file and its loss terms (spec §6 defaults)."""
    c.model.name = "raft_hs2s"
    c.model.flow_iters = 12  # RAFT's training default, also at inference [CHOSEN]
    c.model.corr_levels = 4
    c.model.corr_radius = 4
    c.model.raft_width_divisor = 1  # > 1: thinner RAFT widths (demo, tests)
    c.model.raft_init = ""  # princeton-vl/RAFT checkpoint for the update block; '' = torch init
    c.train.loss.photo_weight = 1.0  # the paper gives no weight [CHOSEN]
    c.train.loss.photo_gamma = 0.8  # RAFT's iteration decay, weights normalised to sum 1


def demo(c: ml_collections.ConfigDict) -> None:
    """On top of HS2S's demo_base (configs/hs2s.py; `demo` and `demo_base` both give it, the
    recipe of the recorded RAFT-HS2S demo): RAFT widths / 16 (as the HS2S widths) and 3 iterations, so the flow head adds about 40% to the tiny HS2S's training FLOPs (7.3 against
    5.1 GFLOP per step, XLA's estimate; each iteration costs 0.7). 96x96 frames give a 12x12 map
    at 1/8, where RAFT's 4 levels and radius 4 still fit."""
    hs2s.demo_base(c)
    c.model.raft_width_divisor = 16
    c.model.flow_iters = 3


def get_config(arg=None):
    # 'demo' is HS2S's demo_base here (see demo): HS2S's own demo changes training and
    # evaluation beyond demo_base, which the recorded RAFT-HS2S demo did not have.
    if arg:
        arg = ",".join("demo_base" if a.strip() == "demo" else a for a in arg.split(","))
    c = hs2s.get_config(arg)
    with c.unlocked():
        add_raft(c)
        if c.demo.enabled:
            demo(c)
    c.lock()
    return c
