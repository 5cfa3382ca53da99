"""The objects' masks for `segment` (`read_masks` -> `MaskPlan`): one PNG of the first frame, or a
folder of PNGs named like the frames, where objects start (first PNG holding them) and are
corrected (later PNGs holding them). Palette, greyscale-id and DAVIS-coloured RGB PNGs are read by
`annotations.decode`; 255 is void.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from rnn_vos_jax.data import annotations
from rnn_vos_jax.runtime import storage

VOID = 255


def _read_mask(file: str, size: tuple[int, int], video: str) -> np.ndarray:
    """uint8[H, W] ids of one mask PNG, checked against the frame size."""
    try:
        ids = annotations.decode(file)
    except ValueError as error:
        if "DAVIS palette" in str(error):
            raise ValueError(
                f"{error}; an RGB mask may only use black and DAVIS palette colours "
                "((128, 0, 0) = object 1, (0, 128, 0) = 2, ...): save it as a palette PNG or as a "
                "greyscale PNG of object ids instead"
            ) from None
        raise
    if ids.shape != tuple(size):
        raise ValueError(
            f"mask {file} is {ids.shape[0]}x{ids.shape[1]} (height x width) but the frames of "
            f"{video} are {size[0]}x{size[1]}"
        )
    return ids


def _mask_files(path: str, source) -> list[tuple[int, str]]:
    """[(frame index, PNG path)] in frame order; raises on names that are not frames."""
    if storage.isfile(path):
        return [(0, path)]  # a single PNG is the first frame's, whatever its name
    if not storage.isdir(path):
        raise FileNotFoundError(f"masks not found: {path} (a PNG file or a folder of PNGs)")
    pngs = sorted(n for n in storage.listdir(path) if n.lower().endswith(".png"))
    if not pngs:
        raise ValueError(f"mask folder {path} holds no .png files")
    files, unknown = [], []
    for name in pngs:
        index = source.index_of(os.path.splitext(name)[0])
        if index is None:
            unknown.append(name)
        else:
            files.append((index, storage.join(path, name)))
    if unknown:
        if source.frame_names is not None:
            names = source.frame_names
            frames = f"{names[0]} .. {names[-1]}" if len(names) > 1 else names[0]
        else:
            frames = f"{source.name(0)}, {source.name(1)}, ... (or 0, 1, ...)"
        raise ValueError(
            f"mask folder {path}: {len(unknown)} PNGs are not named like a frame of "
            f"{source.path}: {unknown[:5]}; the frames are named {frames}"
        )
    if source.num_frames is not None:
        late = [f for i, f in files if i >= source.num_frames]
        if late:
            raise ValueError(
                f"mask folder {path}: {late[:5]} name frames past the end of {source.path} "
                f"({source.num_frames} frames)"
            )
    return sorted(files)


@dataclasses.dataclass(frozen=True)
class MaskPlan:
    """The objects' masks by frame: where each starts, and where it is corrected.

    A PNG holding an object for the first time starts it there (as in the YouTube-VOS
    protocol); a later PNG holding it again is a correction at that frame (tracker.Tracker.step's
    `correct`). Only the ids each PNG holds are kept: a PNG is read again at its frame, so
    memory does not grow with the number of mask files.

    Attributes:
      size: (H, W) of the frames (and of every mask).
      files: frame index -> the PNG of that frame, in frame order.
      objects: frame index -> the object ids its PNG holds (ascending; no 0, no void).
      first: object id -> the frame index it starts on (ids ascending).
    """

    size: tuple[int, int]
    files: dict[int, str]
    objects: dict[int, list[int]]
    first: dict[int, int]

    @property
    def object_ids(self) -> list[int]:
        return list(self.first)

    @property
    def corrections(self) -> list[tuple[int, int]]:
        """(frame index, object id) of each correction, in frame order."""
        return [(t, o) for t, ids in self.objects.items() for o in ids if self.first[o] < t]

    def at(self, t: int) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
        """(objects starting on frame t, objects corrected on it): id -> bool[H, W] masks."""
        if t not in self.files:
            return {}, {}
        ids = _read_mask(self.files[t], self.size, "the frames")
        add = {o: ids == o for o in self.objects[t] if self.first[o] == t}
        correct = {o: ids == o for o in self.objects[t] if self.first[o] < t}
        return add, correct

    def first_masks(self) -> dict[int, tuple[int, np.ndarray]]:
        """object id -> (its first frame index, bool[H, W] mask): what predictors take."""
        return {o: (t, self.at(t)[0][o]) for o, t in self.first.items()}


def read_masks(path: str, source) -> MaskPlan:
    """The objects' masks, from one PNG (the first frame's) or a folder of PNGs named like the
    frames; each PNG is read and checked here, before any work starts.

    Args:
      path: a PNG (the first frame's objects) or a folder of FRAME.png masks.
      source: the frames (video_io / streams source), for their names and size (H, W).

    Returns:
      The MaskPlan.

    Raises:
      FileNotFoundError / ValueError: naming the file for a missing path, a PNG whose name is
        not a frame, an unreadable PNG, RGB colours outside the DAVIS palette, a size that
        differs from the frames (both sizes given), or masks without any object.
    """
    files, objects, first = {}, {}, {}
    for index, file in _mask_files(path, source):
        ids = _read_mask(file, source.size, source.path)
        held = [int(o) for o in np.unique(ids) if o not in (0, VOID)]
        files[index], objects[index] = file, held
        for obj in held:
            first.setdefault(obj, index)
    if not first:
        where = f"mask {path}" if storage.isfile(path) else f"no PNG in mask folder {path}"
        raise ValueError(
            f"{where} has no object: every pixel is background (0) or void (255); mark each "
            "object with its id (1, 2, ...) or a palette colour"
        )
    first = {o: first[o] for o in sorted(first)}
    return MaskPlan(tuple(source.size), files, objects, first)
