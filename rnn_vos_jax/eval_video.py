"""The evaluation video: one whole video at its original size, from a raw folder or from records.

Its own module because both sources build it (eval_data from a raw folder, input_pipeline_eval
from TFRecords) and eval_data imports input_pipeline_eval: a type defined in either would make
them import each other. No TensorFlow here.
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

    def without_frames(self) -> EvalVideo:
        """A copy with frames=None: what scoring needs, without holding the decoded frames."""
        return dataclasses.replace(self, frames=None)
