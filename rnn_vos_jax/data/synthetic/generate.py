"""A synthetic VOS dataset in the YouTube-VOS layout, deterministic for a seed (`make_dataset`).

The command is data_prep/make_synthetic.py (its docstring gives the layout); the demo and the
tests call `make_dataset` directly.
"""

import hashlib
import io
import json

import numpy as np
from PIL import Image

from rnn_vos_jax.data import annotations
from rnn_vos_jax.data.synthetic import render, scene
from rnn_vos_jax.data.synthetic.scene import CONTRASTS
from rnn_vos_jax.runtime import atomic, storage

SEEN_CATEGORIES = ("ellipse", "rectangle", "triangle", "star", "blob", "hexagon")
UNSEEN_CATEGORIES = ("ring", "cross", "crescent")
DEFAULT_FRAME_SIZES = ((480, 854), (720, 1280))
INFO_FILE = "synthetic_info.json"


def _render_video(rng, spec: scene.VideoSpec):
    """Renders one video of `length` sampled frames, `substeps` rendered frames per sampled one.

    Returns:
      (frames [T] uint8[H,W,3], labels uint8[T,H,W], categories by id) for the T rendered frames
      from the first one showing an object; the sampled frames are frames[::substeps]. Ids number
      the objects by first appearance on a sampled frame; an object never visible on one is 0.
      None when no object is ever visible.
    """
    objects = scene.sample_objects(rng, spec)
    texture, offsets = scene.background(rng, spec)
    height, width, length, substeps = spec.height, spec.width, spec.length, spec.substeps
    order = sorted(range(len(objects)), key=lambda i: objects[i]["depth"])
    min_first_area = 0.003 * height * width
    started = [False] * len(objects)
    frames, labels, areas = [], [], []
    for t in range(length * substeps):
        ox, oy = offsets[t]
        active = [i for i in order if started[i] or t >= objects[i]["start"]]
        while True:  # an object appears only once enough of it is visible (no sliver first masks)
            frame = texture[oy : oy + height, ox : ox + width].copy()
            label = np.zeros((height, width), np.uint8)
            for i in active:
                o = objects[i]
                render.render_object(
                    frame,
                    label,
                    i + 1,
                    o["category"],
                    o["params"],
                    o["texture"],
                    tuple(o["path"][t]),
                    o["radius"][t],
                    o["angle"][t],
                )
            area = np.zeros(len(objects), np.int64)
            for i in active:
                area[i] = np.count_nonzero(label == i + 1)
            too_small = [i for i in active if not started[i] and area[i] < min_first_area]
            if not too_small:
                break
            active = [i for i in active if i not in too_small]
        for i in active:
            started[i] = True
        frames.append(frame)
        labels.append(label)
        areas.append(area)
    areas = np.stack(areas)  # [T, K]
    visible = np.flatnonzero(areas.sum(1) > 0)
    if visible.size == 0:
        return None
    first = visible[0]  # videos start with a visible object, as in YouTube-VOS
    frames, labels, areas = frames[first:], np.stack(labels[first:]), areas[first:]
    sampled = areas[::substeps]
    appear = [
        (int(np.flatnonzero(sampled[:, i])[0]), i)
        for i in range(len(objects))
        if sampled[:, i].any()
    ]
    lut = np.zeros(256, np.uint8)
    ids = {}
    for new_id, (_, i) in enumerate(sorted(appear), start=1):
        lut[i + 1] = new_id
        ids[new_id] = objects[i]["category"]
    return frames, lut[labels], ids


def _write_split(
    split_dir, split, num_videos, seed, options, categories, first_categories, all_frames_dir=None
):
    """Writes one split; with `all_frames_dir` renders every frame there, the split every step-th."""
    meta = {}
    quality, step = options["jpeg_quality"], options["frame_step"]
    substeps = step if all_frames_dir else 1
    split_index = ["train", "valid"].index(split)
    for index in range(num_videos):
        rng = np.random.default_rng([seed, split_index, index])
        name = hashlib.sha1(f"synthetic-{seed}-{split}-{index}".encode()).hexdigest()[:10]
        video = None
        while video is None or len(video[0][::substeps]) < 2:
            height, width = options["frame_sizes"][int(rng.integers(len(options["frame_sizes"])))]
            lo, hi = options["num_frames"]
            length = int(rng.integers(lo, hi + 1))
            first = first_categories[index % len(first_categories)] if first_categories else None
            spec = scene.VideoSpec(
                height,
                width,
                length,
                tuple(categories),
                first,
                tuple(options["num_objects"]),
                options["contrast"],
                substeps,
            )
            video = _render_video(rng, spec)
        all_frames, all_labels, ids = video
        if all_frames_dir:
            for t, frame in enumerate(all_frames):  # dense frame t is named t: step apart in valid
                path = storage.join(all_frames_dir, "JPEGImages", name, f"{t:05d}.jpg")
                storage.write_bytes(path, _jpeg(frame, quality))
        frames, labels = all_frames[::substeps], all_labels[::substeps]
        names = [f"{t * step:05d}" for t in range(len(frames))]
        for frame_name, frame, label in zip(names, frames, labels):
            base = storage.join(split_dir, "{}", name, frame_name)
            storage.write_bytes(base.format("JPEGImages") + ".jpg", _jpeg(frame, quality))
            storage.write_bytes(base.format("Annotations") + ".png", annotations.encode(label))
        meta[name] = {
            "objects": {
                str(obj_id): {
                    "category": category,
                    "frames": [n for n, lab in zip(names, labels) if (lab == obj_id).any()],
                }
                for obj_id, category in ids.items()
            }
        }
    atomic.write_json(storage.join(split_dir, "meta.json"), {"videos": meta}, indent=None)


def _jpeg(frame: np.ndarray, quality: int) -> bytes:
    """uint8[H, W, 3] as JPEG bytes (PIL, as the frames have always been written)."""
    out = io.BytesIO()
    Image.fromarray(frame).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def make_dataset(
    output_dir: str,
    num_train: int = 8,
    num_valid: int = 4,
    seed: int = 0,
    *,
    frame_sizes=DEFAULT_FRAME_SIZES,
    num_frames=(10, 40),
    num_objects=(1, 4),
    frame_step: int = 5,
    jpeg_quality: int = 90,
    contrast: str = "natural",
    seen_categories=SEEN_CATEGORIES,
    unseen_categories=UNSEEN_CATEGORIES,
    all_frames: bool = False,
    overwrite: bool = False,
) -> dict[str, str]:
    """Writes a synthetic YouTube-VOS-layout dataset (byte-identical for the same arguments).

    Args:
      output_dir: root folder; gets train/, valid/ and synthetic_info.json.
      num_train, num_valid: number of videos per split.
      seed: random seed.
      frame_sizes: (height, width) choices, one drawn per video.
      num_frames: inclusive (min, max) video length in frames.
      num_objects: inclusive (min, max) objects per video (before dropping never-visible ones).
      frame_step: frame-name stride (YouTube-VOS names every 5th frame: 00000, 00005, ...).
      jpeg_quality: JPEG quality of the frames.
      contrast: 'natural' or 'high' (objects always brighter than the background; CONTRASTS).
      seen_categories: shape categories of train (and of part of valid).
      unseen_categories: shape categories that occur only in valid.
      all_frames: render valid at frame_step times the rate and write every frame to
        valid_all_frames/JPEGImages (YouTube-VOS's valid_all_frames); valid keeps every
        frame_step-th frame.
      overwrite: replace existing train/ and valid/ folders made with other parameters.

    Returns:
      {'train': path, 'valid': path} of the split folders (and 'valid_all_frames' with
      all_frames).

    Raises:
      FileExistsError: a split folder exists with other parameters and overwrite is False.
      ValueError: an unknown category or bad range.
    """
    options = {
        "frame_sizes": [[int(h), int(w)] for h, w in frame_sizes],
        "num_frames": [int(n) for n in num_frames],
        "num_objects": [int(n) for n in num_objects],
        "frame_step": int(frame_step),
        "jpeg_quality": int(jpeg_quality),
        "contrast": contrast,
    }
    params = {
        "num_train": num_train,
        "num_valid": num_valid,
        "seed": seed,
        **options,
        "seen_categories": list(seen_categories),
        "unseen_categories": list(unseen_categories),
        "version": 1,
    }
    if contrast == "natural":  # datasets made before the option keep their parameters
        del params["contrast"]
    if all_frames:
        params["all_frames"] = True
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast must be one of {sorted(CONTRASTS)}, got {contrast!r}")
    for category in (*seen_categories, *unseen_categories):
        render.sample_shape_params(np.random.default_rng(0), category)  # validates the name
    if not (1 <= options["num_objects"][0] <= options["num_objects"][1] <= 255):
        raise ValueError(f"num_objects must be 1 <= min <= max <= 255, got {num_objects}")
    if not (2 <= options["num_frames"][0] <= options["num_frames"][1]):
        raise ValueError(f"num_frames must be 2 <= min <= max, got {num_frames}")
    if not options["frame_sizes"] or min(min(size) for size in options["frame_sizes"]) < 16:
        raise ValueError(f"frame_sizes must be (height, width) pairs >= 16, got {frame_sizes}")
    splits = {s: storage.join(output_dir, s) for s in ("train", "valid")}
    if all_frames:
        splits["valid_all_frames"] = storage.join(output_dir, "valid_all_frames")
    info_path = storage.join(output_dir, INFO_FILE)
    if storage.exists(info_path) and json.loads(storage.read_text(info_path)) == params:
        return splits
    old_all_frames = storage.join(output_dir, "valid_all_frames")
    for split_dir in {*splits.values(), old_all_frames}:
        if storage.isdir(split_dir) and storage.listdir(split_dir):
            if not overwrite:
                raise FileExistsError(
                    f"{split_dir} exists and was not made with these parameters; "
                    "pass overwrite=True (--overwrite) to replace it"
                )
            storage.rmtree(split_dir)
    storage.remove(info_path)
    _write_split(splits["train"], "train", num_train, seed, options, seen_categories, None)
    valid_first = [c for pair in zip(unseen_categories, seen_categories) for c in pair]
    _write_split(
        splits["valid"],
        "valid",
        num_valid,
        seed,
        options,
        (*seen_categories, *unseen_categories),
        valid_first,
        splits.get("valid_all_frames"),
    )
    atomic.write_json(info_path, params)  # last: marks the dataset complete
    return splits
