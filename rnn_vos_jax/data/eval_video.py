"""The evaluation video: one whole video at its original size, from a raw folder or from records.

Both sources build it (evaluation/videos.py from a raw folder, data/eval_records.py from
TFRecords), so it lives in the data room below both. No TensorFlow here.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class EvalVideo:
    """One evaluation video with N frames and K objects, at its original size H0 x W0.

    Attributes:
      name: video name.
      frame_names: list[str] of N frame names without extension, in frame order.
      frames: uint8[N, H0, W0, 3] RGB frames, or None once they are no longer needed (see
        `without_frames`).
      annotations: uint8[N, H0, W0] object ids; 0 on frames without an annotation PNG.
      annotated: bool[N], True where the frame has an annotation PNG.
      object_ids: int32[K] object ids, ascending.
      categories: list[str] of K category names; '' when unknown.
      first_frame: int32[K] index of each object's first listed frame.
      height, width: H0, W0.
      output: bool[N], the frames whose predictions are written and scored, or None for all.
        The YouTube-VOS all-frames protocol runs the model on every frame (30 fps) and keeps
        only the annotated split's frames (every 5th); objects' first frames are among them.

    Raises:
      ValueError: naming the video when the arrays disagree with N, K or (H0, W0).
    """

    name: str
    frame_names: list[str]
    frames: np.ndarray | None
    annotations: np.ndarray
    annotated: np.ndarray
    object_ids: np.ndarray
    categories: list[str]
    first_frame: np.ndarray
    height: int
    width: int
    output: np.ndarray | None = None

    def __post_init__(self):
        n, k, hw = len(self.frame_names), len(self.object_ids), (self.height, self.width)
        if self.frames is not None and self.frames.shape[1:3] != hw:
            raise ValueError(
                f"video {self.name}: frames are {self.frames.shape[1:3]}, the video says {hw}"
            )
        expected = {
            "frames": (n, *hw, 3),
            "annotations": (n, *hw),
            "annotated": (n,),
            "object_ids": (k,),
            "first_frame": (k,),
            "output": (n,),
        }
        for field, shape in expected.items():
            value = getattr(self, field)
            if value is not None and value.shape != shape:
                raise ValueError(
                    f"video {self.name}: {field} has shape {value.shape}, expected {shape} "
                    f"({n} frames, {k} objects, size {hw})"
                )
        if len(self.categories) != k:
            raise ValueError(f"video {self.name}: {len(self.categories)} categories, {k} objects")
        if k and not (0 <= self.first_frame.min() and self.first_frame.max() < n):
            raise ValueError(f"video {self.name}: first frames {self.first_frame} not in [0, {n})")
        if self.output is not None and k and not self.output[self.first_frame].all():
            raise ValueError(
                f"video {self.name}: an object's first frame is not an output frame "
                f"(first frames {self.first_frame.tolist()})"
            )

    def output_indices(self) -> np.ndarray:
        """int[M] indices of the output frames (all N when ``output`` is None), ascending."""
        n = len(self.frame_names)
        return np.arange(n) if self.output is None else np.flatnonzero(self.output)

    def output_view(self) -> EvalVideo:
        """The video restricted to its output frames, without frames: what is written and scored.

        Frame indices (first_frame) are renumbered to positions among the M output frames.
        """
        if self.output is None:
            return self.without_frames()
        keep = self.output_indices()
        return dataclasses.replace(
            self,
            frame_names=[self.frame_names[i] for i in keep],
            frames=None,
            annotations=self.annotations[keep],
            annotated=self.annotated[keep],
            first_frame=np.searchsorted(keep, self.first_frame).astype(np.int32),
            output=None,
        )

    def without_frames(self) -> EvalVideo:
        """A copy with frames=None: what scoring needs, without holding the decoded frames."""
        return dataclasses.replace(self, frames=None)
