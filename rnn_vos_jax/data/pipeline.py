"""tf.data training pipeline: clips of one (video, object) pair per sample.

Training, per reader (`train_dataset`; one per process unless data.file_splits asks for more, and
a process concatenates its readers' batches: `process_dataset` / `train_iterator`):
  record files split by reader (files[s::S]) -> for each epoch e: files shuffled by (seed, e) ->
  records interleaved -> record shuffle buffer -> parse -> one element per (video, object) with at
  least `min_object_frames` listed frames -> pair shuffle buffer -> enumerate -> [resume skip] ->
  clip sampling + augmentation keyed by (seed, e, index) -> border-distance classes -> batch
  (drop remainder) -> prefetch.
  Every random choice is a function of (seed, epoch, index in epoch), so a run started at batch s
  yields exactly the batches an uninterrupted run yields from batch s on. Resuming counts the
  reader's samples per epoch (one pass reading only two small features) and skips the consumed
  part of the current epoch before any decoding: at most about one epoch of record reading.
  An epoch is one pass over this reader's (video, object) pairs; the clip-length curriculum is a
  function of that epoch index.

Clip sampling (authors' dataloader): clip length L is drawn per sample (see `clip_length_range`);
the clip is L + 1 consecutive entries of the object's frame list (frames where it is annotated),
starting uniformly among valid starts; objects with fewer entries give all their frames. Clips
are padded to T = max_clip_len + 1 frames; `valid` marks the real prefix.

Batches (numpy): frames uint8[B,T,H,W,3], masks float32[B,T,H,W,1], distance int32[B,T,H,W],
valid bool[B,T]. Evaluation videos are read by `eval_records.eval_videos` (whole videos
at original size, as `eval_video.EvalVideo`s); which files a process reads is in
record_files.py, shared by both.

Keys of `config.data` (DATA_KEYS; their values, the authors' settings that every shipped config
uses, are set in one place: configs/common.py `data_config`):
  train_records        shard directory (with dataset_info.json or *.tfrecord), glob, or
                       comma-separated list of TFRecord files of the training split
  eval_records         same, for the evaluation split (read by eval_records)
  eval_dir             raw folder evaluated without conversion (read by evaluate, not here)
  image_size           (H, W) output size
  batch_size           samples per batch of this process (configs hold the global batch;
                       training passes each process its share)
  file_splits          S readers the training files are split over (files[s::S]), each
                       giving batch_size / (S / n) samples of every batch of the n processes
                       (a block of S / n per process); fixed S gives the same global batches
                       for any n dividing S (resuming on another topology); 0 = one per process
  min_clip_len         shortest clip length L (clips have L + 1 frames)
  max_clip_len         longest L; T = max_clip_len + 1
  curriculum           'uniform' (HS2S: L ~ U{min..min(start + e // epochs, max)}),
                       'fixed_then_uniform' (S2S++: L = start + e // epochs while <= max, then
                       L ~ U{min..max}) or 'none' (L ~ U{min..max})
  curriculum_start     L bound at epoch 0
  curriculum_epochs    epochs per +1 of the bound
  min_object_frames    (video, object) pairs with fewer listed frames are skipped (a clip of
                       one frame has nothing to predict; the authors keep them)
  border, bin_size     border-distance classes (rnn_vos_jax.data.distance)
  shuffle_buffer       (video, object) pair shuffle buffer
  record_shuffle_buffer  video record shuffle buffer
  interleave_cycle     record files read concurrently
  augment              apply flip + affine
  hflip_prob           probability of a horizontal flip
  rotation             max |angle| in degrees
  scale                (low, high) scale range
  shear                max |x-shear| in degrees
  translation          max |shift| as a fraction of width / height
  affine_units         'pixels_degrees' or 'authors' (rnn_vos_jax.data.augment)
  frame_resample       'bilinear' or 'nearest' (authors' affine) for frames
  antialias            area-averaging resize before the warp (else one bilinear warp from the
                       DCT-downscaled decode, whose residual factor < 2 makes bilinear close
                       to area averaging; ~2x cheaper)
  jpeg_downscale       decode JPEGs at 1/2, 1/4, 1/8 size when still >= image_size
  max_frame_skip       clip frames every s-th listed frame, s ~ U{1..max} (1 = consecutive, authors)
  on_corrupt           a damaged record (bad checksum, file cut short) 'stop's the run with an
                       error naming file and record, or is 'skip'ped with a warning
                       (record_io.skipped_records() counts them); training and evaluation
  max_corrupt_fraction with 'skip': stop once more than this fraction of the records read
                       were skipped
"""

import atexit
import weakref

import tensorflow as tf

from rnn_vos_jax.data import augment, distance, record_io, record_schema
from rnn_vos_jax.data.record_files import (
    check_not_empty,
    file_records,
    named_damage,
    process_splits,
    record_files,
    samples_per_epoch,
    split_files,
)

AUTOTUNE = tf.data.AUTOTUNE
# Dataset functions are plain TF ops; autograph would only re-parse their source.
_plain = tf.autograph.experimental.do_not_convert
_CURRICULA = ("uniform", "fixed_then_uniform", "none")
# The `config.data` keys of the module docstring; tests check each config's data section has
# exactly these, so a key added to the pipeline must be added to configs/common.py too.
DATA_KEYS = (
    "train_records",
    "eval_records",
    "eval_dir",
    "image_size",
    "batch_size",
    "file_splits",
    "min_clip_len",
    "max_clip_len",
    "curriculum",
    "curriculum_start",
    "curriculum_epochs",
    "min_object_frames",
    "border",
    "bin_size",
    "shuffle_buffer",
    "record_shuffle_buffer",
    "interleave_cycle",
    "augment",
    "hflip_prob",
    "rotation",
    "scale",
    "shear",
    "translation",
    "affine_units",
    "frame_resample",
    "antialias",
    "jpeg_downscale",
    "max_frame_skip",
    "on_corrupt",
    "max_corrupt_fraction",
)


def hide_accelerators_from_tensorflow() -> None:
    """Keeps tf.data on the CPU: TensorFlow must not take GPU memory that JAX needs."""
    tf.config.set_visible_devices([], "GPU")


def clip_length_range(epoch: int, data) -> tuple[int, int, bool]:
    """Clip-length rule at an epoch: (low, high, fixed) with L ~ U{low..high}, or L = high if fixed.

    Args:
        epoch: epoch index (>= 0).
        data: `config.data`.

    Returns:
        (low, high, fixed) python values.
    """
    lo, hi = int(data.min_clip_len), int(data.max_clip_len)
    if not 1 <= lo <= hi:
        raise ValueError(f"config.data needs 1 <= min_clip_len <= max_clip_len, got {lo}, {hi}")
    if data.curriculum not in _CURRICULA:
        raise ValueError(f"config.data.curriculum must be one of {_CURRICULA}: {data.curriculum!r}")
    bound = int(data.curriculum_start) + epoch // int(data.curriculum_epochs)
    if data.curriculum == "uniform":
        return lo, max(lo, min(bound, hi)), False
    if data.curriculum == "fixed_then_uniform" and bound <= hi:
        return max(lo, bound), max(lo, bound), True
    return lo, hi, False


def _clip_length(epoch, u, data):
    """Graph version of clip_length_range + draw; epoch int64 scalar, u uniform float32 scalar."""
    lo, hi = int(data.min_clip_len), int(data.max_clip_len)
    clip_length_range(0, data)  # validates the keys
    bound = tf.cast(int(data.curriculum_start) + epoch // int(data.curriculum_epochs), tf.int32)
    if data.curriculum == "uniform":
        top = tf.maximum(lo, tf.minimum(bound, hi))
    else:
        top = tf.constant(hi)
    drawn = lo + tf.cast(tf.floor(u * tf.cast(top - lo + 1, tf.float32)), tf.int32)
    drawn = tf.minimum(drawn, top)
    if data.curriculum == "fixed_then_uniform":
        return tf.where(bound <= hi, tf.maximum(lo, bound), drawn)
    return drawn


def clip_frames(frames_of_obj, length, u_start, key, data):
    """Which of an object's listed frames form its clip.

    The authors take L + 1 consecutive entries (start ~ U{0..n-L-1}; all n when n <= L).
    With data.max_frame_skip = S > 1 the entries are taken every s-th, s ~ U{1..S} (lowered until
    the clip fits), as STM-style "max skip" sampling: larger motion between training frames than
    between consecutive test frames, so copying the previous mask stops being a good answer.

    Args:
        frames_of_obj: int32[n] frame indices listed for the object.
        length: int32 scalar L (predicted frames).
        u_start: float32 scalar uniform draw for the start.
        key: int64[2] stateless key of the sample (the skip is drawn from a derived key).
        data: `config.data`.

    Returns:
        (chosen int32[count] frame indices, count = min(L + 1, n)).
    """
    n = tf.size(frames_of_obj)
    skip = tf.constant(1, tf.int32)
    top = int(data.max_frame_skip)
    if top > 1:
        u = tf.random.stateless_uniform([], seed=tf.stack([key[0] + 1, key[1]]))
        skip = tf.minimum(1 + tf.cast(tf.floor(u * top), tf.int32), top)
        skip = tf.minimum(skip, tf.maximum(1, (n - 1) // tf.maximum(length, 1)))
    span = length * skip
    start = tf.where(
        n > span, tf.cast(tf.floor(u_start * tf.cast(n - span, tf.float32)), tf.int32), 0
    )
    start = tf.minimum(start, tf.maximum(n - span - 1, 0))
    count = tf.minimum(length + 1, n)
    return tf.gather(frames_of_obj, start + tf.range(count) * skip), count


def _parse(serialized):
    ex = tf.io.parse_single_example(serialized, record_schema.tf_feature_spec(tf))
    n = tf.shape(ex[record_schema.JPEG])[0]
    k = tf.shape(ex[record_schema.OBJECT_IDS])[0]
    ex[record_schema.OBJECT_FRAMES] = tf.reshape(ex[record_schema.OBJECT_FRAMES], [k, n])
    return ex


def _pairs(ex, min_frames):
    """(video, object) elements of one parsed record, objects in id order."""
    listed = ex[record_schema.OBJECT_FRAMES] > 0
    keep = tf.reduce_sum(tf.cast(listed, tf.int32), axis=1) >= min_frames

    def one(k):
        return {
            "video": ex[record_schema.VIDEO],
            "height": ex[record_schema.HEIGHT],
            "width": ex[record_schema.WIDTH],
            "jpeg": ex[record_schema.JPEG],
            "png": ex[record_schema.PNG],
            "object_id": ex[record_schema.OBJECT_IDS][k],
            "frames": tf.cast(tf.where(listed[k])[:, 0], tf.int32),
        }

    ks = tf.boolean_mask(tf.range(tf.size(keep)), keep)
    return tf.data.Dataset.from_tensor_slices(ks).map(_plain(one))


def _mix(seed, epoch, salt):
    """int64 shuffle seed from (seed, epoch, salt); large odd multipliers keep them distinct."""
    return (tf.cast(seed, tf.int64) * 1_000_003 + epoch * 7_919 + salt) % (2**62)


def _epoch_dataset(files, epoch, seed, data, policy=None):
    """(epoch, index, pair) elements of one epoch in their seeded order."""
    policy = policy or record_io.Policy.of(data)
    epoch = tf.cast(epoch, tf.int64)
    perm = tf.random.experimental.stateless_shuffle(
        tf.range(len(files)), seed=tf.stack([tf.cast(seed, tf.int64), epoch])
    )
    names = tf.gather(tf.constant(files), perm)
    ds = tf.data.Dataset.from_tensor_slices(names).interleave(
        file_records(policy, files=files),
        cycle_length=max(1, min(len(files), int(data.interleave_cycle))),
        block_length=1,
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    ds = ds.shuffle(int(data.record_shuffle_buffer), seed=_mix(seed, epoch, 1))
    ds = ds.map(_plain(_parse)).flat_map(_plain(lambda ex: _pairs(ex, int(data.min_object_frames))))
    ds = ds.shuffle(int(data.shuffle_buffer), seed=_mix(seed, epoch, 2))
    return ds.enumerate().map(_plain(lambda i, p: dict(p, epoch=epoch, index=i)))


def _load_clip(elem, seed, data):
    """Samples, decodes and augments one clip; pads to T = max_clip_len + 1 frames."""
    out_hw = tuple(int(v) for v in data.image_size)
    t_max = int(data.max_clip_len) + 1
    key = tf.stack([tf.cast(seed, tf.int64), elem["epoch"] * (2**32) + elem["index"]])
    u = tf.random.stateless_uniform([augment.NUM_UNIFORMS + 2], seed=key)
    length = _clip_length(elem["epoch"], u[0], data)
    chosen, count = clip_frames(elem["frames"], length, u[1], key, data)
    h, w = out_hw

    def make(jpegs, pngs, object_id, u, height, width, video):
        return augment.make_clip(
            jpegs,
            pngs,
            object_id,
            u,
            (height, width),
            data,
            t_max,
            f"video {video.decode(errors='replace')}",
        )

    frames, masks, dist = tf.numpy_function(
        make,
        [
            tf.gather(elem["jpeg"], chosen),
            tf.gather(elem["png"], chosen),
            elem["object_id"],
            u[2:],
            elem["height"],
            elem["width"],
            elem["video"],
        ],
        [tf.uint8, tf.uint8, tf.int32],
        stateful=False,
    )
    return {
        "frames": tf.ensure_shape(frames, [t_max, h, w, 3]),
        "masks": tf.cast(tf.ensure_shape(masks, [t_max, h, w, 1]), tf.float32),
        "distance": tf.ensure_shape(dist, [t_max, h, w]),
        "valid": tf.range(t_max) < count,
    }


def train_dataset(
    data,
    *,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    start_batch: int = 0,
    batch_size: int | None = None,
    policy: record_io.Policy | None = None,
) -> tf.data.Dataset:
    """Infinite training dataset of one reader's batches (see the module docstring).

    Args:
        data: `config.data` (keys in the module docstring).
        seed: pipeline seed; the same seed gives the same batches.
        process_index, process_count: this reader and the number of readers (one per process
            unless data.file_splits says otherwise: `process_dataset`); each reads a disjoint
            set of files.
        start_batch: index of the first batch to yield (resuming); 0 starts from scratch.
        batch_size: samples per batch (default data.batch_size).
        policy: what damaged records do (default from data.on_corrupt / max_corrupt_fraction);
            `train_iterator` shares one over its readers to name the damage (named_damage).

    Returns:
        tf.data.Dataset of dicts frames uint8[B,T,H,W,3], masks float32[B,T,H,W,1],
        distance int32[B,T,H,W], valid bool[B,T] with B = data.batch_size, T = max_clip_len + 1.
    """
    clip_length_range(0, data)
    distance.num_distance_classes(int(data.border), int(data.bin_size))
    if data.frame_resample not in ("bilinear", "nearest"):
        raise ValueError(
            f"config.data.frame_resample must be bilinear|nearest: {data.frame_resample!r}"
        )
    policy = policy or record_io.Policy.of(data)
    files = split_files(record_files(data.train_records), process_index, process_count)
    batch = int(data.batch_size if batch_size is None else batch_size)
    # Else the epochs would spin forever.
    check_not_empty(files, int(data.min_object_frames), policy)
    first_epoch, offset = 0, 0
    if start_batch:
        per_epoch = samples_per_epoch(files, int(data.min_object_frames), policy)
        first_epoch, offset = divmod(start_batch * batch, per_epoch)
    first = _epoch_dataset(files, first_epoch, seed, data, policy).skip(offset)
    rest = tf.data.Dataset.range(first_epoch + 1, 2**62).flat_map(
        _plain(lambda e: _epoch_dataset(files, e, seed, data, policy))
    )
    ds = first.concatenate(rest)
    ds = ds.map(
        _plain(lambda e: _load_clip(e, seed, data)),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    ds = ds.batch(batch, drop_remainder=True).prefetch(AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options)


def process_dataset(
    data,
    *,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    start_batch: int = 0,
    policy: record_io.Policy | None = None,
) -> tf.data.Dataset:
    """This process's rows of every global batch: its file splits' batches, concatenated.

    Args:
        data: `config.data`; batch_size is this process's share of the global batch.
        seed, start_batch, policy: as `train_dataset` (every split starts at batch
            `start_batch`; one policy for all of them).
        process_index, process_count: this process and the number of processes.

    Returns:
        tf.data.Dataset as `train_dataset`'s with B = data.batch_size: the k splits of this
        process (record_files.process_splits) give B / k rows each, in split order.
    """
    splits, total = process_splits(data.file_splits, process_index, process_count)
    if int(data.batch_size) % len(splits):
        raise ValueError(
            f"this process's batch of {data.batch_size} does not split over its {len(splits)} "
            f"file splits (config.data.file_splits={total}, {process_count} processes)"
        )
    policy = policy or record_io.Policy.of(data)
    kw = {"seed": seed, "process_count": total, "start_batch": start_batch, "policy": policy}
    readers = [
        train_dataset(data, process_index=s, batch_size=int(data.batch_size) // len(splits), **kw)
        for s in splits
    ]
    if len(readers) == 1:
        return readers[0]

    def concat(*batches):
        return {k: tf.concat([b[k] for b in batches], axis=0) for k in batches[0]}

    return tf.data.Dataset.zip(tuple(readers)).map(_plain(concat)).prefetch(AUTOTUNE)


class _NumpyIterator:
    """Iterator of numpy batches that releases its tf.data iterator before interpreter exit.

    A tf.data iterator still alive at shutdown, with py-function work in flight, aborts the
    process (exit code 134); the atexit hook drops it while the runtime is still intact.
    """

    def __init__(self, dataset, policy: record_io.Policy):
        self._policy = policy
        with named_damage(policy):
            self._it = dataset.as_numpy_iterator()
        ref = weakref.ref(self)  # the hook must not keep an unused pipeline alive
        self._hook = lambda: ref() is not None and ref().close()
        atexit.register(self._hook)

    def __iter__(self):
        return self

    def __next__(self):
        if self._it is None:
            raise StopIteration
        with named_damage(self._policy):  # a damaged record: its CorruptRecordError
            return next(self._it)

    def close(self):
        """Stops the pipeline (idempotent)."""
        self._it = None
        atexit.unregister(self._hook)


def train_iterator(data, **kwargs):
    """`process_dataset(data, **kwargs)` as an iterator of dicts of numpy arrays (has close()).

    Raises:
        record_io.CorruptRecordError: a damaged record (data.on_corrupt='stop') or too many
            skipped ones, naming the file and record index.
    """
    policy = kwargs.pop("policy", None) or record_io.Policy.of(data)
    return _NumpyIterator(process_dataset(data, policy=policy, **kwargs), policy)
