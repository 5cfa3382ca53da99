"""Annotation PNGs (object-id maps): the DAVIS palette, the one decoder and the one encoder.

Every reader of annotations (raw folders, conversion, training clips, eval records, scoring)
decodes with `decode`, so a PNG means the same ids wherever it is read; predictions and
converted annotations are written with `encode` / `write`. PIL is used because it returns
palette indices, where tf.io.decode_png and cv2 expand palettes to colours. No TensorFlow here.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from rnn_vos_jax.runtime import storage

_BYTES_SOURCE = "<png bytes>"  # how errors name PNG bytes decoded without a name


def davis_palette() -> np.ndarray:
    """The DAVIS / PASCAL VOC palette: uint8[256, 3], index 0 black, 1 (128, 0, 0), 2 (0, 128, 0)."""
    palette = np.zeros((256, 3), np.uint8)
    for index in range(256):
        code, rgb = index, [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((code >> channel) & 1) << (7 - bit)
            code >>= 3
        palette[index] = rgb
    return palette


PALETTE = davis_palette()


def _rgb_to_ids(rgb: np.ndarray, name: str) -> np.ndarray:
    """uint8[H, W, 3] colours to uint8[H, W] ids: grey images are ids, colours palette indices."""
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return rgb[..., 0]
    codes = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    palette_codes = (PALETTE[:, 0].astype(np.int32) << 16) | (PALETTE[:, 1].astype(np.int32) << 8)
    palette_codes |= PALETTE[:, 2]
    # reversed: a colour listed twice maps to its lowest index
    lookup = {int(code): index for index, code in reversed(list(enumerate(palette_codes)))}
    unique, inverse = np.unique(codes, return_inverse=True)
    missing = [hex(int(c)) for c in unique if int(c) not in lookup]
    if missing:
        raise ValueError(f"{name}: RGB colours {missing[:5]} are not in the DAVIS palette")
    return np.array([lookup[int(c)] for c in unique], np.uint8)[inverse].reshape(codes.shape)


def decode(
    source: str | bytes,
    *,
    binary: bool = False,
    shape: tuple[int, int] | None = None,
    name: str | None = None,
) -> np.ndarray:
    """Decodes an annotation PNG (palette, greyscale ids or 0/255, or RGB colours) to object ids.

    Args:
      source: a file path or the PNG bytes.
      binary: map every nonzero value to 1 (DAVIS 2016 protocol).
      shape: expected (height, width); checked when given, and then b'' (a frame without an
        annotation) gives zeros of that shape.
      name: how errors name the source (default: the path, or '<png bytes>'), e.g.
        'PNG of video X'.

    Returns:
      uint8[H, W] ids, 0 = background. Greyscale or RGB masks holding only 0 and 255 map 255
      to 1 (DAVIS 2016 masks); palette and 16-bit PNGs keep their values.

    Raises:
      FileNotFoundError: the path does not exist.
      ValueError: naming the source when it cannot be decoded, holds unknown colours or does not
        have `shape`.
    """
    is_bytes = isinstance(source, bytes)
    if name is None:
        name = _BYTES_SOURCE if is_bytes else os.fspath(source)
    if shape is not None and is_bytes and not source:
        return np.zeros(tuple(shape), np.uint8)
    try:
        with Image.open(io.BytesIO(source if is_bytes else storage.read_bytes(source))) as image:
            image.load()
            mode = image.mode
            if mode in ("P", "L"):
                ids = np.array(image)
            elif mode == "LA":  # the alpha channel carries no ids
                ids = np.array(image.getchannel("L"))
            elif mode == "1":
                ids = np.array(image.convert("L"))
            elif mode in ("RGB", "RGBA"):
                ids = _rgb_to_ids(np.array(image.convert("RGB")), name)
            elif mode.startswith("I"):
                ids = np.array(image)
                if ids.max(initial=0) > 255:
                    raise ValueError(f"{name}: ids above 255 in a {mode} PNG")
                ids = ids.astype(np.uint8)
            else:
                raise ValueError(f"{name}: unsupported annotation image mode {mode}")
    except FileNotFoundError:
        raise FileNotFoundError(f"annotation file not found: {name}") from None
    except Image.UnidentifiedImageError as error:
        raise ValueError(f"cannot read annotation {name}: not an image file") from error
    except (OSError, SyntaxError) as error:
        raise ValueError(f"cannot read annotation {name}: {error}") from error
    if shape is not None and ids.shape != tuple(shape):
        raise ValueError(f"annotation {name} is {ids.shape}, frames are {tuple(shape)}")
    if binary:
        return (ids > 0).astype(np.uint8)
    greyscale = mode in ("L", "LA", "1", "RGB", "RGBA")
    if greyscale and ids.max(initial=0) == 255 and np.all((ids == 0) | (ids == 255)):
        ids = (ids > 0).astype(np.uint8)
    return ids


def encode(ids: np.ndarray) -> bytes:
    """Encodes object ids uint8[H, W] as a palette PNG with the DAVIS palette."""
    ids = np.asarray(ids)
    if ids.ndim != 2 or ids.dtype != np.uint8:
        raise ValueError(f"annotation must be uint8[H, W], got {ids.dtype}{list(ids.shape)}")
    image = Image.fromarray(ids)
    image.putpalette(PALETTE.reshape(-1).tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write(path: str, ids: np.ndarray) -> None:
    """Writes uint8[H, W] ids as a DAVIS-palette PNG at `path`.

    Atomic (storage.write_bytes: a renamed temporary file, or one object upload): an interrupted
    job never leaves a truncated PNG that a resumed evaluation would take as finished.
    """
    try:
        data = encode(ids)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    storage.write_bytes(path, data)
