"""Scores predicted palette PNGs against ground-truth PNGs (any method's, not only ours).

    python -m rnn_vos_jax.score --predictions=DIR --annotations=DIR [--meta=meta.json] \
        [--train_meta=FILE] [--output=FILE.json] [--include_first_last] [--baseline]

Both folders hold ``VIDEO/FRAME.png`` id maps, decoded by ``annotations.decode`` (palette,
grayscale or DAVIS-palette RGB; grayscale 0/255 masks read as object 1). The frames scored are those
with a ground-truth PNG. An object's first frame is its first frame in meta.json (YouTube-VOS
``videos/VIDEO/objects/ID/frames``) or else the first ground-truth PNG containing its id.
``--train_meta`` (a YouTube-VOS meta.json or a converted split's dataset_info.json) gives the
seen categories for the seen/unseen split. Prints J, F, J&F and writes the metrics JSON of
``metrics.summarize``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

import numpy as np

# aliased: `annotations` is this module's word for the ground-truth folder and id maps
from rnn_vos_jax import annotations as annotation_png
from rnn_vos_jax import metrics


def load_categories(path: str) -> set[str]:
    """Category names of a split from a YouTube-VOS meta.json or a dataset_info.json.

    Raises:
      ValueError: when the file holds neither ``videos`` nor ``categories``.
    """
    with open(path) as f:
        info = json.load(f)
    if "videos" in info:
        return {
            o["category"]
            for v in info["videos"].values()
            for o in v.get("objects", {}).values()
            if o.get("category")
        }
    if "categories" in info:
        cats = info["categories"]
        return {c for c in cats if c}
    raise ValueError(f"{path}: no 'videos' or 'categories' key to take the categories from")


def load_meta(path: str) -> dict:
    """YouTube-VOS meta.json as {video: {obj_id: {"category", "frames"}}}."""
    with open(path) as f:
        info = json.load(f)
    if "videos" not in info:
        raise ValueError(f"{path}: not a YouTube-VOS meta.json (no 'videos' key)")
    return {
        video: {int(k): o for k, o in v.get("objects", {}).items()}
        for video, v in info["videos"].items()
    }


def _png_frames(folder: str) -> list[str]:
    return sorted(os.path.splitext(n)[0] for n in os.listdir(folder) if n.endswith(".png"))


def score_video_dir(
    pred_dir: str | None,
    ann_dir: str,
    objects_meta: dict | None = None,
    **kwargs,
) -> dict[int, metrics.ObjectScores]:
    """Scores one video folder (``pred_dir=None`` scores the copy-first-mask baseline).

    Args:
      pred_dir: folder of predicted FRAME.png, or None.
      ann_dir: folder of ground-truth FRAME.png.
      objects_meta: this video's meta.json objects {obj_id: {"category", "frames"}} or None.
      **kwargs: passed to ``metrics.score_video``.
    """
    frames = _png_frames(ann_dir)
    if not frames:
        raise FileNotFoundError(f"no ground-truth PNGs in {ann_dir}")
    annotations = [annotation_png.decode(os.path.join(ann_dir, f + ".png")) for f in frames]
    first_frames, categories = {}, {}
    if objects_meta is not None:
        for obj_id, o in objects_meta.items():
            if o["frames"][0] not in frames:
                raise ValueError(
                    f"{ann_dir}: object {obj_id}'s first frame {o['frames'][0]} has no PNG"
                )
            first_frames[obj_id] = frames.index(o["frames"][0])
            categories[obj_id] = o.get("category")
    else:
        for n, ann in enumerate(annotations):
            for obj_id in np.unique(ann):
                if obj_id not in (0, metrics.VOID_LABEL):
                    first_frames.setdefault(int(obj_id), n)
    predictions = None
    if pred_dir is not None:
        annotated = [True] * len(frames)
        needed = set()
        for first in first_frames.values():
            needed.update(
                metrics.scored_frames(first, annotated, kwargs.get("include_first_last", False))
            )
        predictions = [None] * len(frames)
        for n in sorted(needed):
            path = os.path.join(pred_dir, frames[n] + ".png")
            if not os.path.exists(path):
                raise FileNotFoundError(f"missing prediction {path}")
            pred = annotation_png.decode(path)
            if pred.shape != annotations[n].shape:
                raise ValueError(
                    f"{path}: size {pred.shape} differs from the ground truth's {annotations[n].shape}"
                )
            predictions[n] = pred
    return metrics.score_video(
        predictions, annotations, first_frames, categories=categories, **kwargs
    )


def score_directory(
    predictions: str,
    annotations: str,
    meta: str | None = None,
    *,
    train_meta: str | None = None,
    include_first_last: bool = False,
    ignore_void: bool = True,
    baseline: bool = False,
) -> dict:
    """Scores every video of ``annotations`` (or of meta.json) against ``predictions``.

    Returns:
      The ``metrics.summarize`` dict (with "baseline" when asked for).
    """
    meta_objects = load_meta(meta) if meta else None
    if meta_objects is not None:
        videos = sorted(meta_objects)
    else:
        videos = sorted(
            v for v in os.listdir(annotations) if os.path.isdir(os.path.join(annotations, v))
        )
    if not videos:
        raise FileNotFoundError(f"no video folders in {annotations}")
    kwargs = {"include_first_last": include_first_last, "ignore_void": ignore_void}
    scores, base = {}, {}
    for video in videos:
        pred_dir = os.path.join(predictions, video)
        if not os.path.isdir(pred_dir):
            raise FileNotFoundError(f"missing prediction folder {pred_dir}")
        objs = None if meta_objects is None else meta_objects[video]
        ann_dir = os.path.join(annotations, video)
        scores[video] = score_video_dir(pred_dir, ann_dir, objs, **kwargs)
        if baseline:
            base[video] = score_video_dir(None, ann_dir, objs, **kwargs)
    seen = load_categories(train_meta) if train_meta else None
    return metrics.summarize(scores, seen, base if baseline else None)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--predictions", required=True, help="folder of VIDEO/FRAME.png predictions"
    )
    parser.add_argument(
        "--annotations", required=True, help="folder of VIDEO/FRAME.png ground truth"
    )
    parser.add_argument("--meta", default=None, help="YouTube-VOS meta.json of the scored split")
    parser.add_argument("--train_meta", default=None, help="train meta.json / dataset_info.json")
    parser.add_argument("--output", default=None, help="where to write the metrics JSON")
    parser.add_argument(
        "--include_first_last", action="store_true", help="also score first and last frames"
    )
    parser.add_argument(
        "--void_as_background",
        action="store_true",
        help="treat void (255) as background, as the DAVIS toolkit's semi-supervised driver does",
    )
    parser.add_argument("--baseline", action="store_true", help="also score copy-the-first-mask")
    args = parser.parse_args(argv)
    result = score_directory(
        args.predictions,
        args.annotations,
        args.meta,
        train_meta=args.train_meta,
        include_first_last=args.include_first_last,
        ignore_void=not args.void_as_background,
        baseline=args.baseline,
    )
    print(metrics.format_table(result))
    if args.output:
        write_json(args.output, result)
    return result


def write_json(path: str, obj) -> None:
    """Writes JSON atomically (temporary file, then rename)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


if __name__ == "__main__":
    main(sys.argv[1:])
