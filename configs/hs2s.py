r"""HS2S (paper B, authors' HS2S code): RNN memory + matching to reference frames.

Default = the authors' recipe: ResNet-50 encoders, 256x448, Adam 1e-4, batch 15 (their 5 GPUs x 3;
the paper says 16), 750 epochs, clip length U{5..min(5 + epoch // 10, 10)}, scheduled sampling
from epoch 300 (slope 0.004/epoch, epsilon floor 0.5), BatchNorm frozen after epoch 500, StepLR
x0.9 every 5 epochs after epoch 650, loss 0.6 BCE + 0.2 Jaccard + 0.2 distance CE (42 classes).

Train (TPU pod / GPUs; see launch/):
  python -m rnn_vos_jax.main --config=configs/hs2s.py --workdir=runs/hs2s \
      --config.data.train_records=DATA/train --config.data.eval_dir=YTVOS/valid
Evaluate:
  python -m rnn_vos_jax.main --config=configs/hs2s.py --workdir=runs/hs2s --mode=eval
Demo (laptop CPU, no dataset: synthetic data -> convert -> train -> eval -> J&F table):
  python -m rnn_vos_jax.main --config=configs/hs2s.py:demo --workdir=runs/demo

Arguments (comma separated): demo, demo_base (the recipe of the recorded family demos and
ablation tables), resnet101, bf16, and the building blocks by name (paper B's
ablations; an unknown name is an error listing the known ones):
  backbone=NAME     both encoders (models/backbones/; resnet101 = backbone=resnet101)
  cell=NAME         the bottleneck memory (models/cells/: authors, tanh, deep_rnn, tt_lstm)
  skip_cell=NAME    the skip memory (default authors: the ablations swap only the bottleneck)
  fusion=NAME       the reference matching (models/fusion/: gc, cosine, axial)
  references=WHICH  both, first (HS2S_0) or previous (HS2S_{t-1})
e.g. --config=configs/hs2s.py:demo,cell=tt_lstm,fusion=axial,references=first
"""

import ml_collections
from ml_collections import config_dict

from rnn_vos_jax.configs import common

# Config arguments of the variants benchmarks/param_counts.py lists ("" = the default recipe).
VARIANTS = (
    "",
    "resnet101",
    "backbone=vgg16",
    "backbone=deeplab_r50",
    "backbone=deeplab_r50_aspp",
    "backbone=axial_s",
    "cell=tanh",
    "cell=deep_rnn",
    "cell=tt_lstm",
    "fusion=cosine",
    "fusion=axial",
    "references=first",
    "references=previous",
)

# The config arguments (name -> default) of this file, also Bi-HS2S's and RAFT-HS2S's. Block names
# are checked where the model is built, by the registries (an unknown one lists the known ones).
ARGS = {
    "demo": False,
    "demo_base": False,
    "resnet101": False,
    "bf16": False,
    "backbone": "",
    "cell": "authors",
    "skip_cell": "authors",
    "fusion": "gc",
    "references": "both",
}


def model_config(arg, data) -> ml_collections.ConfigDict:
    """config.model for HS2S; every key but name/backbone_init is a field of models.hs2s.HS2S."""
    m = ml_collections.ConfigDict()
    m.name = "hs2s"
    m.backbone = arg.backbone or ("resnet101" if arg.resnet101 else "resnet50")
    m.num_ch = 1024
    m.num_classes = common.distance_classes(data)  # 42 = 2 * (data.border // data.bin_size) + 2
    m.mem_kernel = 3
    m.sm_kernel = 5
    m.cell = arg.cell  # bottleneck memory, models/cells/ ('authors': sigmoid g / ReLU c)
    m.skip_cell = arg.skip_cell  # skip memory; the ablations keep the authors' ConvLSTM
    m.fusion = arg.fusion  # models/fusion/ ('gc': the authors' global-convolution matching)
    m.references = arg.references  # both | first | previous (paper B Table 2b)
    m.width_divisor = 1  # > 1: thinner tiny variants (tests, demo)
    m.blocks = config_dict.placeholder(tuple)  # ResNet stage depths; None = the backbone's
    m.depth_divisor = 1  # > 1: max(1, round(depth / d)) blocks per backbone stage (demo)
    m.dtype = "bfloat16" if arg.bf16 else "float32"
    # What the backward pass recomputes: "none" | "encoders" | "steps" (models/hs2s.py); bf16
    # runs target accelerators, where the full model (~396M params) leaves little room.
    m.remat = "encoders" if arg.bf16 else "none"
    m.backbone_remat = False  # per-block remat inside the backbone (axial_s: attention maps)
    m.mask_jitter = 0  # px; > 0 shifts GT previous masks randomly in training (authors: 0)
    m.mask_morph = 0  # px; > 0 erodes / dilates GT previous masks randomly in training (authors: 0)
    m.scan_unroll = 1  # time steps per scan iteration; CPU runs: the clip length
    m.backbone_init = ""  # ImageNet torchvision weights (.pth) for both encoders; '' = random
    return m


def demo_base(c) -> None:
    """The tiny-HS2S recipe of the recorded family demos and ablation tables (Bi-HS2S and
    RAFT-HS2S demos, benchmarks/ablations.py): about 13 minutes on 2 CPU cores.

    Departures from the recipe, all for the CPU budget: width / 16, a sixth of the backbone's
    blocks per stage (one per stage for ResNet-50), 3x3 skip-memory, 96x96 frames, clips of 4..6
    predicted frames (scan fully unrolled), 6 distance classes (border 10, bin 5), lr 5e-4,
    gradients clipped at norm 5, and a loss weighted towards Jaccard (0.1 BCE + 0.7 Jaccard + 0.2
    CE). Two changes make a from-scratch model use appearance instead of copying the previous
    mask, which alone erodes the mask a little every frame: high-contrast synthetic videos
    (objects always brighter than the background) and GT previous masks shifted by up to 4 px in
    training (model.mask_jitter). 48 training videos, 80 epochs (1,480 steps), StepLR from epoch
    64; scheduled sampling starts at epoch 5 and reaches P = 0.75 (floor 0.25) at epoch 27, so the
    model also learns from its own fed-back masks; BatchNorm frozen after epoch 72.
    """
    common.shrink_for_demo(c)
    c.demo.frame_size = (96, 96)
    c.demo.num_frames = (30, 40)  # long videos = slow motion per frame
    c.demo.contrast = "high"
    c.data.image_size = (96, 96)
    c.model.width_divisor = 16
    # A sixth of each stage's blocks, at least one: (1, 1, 1, 1) for ResNet-50, (1, 1, 4, 1) for
    # ResNet-101, so the two stay different models at demo scale.
    c.model.depth_divisor = 6
    c.model.sm_kernel = 3
    c.model.mask_jitter = 4
    c.data.border = 10
    c.data.bin_size = 5  # model.num_classes follows: 6
    c.data.frame_resample = "bilinear"
    c.data.antialias = False
    c.data.min_clip_len = 4
    c.data.max_clip_len = 6
    c.model.scan_unroll = c.data.max_clip_len
    c.data.curriculum = "none"
    c.train.learning_rate = 5e-4
    c.train.num_epochs = 80
    c.train.grad_clip_norm = 5.0  # rare 10-40x spikes (fed-back masks that lost the object)
    c.demo.num_train = 48
    c.train.lr_decay.kind = "step"
    c.train.lr_decay.after_epoch = 64
    c.train.lr_decay.every_epochs = 4
    c.train.lr_decay.factor = 0.8
    c.train.loss.bce_weight = 0.1
    c.train.loss.jaccard_weight = 0.7
    c.train.scheduled_sampling.offset_epochs = 5
    c.train.scheduled_sampling.slope = 0.035
    c.train.scheduled_sampling.epsilon_floor = 0.25
    c.train.bn_freeze_after_epoch = 72


def demo(c) -> None:
    """The demo: demo_base's data and tiny model, made wider and trained shorter and harder, so
    it finishes in 6-9 minutes on 2 CPU cores (benchmarks/RESULTS.md).

    On top of demo_base: width / 8 (a width / 8 step costs about 1.4x a width / 16 one on 2 cores,
    where the tiny convolutions are overhead-bound), 96 training videos, 16 epochs (592 steps) at
    lr 2e-3 falling along a cosine from epoch 2 to 0.02x after a 50-step linear warmup, scheduled
    sampling from epoch 1 to P = 0.75 at epoch 6, GT previous masks also eroded or dilated by up
    to 2 px (model.mask_morph), and BatchNorm never frozen (freezing recompiles the training
    step: 45 s here). Evaluation feeds back exclusive masks (eval.feedback): without it, objects
    of one video drift onto each other, the demo's main loss after erosion. Each change was
    picked in trials recorded in benchmarks/RESULTS.md.
    """
    demo_base(c)
    c.demo.num_train = 96
    c.model.width_divisor = 8
    c.train.learning_rate = 2e-3
    c.train.num_epochs = 16
    c.train.lr_decay.update(kind="cosine", after_epoch=2, factor=0.02)
    c.train.scheduled_sampling.offset_epochs = 1
    c.train.scheduled_sampling.slope = 0.14
    c.train.bn_freeze_after_epoch = -1
    c.train.lr_warmup_steps = 50
    c.model.mask_morph = 2
    c.eval.feedback = "exclusive"


def get_config(arg=None):
    arg = common.parse_arg(arg, **ARGS)
    c = common.base_config()
    c.data = common.data_config(batch_size=15, curriculum="uniform")
    c.model = model_config(arg, c.data)
    c.train = common.train_config(
        learning_rate=1e-4,
        num_epochs=750,
        decay_after_epoch=650,
        decay_every_epochs=5,
        decay_factor=0.9,
        scheduled_sampling=True,
        bn_freeze_after_epoch=500,
    )
    if arg.demo_base:
        demo_base(c)
    elif arg.demo:
        demo(c)
    c.lock()
    return c
