"""Config pieces shared by configs/s2s.py, configs/s2s_pp.py and configs/hs2s.py.

Everything is arithmetic on ConfigDicts (no I/O). Epoch-valued settings stay in epochs (as in the
authors' recipes); training converts them with `train.steps_per_epoch` (0 = derive it from the
training records: (video, object) pairs / global batch).
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict


def parse_arg(arg: str | None, **spec) -> ml_collections.ConfigDict:
    """Parses a config argument 'demo,resnet101,skip=1' against `spec` (name -> default).

    A bare token sets a boolean option to True; `name=value` casts value to the default's type.

    Raises:
      ValueError: naming an unknown option or a value that does not parse.
    """
    out = ml_collections.ConfigDict(dict(spec))
    for token in filter(None, (t.strip() for t in (arg or "").split(","))):
        name, _, value = token.partition("=")
        if name not in spec:
            raise ValueError(f"unknown config argument {name!r} in {arg!r}; known: {sorted(spec)}")
        default = spec[name]
        if not value:
            if not isinstance(default, bool):
                raise ValueError(f"config argument {name!r} needs a value ({name}=...)")
            out[name] = True
        elif isinstance(default, bool):
            out[name] = value.lower() in ("1", "true", "yes")
        else:
            try:
                out[name] = type(default)(value)
            except ValueError as e:
                raise ValueError(f"config argument {name}={value!r}: {e}") from None
    return out


def data_config(*, batch_size: int, curriculum: str) -> ml_collections.ConfigDict:
    """Input pipeline settings: the one source of the `config.data` defaults.

    Holds exactly pipeline.DATA_KEYS (meanings in rnn_vos_jax/data/pipeline.py's
    docstring), set to the authors' dataloader; every shipped config, test and benchmark starts
    from it. `batch_size` here is GLOBAL (over all processes); training hands each process its
    share."""
    c = ml_collections.ConfigDict()
    c.train_records = ""  # folder of train-*.tfrecord + dataset_info.json (or glob / list)
    c.eval_records = ""  # converted evaluation split
    c.eval_dir = ""  # raw YouTube-VOS/DAVIS folder evaluated without conversion
    c.image_size = (256, 448)  # (H, W), multiples of 32
    c.batch_size = batch_size
    # Readers the training files are split over (files[s::S]), a block per process; a fixed S
    # keeps the global batches when the process count changes (any n dividing S). 0 = n.
    c.file_splits = 0
    # Clip length L (clips hold L + 1 frames, padded to max_clip_len + 1): 'uniform' (HS2S)
    # L ~ U{min..min(start + epoch // epochs, max)}; 'fixed_then_uniform' (S2S++)
    # L = start + epoch // epochs while <= max, then U{min..max}.
    c.min_clip_len = 5
    c.max_clip_len = 10
    c.curriculum = curriculum
    c.curriculum_start = 5
    c.curriculum_epochs = 10
    c.min_object_frames = 2
    # Border-distance classes: K = 2 * (border // bin_size) + 2 = 42.
    c.border = 20
    c.bin_size = 1
    c.shuffle_buffer = 256
    c.record_shuffle_buffer = 32
    c.interleave_cycle = 4
    # Authors' augmentation: flip p=0.5, angle U{-20..19} deg, scale U{75..124}/100, shear and
    # translation drawn in hundredths but used as degrees/pixels (near no-ops), nearest affine.
    c.augment = True
    c.hflip_prob = 0.5
    c.rotation = 20.0
    c.scale = (0.75, 1.25)
    c.shear = 10.0
    c.translation = 0.1
    c.affine_units = "authors"
    c.frame_resample = "nearest"
    c.antialias = True
    c.jpeg_downscale = True
    c.max_frame_skip = 1  # > 1: frames every s-th, s ~ U{1..max} (authors: consecutive)
    # A damaged record (bad checksum, file cut short): 'stop' with an error naming the file and
    # record, or 'skip' it with a warning while at most max_corrupt_fraction of the records read
    # are skipped (training and evaluation records).
    c.on_corrupt = "stop"
    c.max_corrupt_fraction = 0.01
    return c


def distance_classes(data: ml_collections.ConfigDict):
    """config.model.num_classes derived from config.data: K = 2 * (border // bin_size) + 2.

    A reference, not a value: overriding --config.data.border or bin_size changes it too
    (training checks that an explicit override still agrees with the data).
    """
    return 2 * (data.get_ref("border") // data.get_ref("bin_size")) + 2


def train_config(
    *,
    learning_rate: float,
    num_epochs: int,
    decay_after_epoch: int,
    decay_every_epochs: int,
    decay_factor: float,
    scheduled_sampling: bool,
    bn_freeze_after_epoch: int,
) -> ml_collections.ConfigDict:
    """Optimizer, schedules, loss weights, logging and checkpointing."""
    c = ml_collections.ConfigDict()
    c.num_epochs = num_epochs
    c.num_steps = 0  # > 0 overrides num_epochs * steps_per_epoch
    # Epoch = one pass over the (video, object) pairs: pairs / global batch steps (a float, as
    # the pipeline's epochs run over a continuous stream of samples); 0 = count the records.
    c.steps_per_epoch = 0.0
    c.optimizer = "adam"
    c.adam = ml_collections.ConfigDict({"b1": 0.9, "b2": 0.999, "eps": 1e-8})
    c.learning_rate = learning_rate
    # kind 'step' (authors): torch StepLR stepped at the end of every epoch > after_epoch (-1: no
    # decay). 'cosine': from after_epoch to the last epoch the rate falls along a half cosine, per
    # step, to factor x learning_rate (every_epochs unused).
    c.lr_decay = ml_collections.ConfigDict(
        {
            "kind": "step",
            "after_epoch": decay_after_epoch,
            "every_epochs": decay_every_epochs,
            "factor": decay_factor,
        }
    )
    # > 0: the rate ramps linearly from lr / W to the scheduled rate over the first W steps
    # (authors: none, 0).
    c.lr_warmup_steps = 0
    c.grad_clip_norm = 0.0  # authors: none
    # Scheduled sampling (HS2S): after offset, P(feed back prediction) = 1 - max(floor,
    # 1 - slope * (epoch - offset)), ramping 0 -> 0.5 over epochs 300..425.
    c.scheduled_sampling = ml_collections.ConfigDict(
        {"enabled": scheduled_sampling, "offset_epochs": 300, "slope": 0.004, "epsilon_floor": 0.5}
    )
    # BatchNorm uses running statistics after this epoch (-1: never), affine params still train.
    c.bn_freeze_after_epoch = bn_freeze_after_epoch
    # Per predicted frame: 0.6 balanced BCE + 0.2 soft Jaccard + 0.2 distance CE (authors).
    c.loss = ml_collections.ConfigDict(
        {
            "kind": "authors",
            "bce_weight": 0.6,
            "jaccard_weight": 0.2,
            "distance_weight": 0.2,
            "seg_lambda": 0.8,  # kind='paper': lambda * BCE + (1 - lambda) * CE
        }
    )
    c.log_every_steps = 100
    c.tensorboard = True
    c.checkpoint = ml_collections.ConfigDict({"every_steps": 1000, "keep": 3, "use_async": True})
    return c


def eval_config() -> ml_collections.ConfigDict:
    """Evaluation settings (read by rnn_vos_jax/evaluation/job.py)."""
    c = ml_collections.ConfigDict()
    c.split = "valid"
    c.step = config_dict.placeholder(int)  # checkpoint step; None = latest
    c.watch = False  # keep evaluating new checkpoints until the final training step's
    c.watch_timeout_s = 3600.0
    c.watch_poll_s = 10.0
    c.include_first_last = False  # also score each object's first and the video's last frame
    # Void (255) ground-truth pixels: background, as the DAVIS toolkit's semi-supervised driver
    # counts them (False), or left out of both masks (True).
    c.ignore_void = False
    # YouTube-VOS protocol: a folder of every frame (valid_all_frames/JPEGImages/VIDEO, 30 fps)
    # that the model runs on, while data.eval_dir (valid) gives the first masks and the frames
    # written and scored (every 5th); '' = run on eval_dir's frames (the authors' protocol).
    c.all_frames_dir = ""
    c.batch_objects = 0  # objects per inference batch; 0 = all objects of a video at once
    # Streaming families: step the objects of several videos together in this many object slots
    # (inference/slots.py: continuous batching; a video starts when its objects fit, and each
    # slot has its own frame and carry), so a one-object video no longer runs a batch of one.
    # Needs batch_objects 0 and at least as many slots as objects in a video; 0 = one video at a
    # time (the authors' way). Results equal within float rounding of the batch size.
    c.object_slots = 0
    # What a streaming model's memories see of each object's previous mask (inference/object_merge.py FEEDBACKS):
    # its own probability ('independent', the authors' inference) or that probability only where
    # the object wins the pixel among the video's objects ('exclusive'; needs batch_objects 0).
    c.feedback = "independent"
    # Whole-clip (offline) families: clips longer than clip_window frames run in windows of
    # that many frames sharing clip_overlap frames (inference/predictors.py ClipPredictor); 0 = whole clips.
    c.clip_window = 0
    c.clip_overlap = 1
    c.save_pngs = True
    c.tensorboard = True  # J, F, J&F and the speed under eval/<split>/tensorboard
    # Also write each frame's flow as a colour PNG under eval/<split>/Flow (families with a flow
    # output, e.g. RAFT-HS2S; an error for the others).
    c.save_flow = False
    c.train_meta = ""  # training split's meta.json (seen/unseen categories); '' = none
    return c


def demo_config() -> ml_collections.ConfigDict:
    """The demo: with `enabled`, --mode=train makes a synthetic dataset in the workdir, converts
    it, trains, evaluates and prints the J&F table (rnn_vos_jax/training/demo.py)."""
    c = ml_collections.ConfigDict()
    c.enabled = False
    c.num_train = 48
    c.num_valid = 8
    c.seed = 0
    c.frame_size = (96, 160)  # (H, W) of the synthetic videos
    c.num_frames = (12, 20)  # (min, max) frames per video
    c.num_objects = (1, 2)  # (min, max) objects per video
    c.contrast = "natural"  # rnn_vos_jax/data/synthetic/scene.py CONTRASTS
    c.num_shards = 2
    return c


def base_config() -> ml_collections.ConfigDict:
    """Top-level keys shared by every model family (model/data/train filled by the caller)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.init_from = ""  # params/batch_stats to start from (orbax dir); '' = none
    # fsdp: shard parameters and optimizer state over the devices (rnn_vos_jax/training/sharding.py has
    # the rule: arrays of >= fsdp_min_size elements split on their last axis when it divides).
    c.mesh = ml_collections.ConfigDict({"num_devices": -1, "fsdp": False, "fsdp_min_size": 2**18})
    c.eval = eval_config()
    c.demo = demo_config()
    return c


def shrink_for_demo(c: ml_collections.ConfigDict) -> None:
    """Schedules and data sizes of the laptop-CPU demo (model size is set by each family)."""
    c.demo.enabled = True
    c.data.image_size = (64, 96)
    c.data.batch_size = 4
    c.data.shuffle_buffer = 64
    c.train.log_every_steps = 20
    c.train.tensorboard = True
    c.train.checkpoint.every_steps = 100
    c.train.checkpoint.keep = 2
    # Unroll the whole clip: XLA:CPU runs convolutions in a while loop ~3.5x slower. (A plain
    # value, not a reference: overriding one must not change the other.)
    c.model.scan_unroll = c.data.max_clip_len
