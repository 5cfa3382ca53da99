r"""Bi-HS2S (paper B §3.2): HS2S with forward and backward memories, offline inference.

The recipe is HS2S's (configs/hs2s.py: ResNet-50 encoders, 256x448, Adam 1e-4, batch 15, 750
epochs, clip length U{5..min(5 + epoch // 10, 10)}, scheduled sampling from epoch 300, BatchNorm
frozen after epoch 500, StepLR after 650, 0.6 BCE + 0.2 Jaccard + 0.2 distance CE); paper B gives
no other. The model (rnn_vos_jax/models/bi_hs2s.py) is variants-spec.md §5.

Train (TPU pod / GPUs; see launch/):
  python -m rnn_vos_jax.main --config=configs/bi_hs2s.py --workdir=runs/bi_hs2s \
      --config.data.train_records=DATA/train --config.data.eval_dir=YTVOS/valid
Evaluate (offline: each object's whole clip at once; long videos in windows of N frames):
  python -m rnn_vos_jax.main --config=configs/bi_hs2s.py --workdir=runs/bi_hs2s --mode=eval \
      [--config.eval.clip_window=40 --config.eval.clip_overlap=8]
Demo (laptop CPU, no dataset: synthetic data -> convert -> train -> eval -> J&F table):
  python -m rnn_vos_jax.main --config=configs/bi_hs2s.py:demo --workdir=runs/bi_demo

Arguments (comma separated): demo, resnet101, bf16, and by name backbone=NAME (both encoders),
cell=NAME / skip_cell=NAME (forward and backward memories; 'authors' or 'tanh', the cells with a
ConvLSTM (h, c) state the initializer can make), fusion=NAME (the reference matching).
"""

import ml_collections

from rnn_vos_jax.configs import common, hs2s

# Config arguments of the variants benchmarks/param_counts.py lists ("" = the default recipe).
VARIANTS = ("", "resnet101")


def model_config(arg, data) -> ml_collections.ConfigDict:
    """config.model: HS2S's keys (configs/hs2s.py) without `references` (both are matched);
    every key but name/backbone_init is a field of models.bi_hs2s.BiHS2S."""
    m = hs2s.model_config(ml_collections.ConfigDict({**arg.to_dict(), "references": "both"}), data)
    m.name = "bi_hs2s"
    del m["references"]
    return m


def demo(c) -> None:
    """HS2S's demo_base (configs/hs2s.py: width / 16, 96x96 frames, clips of 4..6 predicted
    frames, jittered GT previous masks, scheduled sampling from epoch 5), for the Bi-HS2S model;
    `demo_base` is the same thing here.

    The same schedule as HS2S's demo_base, so the two J&F compare the models; each step costs more
    than HS2S's (two more memories and a third scan) but nothing else changes."""
    hs2s.demo_base(c)


def get_config(arg=None):
    # HS2S's arguments but `references`: Bi-HS2S always matches both reference frames.
    arg = common.parse_arg(arg, **{k: v for k, v in hs2s.ARGS.items() if k != "references"})
    c = hs2s.get_config("bf16" if arg.bf16 else None)
    c.unlock()
    c.model = model_config(arg, c.data)
    if arg.demo or arg.demo_base:
        demo(c)
    c.lock()
    return c
