"""Checks predicted PNGs against what the YouTube-VOS server expects and zips them for upload.

The server expects one PNG per frame of each video of meta.json: every frame of
VALID/JPEGImages/VIDEO (valid_dir, default the folder of meta.json) and every frame meta.json lists
for an object. Each must be a palette PNG (mode P: the server reads palette indices as object ids)
at the video's original size (its JPEGs', or else its first-mask PNGs'), holding only 0 and the ids
of the video's objects (the ids of its first masks, meta.json's ``objects``). Every problem is
listed at once, and nothing is written unless there is none; then the zip holds
``Annotations/VIDEO/FRAME.png`` at its top level (the layout the server unpacks), the PNGs copied
byte for byte. Predictions the server does not expect (other videos or frames, e.g. the in-between
frames of an all-frames run) are left out and counted in the log line. Predictions, meta.json,
the valid folder and the zip may be local or in a bucket (`gs://...`, through runtime.storage); the
zip is written to a local temporary file and renamed or uploaded whole. No JAX or TensorFlow here;
the command is `python -m rnn_vos_jax.submission`.
"""

from __future__ import annotations

import io
import time
import zipfile

import numpy as np
from PIL import Image

from rnn_vos_jax.data import meta as meta_json
from rnn_vos_jax.data.vos_reader import stems
from rnn_vos_jax.runtime import storage

ZIP_ROOT = "Annotations"


class SubmissionError(ValueError):
    """The predictions are not what the server expects; ``problems`` lists every one."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__(
            f"{len(self.problems)} problems, nothing written:\n" + "\n".join(self.problems)
        )


def _original_size(valid_dir: str, video: str) -> tuple[int, int] | None:
    """(height, width) of a video's JPEGs, or else of its annotation PNGs; None if neither."""
    for sub, extension in (("JPEGImages", ".jpg"), ("Annotations", ".png")):
        folder = storage.join(valid_dir, sub, video)
        for stem in stems(folder, extension)[:1]:
            with (
                storage.open(storage.join(folder, stem + extension), "rb") as f,
                Image.open(f) as im,
            ):
                return im.height, im.width
    return None


def expected_frames(meta: str, valid_dir: str | None = None) -> dict[str, dict]:
    """What the server expects per video of meta.json.

    Returns:
      {VIDEO: {"frames": sorted frame names, "ids": sorted object ids, "size": (H, W) or None}}.
    """
    valid_dir = storage.dirname(storage.absolute(meta)) if valid_dir is None else valid_dir
    out = {}
    for video, objects in sorted(meta_json.read(meta).items()):
        if objects is None:
            raise ValueError(f"{meta} videos/{video}: missing its 'objects' dict")
        frames = set(stems(storage.join(valid_dir, "JPEGImages", video), ".jpg"))
        for obj in objects.values():
            frames.update(obj.frames)
        out[video] = {
            "frames": sorted(frames),
            "ids": sorted(objects),
            "size": _original_size(valid_dir, video),
        }
    return out


def _check_png(path: str, size: tuple[int, int] | None, ids: list[int]) -> list[str]:
    """The problems of one predicted PNG (empty when it is what the server expects)."""
    try:
        with Image.open(io.BytesIO(storage.read_bytes(path))) as image:
            image.load()
            kind, mode, shape = image.format, image.mode, (image.height, image.width)
            values = np.unique(np.asarray(image)) if mode == "P" else None
    except OSError as error:
        return [f"{path}: unreadable ({error})"]
    if kind != "PNG":
        return [f"{path}: a {kind} file, not a PNG"]
    problems = []
    if mode != "P":
        problems.append(f"{path}: {mode} PNG, not a palette PNG (mode P, indices = object ids)")
    if size is not None and shape != size:
        problems.append(f"{path}: {shape[1]}x{shape[0]}, the video is {size[1]}x{size[0]} (WxH)")
    if values is not None:
        unknown = sorted(set(values.tolist()) - {0, *ids})
        if unknown:
            problems.append(f"{path}: ids {unknown} are not among the video's objects {ids}")
    return problems


def check(predictions: str, meta: str, valid_dir: str | None = None) -> tuple[list[str], dict]:
    """Checks a folder of VIDEO/FRAME.png predictions against meta.json.

    Returns:
      (problems, expected): every problem as a line naming the file; `expected_frames`.
    """
    expected = expected_frames(meta, valid_dir)
    problems = []
    if not expected:
        problems.append(f"{meta}: no videos")
    for video, want in expected.items():
        folder = storage.join(predictions, video)
        if want["size"] is None:
            where = valid_dir or storage.dirname(storage.absolute(meta))
            problems.append(
                f"{video}: no JPEGImages/{video} or Annotations/{video} in {where} to take the "
                "original size from (pass --valid_dir)"
            )
        if not storage.isdir(folder):
            problems.append(f"{folder}: missing (the video's {len(want['frames'])} frames)")
            continue
        have = set(stems(folder, ".png"))
        missing = [f for f in want["frames"] if f not in have]
        if missing:
            problems.append(
                f"{folder}: {len(missing)} of {len(want['frames'])} frames missing: "
                + ", ".join(f + ".png" for f in missing)
            )
        for frame in want["frames"]:
            if frame in have:
                path = storage.join(folder, frame + ".png")
                problems += _check_png(path, want["size"], want["ids"])
    return problems, expected


def write_zip(predictions: str, meta: str, output: str, valid_dir: str | None = None) -> dict:
    """Checks the predictions and, when they pass, writes the submission zip.

    Returns:
      {"videos", "frames", "left_out", "output"}: counts of what went into the zip and of the
      predicted PNGs the server does not expect.

    Raises:
      SubmissionError: listing every problem; no file is written then.
    """
    problems, expected = check(predictions, meta, valid_dir)
    if problems:
        raise SubmissionError(problems)
    wanted = {(v, f) for v, e in expected.items() for f in e["frames"]}
    left_out = sum(
        (video, frame) not in wanted
        for video in storage.listdir(predictions)
        for frame in stems(storage.join(predictions, video), ".png")
    )
    # A finished zip or none: written to a local file, renamed or uploaded when complete.
    with (
        storage.staged_output(output) as tmp,
        zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive,
    ):
        for video, frame in sorted(wanted):
            name = f"{frame}.png"
            _add(archive, storage.join(predictions, video, name), f"{ZIP_ROOT}/{video}/{name}")
    return {"videos": len(expected), "frames": len(wanted), "left_out": left_out, "output": output}


def _add(archive: zipfile.ZipFile, path: str, name: str) -> None:
    """Adds the file `path` as `name`, as ZipFile.write does (its time and mode; 0o644 for an
    object in a bucket)."""
    if not storage.is_remote(path):
        archive.write(path, name)
        return
    _, mtime_ns = storage.stat(path)
    info = zipfile.ZipInfo(name, time.localtime(mtime_ns // 10**9)[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o100644 << 16
    archive.writestr(info, storage.read_bytes(path))
