"""What predictors take in: frames and first masks, checked (errors name the frame or object)
and resized to a model's input size as the authors' torchvision ``Resize`` (PIL: bilinear for
frames, nearest neighbour for masks)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def resize_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8[H0, W0, 3] -> uint8[H, W, 3], bilinear (antialiased when shrinking, as PIL)."""
    if frame.shape[:2] == tuple(size):
        return frame
    return np.asarray(Image.fromarray(frame).resize((size[1], size[0]), Image.BILINEAR))


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """bool[H0, W0] -> bool[H, W], nearest neighbour."""
    if mask.shape == tuple(size):
        return mask.astype(bool)
    im = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(im.resize((size[1], size[0]), Image.NEAREST)) > 127


def check_frame(t: int, frame) -> np.ndarray:
    """Frame t as uint8[H, W, 3]; raises a ValueError naming t for any other dtype or shape."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"frame {t}: expected uint8[H, W, 3], got {frame.dtype}{frame.shape}")
    return frame


def first_mask(object_id: int, t: int, mask, size, image_size) -> tuple[np.ndarray, np.ndarray]:
    """(the given bool[H0, W0] mask, float32[H, W] at the model size); raises on bad masks."""
    mask = np.asarray(mask, bool)
    if mask.shape != tuple(size):
        raise ValueError(
            f"object {object_id}: first mask {mask.shape} does not match frame {t} of size {size}"
        )
    if not mask.any():
        raise ValueError(f"object {object_id}: first mask on frame {t} is empty")
    return mask, resize_mask(mask, image_size).astype(np.float32)
