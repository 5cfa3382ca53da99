"""DAVIS region (J) and boundary (F) measures, per object, video and dataset.

The per-frame measures reproduce the official DAVIS toolkit
(davisvideochallenge/davis2017-evaluation, ``davis2017/metrics.py``) exactly: J is the IoU with
void pixels removed from both sets and an empty union scored 1; F matches one-pixel boundary maps
(``seg2bmap``) within ``ceil(0.008 * image diagonal)`` pixels using a disk structuring element
identical to ``skimage.morphology.disk`` (``x**2 + y**2 <= r**2``).

The semi-supervised protocol on top: an object is scored from its first appearance; its first
frame (the given mask) and the video's last annotated frame are left out unless asked for, as the
toolkit does with ``[1:-1]``; void pixels (255) in the ground truth count as background by default,
as the toolkit's semi-supervised driver does (``DAVIS._get_all_elements`` sets them to 0 before the
per-object masks are made, so the void mask it passes on is always empty); ignoring them is the
``ignore_void`` option. Per object the toolkit's ``db_statistics`` reduce the per-frame values to a
mean, a recall (fraction of frames above 0.5) and a decay (mean of the first minus mean of the last
of 4 overlapping bins, see ``statistics``); dataset figures are means over objects. Only numpy and
OpenCV are used, so this imports without JAX or TensorFlow.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence

import cv2
import numpy as np

VOID_LABEL = 255
BOUND_TH = 0.008
# The toolkit's recall threshold and number of decay bins (davis2017/utils.py db_statistics).
RECALL_THRESHOLD = 0.5
DECAY_BINS = 4
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
    box = _box(annotation | segmentation)
    if box is None:  # both masks empty
        return 1.0
    fg_boundary = seg2bmap(segmentation[box])
    gt_boundary = seg2bmap(annotation[box])
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


def _box(mask: np.ndarray) -> tuple[slice, slice] | None:
    """The bounding box of a bool[H, W] mask grown by one pixel (within the image), or None.

    Why F may be computed inside it: every boundary pixel of either mask lies in it; its added
    rows and columns are background (or the image's own last row/column, where seg2bmap's edge
    rules then apply as on the whole image), so seg2bmap gives the whole image's values there;
    and dilation treats pixels outside as absent, so the dilated maps agree wherever they are
    read (at boundary pixels). Scoring time then follows the objects' size, not the frame's.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    height, width = mask.shape
    return (
        slice(max(rows[0] - 1, 0), min(rows[-1] + 2, height)),
        slice(max(cols[0] - 1, 0), min(cols[-1] + 2, width)),
    )


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

    def statistics(self) -> dict[str, float]:
        """{"J", "J_recall", "J_decay", "F", "F_recall", "F_decay"} over the scored frames."""
        (jm, jr, jd), (fm, fr, fd) = statistics(self.j), statistics(self.f)
        return {"J": jm, "J_recall": jr, "J_decay": jd, "F": fm, "F_recall": fr, "F_decay": fd}

    @classmethod
    def from_json(cls, d: Mapping) -> ObjectScores:
        return cls(
            np.asarray(d["offsets"], np.int64),
            np.asarray(d["J"], np.float64),
            np.asarray(d["F"], np.float64),
            d.get("category"),
        )


def statistics(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean, recall and decay of one object's per-frame scores, as the toolkit's ``db_statistics``.

    Recall is the fraction of frames scoring above 0.5. Decay splits the T frames into 4 bins at
    frame indices ``b_i = round(1 + i (T - 1) / 4) - 1`` (halves rounded up), i = 0..4, bin i
    holding frames ``b_i..b_(i+1)`` inclusive (neighbouring bins share their boundary frame), and
    is the mean of bin 0 minus the mean of bin 3: positive when quality falls over the video.
    (The toolkit stores the b_i as uint8, which wraps for T > 256; here they do not.)

    Args:
      values: float[T] per-frame J or F of one object, T >= 1.

    Returns:
      (mean, recall, decay).

    Raises:
      ValueError: for an empty sequence (an object without scored frames has no statistics).
    """
    values = np.asarray(values, np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"statistics need a non-empty 1-D array of scores, got {values.shape}")
    edges = np.round(np.linspace(1, len(values), DECAY_BINS + 1) + 1e-10).astype(np.int64) - 1
    bins = [values[edges[i] : edges[i + 1] + 1] for i in range(DECAY_BINS)]
    mean = float(values.mean())
    recall = float(np.mean(values > RECALL_THRESHOLD))
    return mean, recall, float(bins[0].mean() - bins[-1].mean())


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
    ignore_void: bool = False,
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
      ignore_void: False (default): void pixels (255) of the ground truth are background, as in
        the toolkit's semi-supervised driver; True: they count nowhere (the toolkit's measure
        functions given ``void_pixels``).
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


# Per-object statistics averaged into a block's "<key>_mean" / "<key>" entries.
_STAT_KEYS = ("J_recall", "J_decay", "F_recall", "F_decay")


def _jf_block(objs: Sequence[Mapping[str, float]], with_stats: bool = True) -> dict:
    """Means over objects of their per-object statistics (dicts of ObjectScores.statistics)."""
    j = _mean(o["J"] for o in objs)
    f = _mean(o["F"] for o in objs)
    jf = None if j is None else (j + f) / 2
    block = {"J_mean": j, "F_mean": f, "JF_mean": jf, "num_objects": len(objs)}
    if with_stats:
        block.update({k: _mean(o[k] for o in objs) for k in _STAT_KEYS})
    return block


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
      {"J_mean", "F_mean", "JF_mean", "J_recall", "J_decay", "F_recall", "F_decay",
      "num_objects", "per_object": {"VIDEO/ID": {"J", "F", "JF", "J_recall", "J_decay",
      "F_recall", "F_decay", "num_frames", "category"}}, "per_video": {VIDEO: {"J", "F", "JF",
      "num_objects"}}, "temporal": {"t<10": block, "t>=10": block} (means only),
      "unscored_objects": [...], optional "seen", "unseen", "overall", "baseline"}; recall and
      decay are the toolkit's (``statistics``) averaged over objects, as its global table does;
      scores are fractions in [0, 1] (decay in [-1, 1]), None when nothing is scored.
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
            stats = s.statistics()
            per_object[key] = {
                "J": stats["J"],
                "F": stats["F"],
                "JF": (stats["J"] + stats["F"]) / 2,
                **{k: stats[k] for k in _STAT_KEYS},
                "num_frames": len(s.j),
                "category": s.category,
            }
            scored.append(stats)
            video_objs.append(stats)
            for bucket, sel in (
                (early, s.offsets < EARLY_FRAMES),
                (late, s.offsets >= EARLY_FRAMES),
            ):
                if sel.any():
                    bucket.append({"J": float(s.j[sel].mean()), "F": float(s.f[sel].mean())})
            if seen_categories is not None and s.category:
                (seen if s.category in seen_categories else unseen).append(stats)
        if video_objs:
            block = _jf_block(video_objs, with_stats=False)
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
        temporal={
            f"t<{EARLY_FRAMES}": _jf_block(early, with_stats=False),
            f"t>={EARLY_FRAMES}": _jf_block(late, with_stats=False),
        },
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
    cols = ["J_mean", "F_mean", "JF_mean", *_STAT_KEYS]
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
