"""DAVIS region (J) and boundary (F) measures, per object, video and dataset.

The per-frame measures reproduce the official DAVIS toolkit
(davisvideochallenge/davis2017-evaluation, ``davis2017/metrics.py``) exactly: J is the IoU with
void pixels removed from both sets and an empty union scored 1; F matches one-pixel boundary maps
(``seg2bmap``) within ``ceil(0.008 * image diagonal)`` pixels using a disk structuring element
identical to ``skimage.morphology.disk`` (``x**2 + y**2 <= r**2``).

The semi-supervised protocol on top: an object is scored from its first appearance; its first
frame (the given mask) and the video's last annotated frame are left out unless asked for, as the
toolkit does with ``[1:-1]``; an object's score is the mean over its scored frames; dataset means
are over objects. Only numpy and OpenCV are used, so this imports without JAX or TensorFlow.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence

import cv2
import numpy as np

VOID_LABEL = 255
BOUND_TH = 0.008
# Paper B (Table 2a) splits each object's frames into the first 10 and the rest.
EARLY_FRAMES = 10


def jaccard(
    annotation: np.ndarray, segmentation: np.ndarray, void: np.ndarray | None = None
) -> float:
    """Region similarity J (IoU) of one frame, as the toolkit's ``db_eval_iou``.

    Args:
      annotation: bool[H, W] ground-truth mask of one object.
      segmentation: bool[H, W] predicted mask.
      void: optional bool[H, W]; these pixels count in neither intersection nor union.

    Returns:
      IoU in [0, 1]; 1.0 when the union (outside void) is empty.
    """
    annotation = np.asarray(annotation, bool)
    segmentation = np.asarray(segmentation, bool)
    _check_shapes(annotation, segmentation, void)
    keep = np.ones_like(annotation) if void is None else ~np.asarray(void, bool)
    inter = np.count_nonzero(annotation & segmentation & keep)
    union = np.count_nonzero((annotation | segmentation) & keep)
    return 1.0 if union == 0 else inter / union


@functools.lru_cache(maxsize=32)
def disk(radius: float) -> np.ndarray:
    """Disk structuring element, identical to ``skimage.morphology.disk(radius)``.

    Returns:
      uint8[2r+1, 2r+1] with ones where ``x**2 + y**2 <= radius**2``.
    """
    coords = np.arange(-radius, radius + 1)
    x, y = np.meshgrid(coords, coords)
    return np.asarray(x**2 + y**2 <= radius**2, np.uint8)


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary map of a binary mask (the toolkit's ``_seg2bmap``).

    A pixel is a boundary pixel when it differs from its east, south or south-east neighbour
    (pixels past the border count as background, except that the last row compares only
    eastwards and the last column only southwards); the bottom-right pixel is never one.

    Args:
      seg: bool[H, W] mask.

    Returns:
      bool[H, W] boundary map.
    """
    seg = np.asarray(seg, bool)
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    bmap = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    bmap[-1, :] = seg[-1, :] ^ east[-1, :]
    bmap[:, -1] = seg[:, -1] ^ south[:, -1]
    bmap[-1, -1] = False
    return bmap


def boundary_f(
    annotation: np.ndarray,
    segmentation: np.ndarray,
    void: np.ndarray | None = None,
    bound_th: float = BOUND_TH,
) -> float:
    """Boundary F-measure of one frame, as the toolkit's ``f_measure``.

    Args:
      annotation: bool[H, W] ground-truth mask of one object.
      segmentation: bool[H, W] predicted mask.
      void: optional bool[H, W]; both masks are cleared there before taking boundaries.
      bound_th: tolerance; < 1 is a fraction of the image diagonal (rounded up), >= 1 pixels.

    Returns:
      F in [0, 1]; 1.0 when neither mask has a boundary, 0.0 when only one has.
    """
    annotation = np.asarray(annotation, bool)
    segmentation = np.asarray(segmentation, bool)
    _check_shapes(annotation, segmentation, void)
    if void is not None:
        keep = ~np.asarray(void, bool)
        annotation = annotation & keep
        segmentation = segmentation & keep
    bound_pix = (
        bound_th if bound_th >= 1 else float(np.ceil(bound_th * np.linalg.norm(annotation.shape)))
    )
    fg_boundary = seg2bmap(segmentation)
    gt_boundary = seg2bmap(annotation)
    n_fg = np.count_nonzero(fg_boundary)
    n_gt = np.count_nonzero(gt_boundary)
    if n_fg == 0 or n_gt == 0:
        # Toolkit conventions: both empty -> P = R = 1; one empty -> one of P, R is 0.
        return 1.0 if n_fg == n_gt else 0.0
    kernel = disk(float(bound_pix))
    fg_dil = cv2.dilate(fg_boundary.astype(np.uint8), kernel).astype(bool)
    gt_dil = cv2.dilate(gt_boundary.astype(np.uint8), kernel).astype(bool)
    precision = np.count_nonzero(fg_boundary & gt_dil) / n_fg
    recall = np.count_nonzero(gt_boundary & fg_dil) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _check_shapes(annotation, segmentation, void):
    if annotation.shape != segmentation.shape or annotation.ndim != 2:
        raise ValueError(
            f"annotation {annotation.shape} and segmentation {segmentation.shape} must be equal 2-D "
            "shapes"
        )
    if void is not None and np.shape(void) != annotation.shape:
        raise ValueError(f"void {np.shape(void)} does not match annotation {annotation.shape}")


@dataclasses.dataclass
class ObjectScores:
    """Per-frame scores of one object.

    Attributes:
      offsets: int[T] frame index relative to the object's first frame (0 = given frame).
      j: float64[T] region similarity per scored frame.
      f: float64[T] boundary F per scored frame.
      category: the object's category, or None when unknown.
    """

    offsets: np.ndarray
    j: np.ndarray
    f: np.ndarray
    category: str | None = None

    def to_json(self) -> dict:
        return {
            "offsets": self.offsets.tolist(),
            "J": self.j.tolist(),
            "F": self.f.tolist(),
            "category": self.category,
        }

    @classmethod
    def from_json(cls, d: Mapping) -> ObjectScores:
        return cls(
            np.asarray(d["offsets"], np.int64),
            np.asarray(d["J"], np.float64),
            np.asarray(d["F"], np.float64),
            d.get("category"),
        )


def scored_frames(
    first_frame: int, annotated: Sequence[bool], include_first_last: bool = False
) -> list[int]:
    """Indices of the frames that score an object.

    Args:
      first_frame: index of the object's first frame (its given mask).
      annotated: bool[N], whether frame n has ground truth.
      include_first_last: keep the object's first frame and the video's last annotated frame.

    Returns:
      Sorted frame indices >= first_frame that have ground truth.
    """
    frames = [n for n in range(first_frame, len(annotated)) if annotated[n]]
    if not include_first_last and frames:
        last = max(n for n in range(len(annotated)) if annotated[n])
        frames = [n for n in frames if n != first_frame and n != last]
    return frames


def score_video(
    predictions: Sequence[np.ndarray | None],
    annotations: Sequence[np.ndarray | None],
    first_frames: Mapping[int, int],
    *,
    categories: Mapping[int, str | None] | None = None,
    include_first_last: bool = False,
    ignore_void: bool = True,
    bound_th: float = BOUND_TH,
) -> dict[int, ObjectScores]:
    """Scores every object of one video from id maps.

    Args:
      predictions: N uint8[H, W] predicted id maps (None for frames that are never scored).
        ``None`` instead of the whole sequence scores the copy-the-first-mask baseline: each
        object's prediction is its ground truth on its first frame.
      annotations: N uint8[H, W] ground-truth id maps, None where a frame has no ground truth.
      first_frames: object id -> index of its first frame.
      categories: object id -> category (None when unknown).
      include_first_last: also score each object's first frame and the video's last frame.
      ignore_void: void pixels (255) count nowhere (toolkit functions with ``void_pixels``);
        False makes them background, as the toolkit's semi-supervised driver does.
      bound_th: boundary tolerance (see ``boundary_f``).

    Returns:
      object id -> ObjectScores (objects with no scored frame have empty arrays).
    """
    annotated = [a is not None for a in annotations]
    categories = categories or {}
    result = {}
    for obj_id, first in sorted(first_frames.items()):
        if annotations[first] is None:
            raise ValueError(f"object {obj_id}: no ground truth on its first frame {first}")
        first_mask = annotations[first] == obj_id
        offsets, js, fs = [], [], []
        for n in scored_frames(first, annotated, include_first_last):
            gt = annotations[n]
            void = (gt == VOID_LABEL) if ignore_void else None
            if predictions is None:
                pred = first_mask
            elif predictions[n] is None:
                raise ValueError(f"object {obj_id}: no prediction for frame {n}")
            else:
                pred = predictions[n] == obj_id
            gt_mask = gt == obj_id
            offsets.append(n - first)
            js.append(jaccard(gt_mask, pred, void))
            fs.append(boundary_f(gt_mask, pred, void, bound_th))
        result[obj_id] = ObjectScores(
            np.asarray(offsets, np.int64),
            np.asarray(js, np.float64),
            np.asarray(fs, np.float64),
            categories.get(obj_id),
        )
    return result


def _mean(values) -> float | None:
    values = list(values)
    return float(np.mean(values)) if values else None


def _jf_block(objs: Sequence[tuple[float, float]]) -> dict:
    j = _mean(o[0] for o in objs)
    f = _mean(o[1] for o in objs)
    jf = None if j is None else (j + f) / 2
    return {"J_mean": j, "F_mean": f, "JF_mean": jf, "num_objects": len(objs)}


def summarize(
    videos: Mapping[str, Mapping[int, ObjectScores]],
    seen_categories: set[str] | None = None,
    with_baseline: Mapping[str, Mapping[int, ObjectScores]] | None = None,
) -> dict:
    """Dataset metrics in the project's metrics-JSON schema.

    Args:
      videos: video name -> object id -> ObjectScores.
      seen_categories: the training split's categories; with it (and known object categories)
        "seen"/"unseen" blocks and the YouTube-VOS "overall" mean(J_seen, J_unseen, F_seen,
        F_unseen) are added.
      with_baseline: the same scores for the copy-the-first-mask baseline, summarized under
        "baseline".

    Returns:
      {"J_mean", "F_mean", "JF_mean", "num_objects", "per_object": {"VIDEO/ID": {"J", "F", "JF",
      "num_frames", "category"}}, "per_video": {VIDEO: {"J", "F", "JF", "num_objects"}},
      "temporal": {"t<10": block, "t>=10": block}, "unscored_objects": [...], optional "seen",
      "unseen", "overall", "baseline"}; scores are fractions in [0, 1], None when nothing scored.
    """
    per_object, per_video, unscored = {}, {}, []
    scored, early, late = [], [], []
    seen, unseen = [], []
    for video in sorted(videos):
        video_objs = []
        for obj_id, s in sorted(videos[video].items()):
            key = f"{video}/{obj_id}"
            if len(s.j) == 0:
                unscored.append(key)
                continue
            j, f = float(s.j.mean()), float(s.f.mean())
            per_object[key] = {
                "J": j,
                "F": f,
                "JF": (j + f) / 2,
                "num_frames": len(s.j),
                "category": s.category,
            }
            scored.append((j, f))
            video_objs.append((j, f))
            for bucket, sel in (
                (early, s.offsets < EARLY_FRAMES),
                (late, s.offsets >= EARLY_FRAMES),
            ):
                if sel.any():
                    bucket.append((float(s.j[sel].mean()), float(s.f[sel].mean())))
            if seen_categories is not None and s.category:
                (seen if s.category in seen_categories else unseen).append((j, f))
        if video_objs:
            block = _jf_block(video_objs)
            per_video[video] = {
                "J": block["J_mean"],
                "F": block["F_mean"],
                "JF": block["JF_mean"],
                "num_objects": block["num_objects"],
            }
    out = _jf_block(scored)
    out.update(
        per_object=per_object,
        per_video=per_video,
        temporal={f"t<{EARLY_FRAMES}": _jf_block(early), f"t>={EARLY_FRAMES}": _jf_block(late)},
        unscored_objects=unscored,
    )
    if seen or unseen:
        out["seen"] = _jf_block(seen)
        out["unseen"] = _jf_block(unseen)
        if seen and unseen:
            four = [out[b][k] for b in ("seen", "unseen") for k in ("J_mean", "F_mean")]
            out["overall"] = float(np.mean(four))
    if with_baseline is not None:
        out["baseline"] = summarize(with_baseline, seen_categories)
    return out


def format_table(metrics: Mapping) -> str:
    """A short human-readable table of a ``summarize`` result (and its baseline)."""
    rows = [("model", metrics)]
    if "baseline" in metrics:
        rows.append(("copy-first-mask", metrics["baseline"]))
    cols = ["J_mean", "F_mean", "JF_mean"]
    head = f"{'':16s}" + "".join(f"{c:>9s}" for c in cols) + f"{'J&F<10':>9s}{'J&F>=10':>9s}"
    extra = [c for c in ("seen", "unseen") if c in metrics]
    head += "".join(f"{'JF_' + c:>10s}" for c in extra) + (
        "  overall" if "overall" in metrics else ""
    )
    lines = [head]
    for name, m in rows:
        vals = [m.get(c) for c in cols]
        vals += [m["temporal"][k]["JF_mean"] for k in m["temporal"]]
        line = f"{name:16s}" + "".join(_fmt(v, 9) for v in vals)
        line += "".join(_fmt(m.get(c, {}).get("JF_mean"), 10) for c in extra)
        if "overall" in m:
            line += _fmt(m["overall"], 9)
        lines.append(line)
    lines.append(
        f"objects scored: {metrics['num_objects']}, unscored: {len(metrics['unscored_objects'])}"
    )
    return "\n".join(lines)


def _fmt(v, width):
    return f"{'-':>{width}s}" if v is None else f"{100 * v:{width}.2f}"
