r"""Runs an exported streaming step (python -m rnn_vos_jax.export) on a video: a folder of frames
and the first frame's mask -> palette PNGs of the objects, with only jax, numpy and PIL (for
reading, resizing and writing images) installed; rnn_vos_jax is not needed.

    python docs/run_exported.py --exported=DIR --frames=FRAMES_DIR --mask=FIRST.png \
        --output=OUT [--probabilities=PROBS.npy]

FRAMES_DIR holds JPEG/PNG frames (in name order, numbers as numbers); FIRST.png holds object ids
on the first frame (a palette or greyscale PNG, 0 = background; a 0/255 mask is object 1; 255
is void otherwise). It writes OUT/FRAME.png (palette PNGs of object ids at the frame size, the
objects merged by argmax against a background score of 0.5, as rnn_vos_jax evaluates), and with
--probabilities float32[T, N, H, W] (N objects in ascending id order; frame 0 holds the given
masks as 0/1), the same values as rnn_vos_jax's api.Segmenter.segment to float rounding.

How the inputs are laid out (DIR/signature.json says it too): frames are uint8 RGB resized to
the model's size with PIL's bilinear filter, masks float32 0/1 resized with nearest neighbour,
one object per slot; the step's probabilities are at the model's size and are resized back
bilinearly (jax.image.resize) and clipped to [0, 1]. Objects beyond the export's K slots run in
further groups of K, unless the export's objects compete for pixels (feedback 'exclusive').
"""

from __future__ import annotations

import argparse
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")


def load(folder):
    """(signature, variables as device arrays, start, step) of an export folder."""
    with open(os.path.join(folder, "signature.json")) as f:
        signature = json.load(f)
    with np.load(os.path.join(folder, signature["variables"]["file"])) as npz:
        variables = {name: jnp.asarray(npz[name]) for name in npz.files}
    functions = []
    for name in ("start", "step"):
        with open(os.path.join(folder, signature["functions"][name]["file"]), "rb") as f:
            functions.append(jax.export.deserialize(bytearray(f.read())))
    return signature, variables, *functions


def frame_files(folder):
    names = [n for n in os.listdir(folder) if n.lower().endswith(FRAME_SUFFIXES)]
    key = [[int(p) if p.isdigit() else p for p in re.split(r"(\d+)", n)] for n in names]
    return [os.path.join(folder, n) for _, n in sorted(zip(key, names))]


def object_ids(path):
    """int[H, W] object ids of a palette or greyscale PNG (0/255 -> object 1; 255 void)."""
    image = Image.open(path)
    if image.mode not in ("P", "L", "I", "I;16"):
        raise SystemExit(f"{path}: mode {image.mode}: expected a palette or greyscale PNG of ids")
    ids = np.asarray(image).astype(np.int64)
    if set(np.unique(ids).tolist()) <= {0, 255}:
        return (ids == 255).astype(np.int64)
    return np.where(ids == 255, 0, ids)


def resize_frame(frame, size):
    if frame.shape[:2] == tuple(size):
        return frame
    return np.asarray(Image.fromarray(frame).resize((size[1], size[0]), Image.BILINEAR))


def resize_mask(mask, size):
    if mask.shape == tuple(size):
        return mask.astype(np.float32)
    image = Image.fromarray(mask.astype(np.uint8) * 255).resize((size[1], size[0]), Image.NEAREST)
    return (np.asarray(image) > 127).astype(np.float32)


def to_frame_size(probs, size):
    """float32[K, h, w] at the model's size -> [K, H, W] at the frame's, as the predictor does."""
    return jnp.clip(jax.image.resize(probs, (probs.shape[0], *size), "bilinear"), 0.0, 1.0)


def palette():
    """The DAVIS (PASCAL VOC) palette: id 1 is (128, 0, 0), 2 is (0, 128, 0), ..."""
    out = np.zeros((256, 3), np.uint8)
    for i in range(256):
        c = i
        for j in range(8):
            for channel in range(3):
                out[i, channel] |= ((c >> channel) & 1) << (7 - j)
            c >>= 3
    return out.reshape(-1).tolist()


def segment(folder, frames_dir, mask_png, output=None):
    """float32[T, N, H, W] per-object probabilities (and palette PNGs in `output`)."""
    signature, variables, start, step = load(folder)
    size, k = tuple(signature["image_size"]), signature["objects"]
    files = frame_files(frames_dir)
    ids_map = object_ids(mask_png)
    ids = [int(i) for i in np.unique(ids_map) if i != 0]
    if not files or not ids:
        raise SystemExit(f"no frames in {frames_dir} or no object in {mask_png}")
    if len(ids) > k and signature["feedback"] != "independent":
        # Objects compete for pixels in their fed-back masks: all must step in one group.
        raise SystemExit(
            f"{len(ids)} objects but {k} slots, with feedback {signature['feedback']!r}: "
            f"export with --objects={len(ids)} or more"
        )
    groups = [ids[i : i + k] for i in range(0, len(ids), k)]
    resize = jax.jit(to_frame_size, static_argnums=1)
    carries, out = [], []
    if output:
        os.makedirs(output, exist_ok=True)
    for t, path in enumerate(files):
        frame = np.asarray(Image.open(path).convert("RGB"))
        if frame.shape[:2] != ids_map.shape:
            raise SystemExit(f"{path}: size {frame.shape[:2]} differs from the mask's")
        small = resize_frame(frame, size)
        if t == 0:
            probs = np.stack([(ids_map == i).astype(np.float32) for i in ids])
            for group in groups:
                masks = np.zeros((k, *size), np.float32)
                for slot, i in enumerate(group):
                    masks[slot] = resize_mask(ids_map == i, size)
                live = np.arange(k) < len(group)
                carries.append(start.call(variables, small, masks, live))
        else:
            probs = []
            for g, group in enumerate(groups):
                carries[g], p = step.call(variables, carries[g], small)
                probs.append(np.asarray(resize(p, frame.shape[:2]))[: len(group)])
            probs = np.concatenate(probs)
        out.append(probs)
        if output:
            scores = np.concatenate([np.full((1, *probs.shape[1:]), 0.5, np.float32), probs])
            merged = np.asarray([0, *ids], np.uint8)[np.argmax(scores, axis=0)]
            png = Image.fromarray(merged)
            png.putpalette(palette())  # an 'L' image with a palette is saved as a palette PNG
            png.save(os.path.join(output, os.path.splitext(os.path.basename(path))[0] + ".png"))
    return np.stack(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exported", required=True, help="folder written by rnn_vos_jax.export")
    parser.add_argument("--frames", required=True, help="folder of JPEG/PNG frames")
    parser.add_argument("--mask", required=True, help="PNG of object ids on the first frame")
    parser.add_argument("--output", help="folder for the palette PNGs")
    parser.add_argument("--probabilities", help=".npy file for float32[T, N, H, W]")
    args = parser.parse_args()
    probs = segment(args.exported, args.frames, args.mask, args.output)
    if args.probabilities:
        np.save(args.probabilities, probs)
    print(
        f"{probs.shape[0]} frames, {probs.shape[1]} objects -> {args.output or args.probabilities}"
    )


if __name__ == "__main__":
    main()
