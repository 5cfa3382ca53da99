"""Scores folders of palette PNGs against ground-truth folders (any method's, not only ours).

Both folders hold ``VIDEO/FRAME.png`` id maps, decoded by ``annotations.decode`` (palette,
grayscale or DAVIS-palette RGB; grayscale 0/255 masks, as DAVIS 2016 distributes them, read as
object 1). The frames scored are those with a ground-truth PNG. An object's first frame is its
first frame in meta.json (YouTube-VOS ``videos/VIDEO/objects/ID/frames``) or else the first
ground-truth PNG containing its id. `score_directory` scores videos in worker processes when asked.
The command is `python -m rnn_vos_jax.score`. Folders and meta.json may be local or in a bucket
(`gs://...`, through runtime.storage).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os

import numpy as np

# aliased: `annotations` is this module's word for the ground-truth folder and id maps
from rnn_vos_jax.data import annotations as annotation_png
from rnn_vos_jax.data import meta as meta_json
from rnn_vos_jax.data.vos_reader import stems
from rnn_vos_jax.runtime import storage
from rnn_vos_jax.scoring import metrics


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
      objects_meta: this video's meta.json objects {obj_id: meta.ObjectInfo} or None.
      **kwargs: passed to ``metrics.score_video``.
    """
    frames = stems(ann_dir, ".png")
    if not frames:
        hint = ""
        if storage.isdir(ann_dir) and any(
            storage.isdir(storage.join(ann_dir, n)) for n in storage.listdir(ann_dir)
        ):
            hint = (
                " (it holds folders: is --annotations one level too high, e.g. DAVIS/Annotations?)"
            )
        raise FileNotFoundError(f"no ground-truth PNGs in {ann_dir}{hint}")
    annotations = [annotation_png.decode(storage.join(ann_dir, f + ".png")) for f in frames]
    first_frames, categories = {}, {}
    if objects_meta is not None:
        for obj_id, o in objects_meta.items():
            if o.frames[0] not in frames:
                raise ValueError(
                    f"{ann_dir}: object {obj_id}'s first frame {o.frames[0]} has no PNG"
                )
            first_frames[obj_id] = frames.index(o.frames[0])
            categories[obj_id] = o.category
    else:
        for n, ann in enumerate(annotations):
            for obj_id in np.flatnonzero(
                np.bincount(ann.ravel(), minlength=256)
            ):  # np.unique sorts
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
            path = storage.join(pred_dir, frames[n] + ".png")
            if not storage.exists(path):
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


def _score_one(task: tuple) -> tuple[dict, dict | None]:
    """One video's (model scores, baseline scores or None); a top-level function for workers."""
    pred_dir, ann_dir, objs, kwargs, baseline = task
    scores = score_video_dir(pred_dir, ann_dir, objs, **kwargs)
    return scores, (score_video_dir(None, ann_dir, objs, **kwargs) if baseline else None)


def _init_worker() -> None:
    # One OpenCV thread per worker process: the processes are the parallelism.
    import cv2

    cv2.setNumThreads(1)


def _worker_context():
    """Workers start from a fresh single-threaded server that has imported this module, not by
    forking the caller (which may run JAX or TensorFlow threads): cheaper than spawning each."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def _no_object_message(annotations: str, videos: list[str], scores: dict) -> str:
    found = sum(len(v) for v in scores.values())
    if not found:
        return (
            f"no object was scored: the ground truth of the {len(videos)} videos in "
            f"{annotations} holds no object id (every PNG is background 0 or void 255) and no "
            "meta.json lists one; is this the Annotations folder (DAVIS: Annotations/480p)?"
        )
    return (
        f"no object was scored: the {found} objects of the {len(videos)} videos in {annotations} "
        "have no frame left once each object's first frame and each video's last frame are left "
        "out (as the DAVIS toolkit does); --include_first_last scores those frames too"
    )


def score_directory(
    predictions: str,
    annotations: str,
    meta: str | None = None,
    *,
    train_meta: str | None = None,
    include_first_last: bool = False,
    ignore_void: bool = False,
    baseline: bool = False,
    workers: int = 1,
) -> dict:
    """Scores every video of ``annotations`` (or of meta.json) against ``predictions``.

    Args:
      predictions, annotations: folders of ``VIDEO/FRAME.png``.
      meta: YouTube-VOS meta.json of the scored split (objects' first frames and categories).
      train_meta: the training split's meta.json / dataset_info.json (seen categories).
      include_first_last: also score each object's first and each video's last frame.
      ignore_void: leave void pixels (255) out instead of counting them as background.
      baseline: also score copying each object's first mask.
      workers: processes scoring videos in parallel (0: one per CPU; 1: this process).

    Returns:
      The ``metrics.summarize`` dict (with "baseline" when asked for).

    Raises:
      FileNotFoundError: naming a missing folder or prediction PNG.
      ValueError: naming the file of a bad PNG; when no object is scored at all, saying why.
    """
    meta_objects = meta_json.read(meta) if meta else None
    if meta_objects is not None:
        videos = sorted(meta_objects)
    else:
        videos = sorted(
            v for v in storage.listdir(annotations) if storage.isdir(storage.join(annotations, v))
        )
    if not videos:
        raise FileNotFoundError(f"no video folders in {annotations}")
    kwargs = {"include_first_last": include_first_last, "ignore_void": ignore_void}
    tasks = {}
    for video in videos:
        pred_dir = storage.join(predictions, video)
        if not storage.isdir(pred_dir):
            raise FileNotFoundError(f"missing prediction folder {pred_dir}")
        objs = None if meta_objects is None else meta_objects[video]
        tasks[video] = (pred_dir, storage.join(annotations, video), objs, kwargs, baseline)
    workers = (os.cpu_count() or 1) if workers == 0 else int(workers)
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if workers == 1 or len(videos) == 1:
        results = {video: _score_one(task) for video, task in tasks.items()}
    else:
        # Longest videos first, so that no worker is left with a long one at the end.
        order = sorted(videos, key=lambda v: -len(storage.listdir(tasks[v][1])))
        context = _worker_context()
        with concurrent.futures.ProcessPoolExecutor(
            min(workers, len(videos)), mp_context=context, initializer=_init_worker
        ) as pool:
            results = dict(zip(order, pool.map(_score_one, [tasks[v] for v in order])))
    scores = {video: results[video][0] for video in videos}
    base = {video: results[video][1] for video in videos}
    seen = meta_json.categories(train_meta) if train_meta else None
    result = metrics.summarize(scores, seen, base if baseline else None)
    if not result["num_objects"]:
        raise ValueError(_no_object_message(annotations, videos, scores))
    return result
