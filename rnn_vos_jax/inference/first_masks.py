"""Each object's first mask for `segment`: one PNG of the first frame, or a folder of PNGs named
like the frames (objects may start later). Palette, greyscale-id and DAVIS-coloured RGB PNGs are
read by `annotations.decode`; 255 is void.
"""

from __future__ import annotations

import os

import numpy as np

from rnn_vos_jax.data import annotations

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
    if os.path.isfile(path):
        return [(0, path)]  # a single PNG is the first frame's, whatever its name
    if not os.path.isdir(path):
        raise FileNotFoundError(f"masks not found: {path} (a PNG file or a folder of PNGs)")
    pngs = sorted(n for n in os.listdir(path) if n.lower().endswith(".png"))
    if not pngs:
        raise ValueError(f"mask folder {path} holds no .png files")
    files, unknown = [], []
    for name in pngs:
        index = source.index_of(os.path.splitext(name)[0])
        if index is None:
            unknown.append(name)
        else:
            files.append((index, os.path.join(path, name)))
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


def read_first_masks(path: str, source) -> tuple[dict[int, tuple[int, np.ndarray]], dict[int, str]]:
    """Each object's first mask, from one PNG or a folder of PNGs named like the frames.

    Args:
      path: a PNG (the first frame's objects) or a folder of FRAME.png masks.
      source: the frames (`video_io.open_frames`), for their names and size (H, W).

    Returns:
      (object id -> (frame index, bool[H, W] mask), object id -> the PNG it came from), ids
      ascending.

    Raises:
      FileNotFoundError / ValueError: naming the file for a missing path, a PNG whose name is
        not a frame, an unreadable PNG, RGB colours outside the DAVIS palette, a size that
        differs from the frames (both sizes given), or masks without any object.
    """
    first, files = {}, {}
    for index, file in _mask_files(path, source):
        ids = _read_mask(file, source.size, source.path)
        for obj in np.unique(ids):
            obj = int(obj)
            if obj in (0, VOID) or obj in first:
                continue
            first[obj], files[obj] = (index, ids == obj), file
    if not first:
        where = f"mask {path}" if os.path.isfile(path) else f"no PNG in mask folder {path}"
        raise ValueError(
            f"{where} has no object: every pixel is background (0) or void (255); mark each "
            "object with its id (1, 2, ...) or a palette colour"
        )
    order = sorted(first)
    return {o: first[o] for o in order}, {o: files[o] for o in order}
