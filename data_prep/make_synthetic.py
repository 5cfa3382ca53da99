"""Synthetic VOS dataset in YouTube-VOS layout, deterministic for a seed.

    python data_prep/make_synthetic.py --output_dir=DIR [--num_train=8 --num_valid=4 --seed=0]
        [--frame_sizes=480x854,720x1280 --num_frames=10,40 --num_objects=1,4 --all_frames
         --overwrite]

Writes DIR/{train,valid}/JPEGImages/VIDEO/NNNNN.jpg, DIR/{train,valid}/Annotations/VIDEO/NNNNN.png
(DAVIS-palette PNGs of object ids, every frame annotated in both splits), DIR/{train,valid}/meta.json
(YouTube-VOS format; an object's `frames` are those where it is visible) and DIR/synthetic_info.json
(the parameters, written last: a rerun with the same parameters returns at once).

Frames are named every 5th (00000, 00005, ...) as in YouTube-VOS. With --all_frames valid is
rendered at the full frame rate, as YouTube-VOS's valid_all_frames: DIR/valid_all_frames/JPEGImages/
VIDEO/NNNNN.jpg holds every frame (00000, 00001, ...; the 4 after valid's last one too), valid every
5th of them (the same JPEG bytes), and objects may appear between two valid frames (their first
annotated frame is then the next valid one).

Each video: a panning textured background and 1-4 textured objects of a shape category that move,
scale and rotate, occlude each other, leave or enter the frame, some appearing after frame 0. The
categories in `unseen_categories` occur only in valid (seen/unseen split); every even-numbered valid
video starts with an unseen object, every odd-numbered one with a seen object.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys

import numpy as np
from PIL import Image

if __package__ in (None, ""):  # run as a script: make `data_prep` and `rnn_vos_jax` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data_prep import synthetic_render as render
from data_prep import synthetic_scene as scene
from data_prep.synthetic_scene import CONTRASTS
from rnn_vos_jax import annotations

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
            os.makedirs(os.path.join(all_frames_dir, "JPEGImages", name), exist_ok=True)
            for t, frame in enumerate(all_frames):  # dense frame t is named t: step apart in valid
                path = os.path.join(all_frames_dir, "JPEGImages", name, f"{t:05d}.jpg")
                Image.fromarray(frame).save(path, quality=quality)
        frames, labels = all_frames[::substeps], all_labels[::substeps]
        names = [f"{t * step:05d}" for t in range(len(frames))]
        for sub in ("JPEGImages", "Annotations"):
            os.makedirs(os.path.join(split_dir, sub, name), exist_ok=True)
        for frame_name, frame, label in zip(names, frames, labels):
            base = os.path.join(split_dir, "{}", name, frame_name)
            Image.fromarray(frame).save(base.format("JPEGImages") + ".jpg", quality=quality)
            with open(base.format("Annotations") + ".png", "wb") as f:
                f.write(annotations.encode(label))
        meta[name] = {
            "objects": {
                str(obj_id): {
                    "category": category,
                    "frames": [n for n, lab in zip(names, labels) if (lab == obj_id).any()],
                }
                for obj_id, category in ids.items()
            }
        }
    with open(os.path.join(split_dir, "meta.json"), "w") as f:
        json.dump({"videos": meta}, f, sort_keys=True)


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
    splits = {s: os.path.join(output_dir, s) for s in ("train", "valid")}
    if all_frames:
        splits["valid_all_frames"] = os.path.join(output_dir, "valid_all_frames")
    info_path = os.path.join(output_dir, INFO_FILE)
    if os.path.exists(info_path):
        with open(info_path) as f:
            if json.load(f) == params:
                return splits
    old_all_frames = os.path.join(output_dir, "valid_all_frames")
    for split_dir in {*splits.values(), old_all_frames}:
        if os.path.isdir(split_dir) and os.listdir(split_dir):
            if not overwrite:
                raise FileExistsError(
                    f"{split_dir} exists and was not made with these parameters; "
                    "pass overwrite=True (--overwrite) to replace it"
                )
            shutil.rmtree(split_dir)
    if os.path.exists(info_path):
        os.remove(info_path)
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
    with open(info_path, "w") as f:
        json.dump(params, f, indent=1)
    return splits


def _ints(text, sep):
    return tuple(int(x) for x in text.split(sep))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--num_train", type=int, default=8)
    parser.add_argument("--num_valid", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frame_sizes", default="480x854,720x1280", help="HxW,HxW,...")
    parser.add_argument("--num_frames", default="10,40", help="min,max frames per video")
    parser.add_argument("--num_objects", default="1,4", help="min,max objects per video")
    parser.add_argument("--contrast", default="natural", choices=sorted(CONTRASTS))
    parser.add_argument(
        "--all_frames", action="store_true", help="also write valid_all_frames (every frame)"
    )
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        sizes = [_ints(size, "x") for size in args.frame_sizes.split(",")]
        num_frames, num_objects = _ints(args.num_frames, ","), _ints(args.num_objects, ",")
        if any(len(x) != 2 for x in (*sizes, num_frames, num_objects)):
            raise ValueError("expected pairs")
    except ValueError as error:
        parser.error(f"--frame_sizes=HxW,... --num_frames=MIN,MAX --num_objects=MIN,MAX: {error}")
    splits = make_dataset(
        args.output_dir,
        args.num_train,
        args.num_valid,
        args.seed,
        frame_sizes=sizes,
        num_frames=num_frames,
        num_objects=num_objects,
        contrast=args.contrast,
        all_frames=args.all_frames,
        overwrite=args.overwrite,
    )
    print(json.dumps(splits))


if __name__ == "__main__":
    main()
