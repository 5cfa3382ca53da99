"""Optical flow as colour images: the Middlebury colour wheel (Baker et al. 2011), in NumPy.

Hue is the flow's direction, saturation its length relative to the largest in the image (the
normalisation RAFT's flow_viz uses): zero flow is white; flow to the right is red, down
yellow, left light blue, up blue-violet (image coordinates: x right, y down). The wheel has 55
colours in six ramps (red->yellow 15, yellow->green 6, green->cyan 4, cyan->blue 11,
blue->magenta 13, magenta->red 6) and is interpolated linearly between them; lengths beyond the
normalisation (only with an explicit max_flow) are darkened to 75%.

`png_bytes` resizes a model-size flow to the frame's size (scaling the vectors with it) and
writes it as an RGB PNG (evaluation's config.eval.save_flow).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# (length, start RGB, end RGB) of each ramp of the wheel.
RAMPS = (
    (15, (255, 0, 0), (255, 255, 0)),
    (6, (255, 255, 0), (0, 255, 0)),
    (4, (0, 255, 0), (0, 255, 255)),
    (11, (0, 255, 255), (0, 0, 255)),
    (13, (0, 0, 255), (255, 0, 255)),
    (6, (255, 0, 255), (255, 0, 0)),
)


def color_wheel() -> np.ndarray:
    """float64 [55, 3] RGB in [0, 255]: ramp i runs from its start colour towards its end colour
    in `length` steps (floor(255 * j / length) per moving channel, as the Middlebury code)."""
    rows = []
    for length, start, end in RAMPS:
        j = np.arange(length)[:, None]
        a, b = np.asarray(start, np.float64), np.asarray(end, np.float64)
        rows.append(a + np.floor(255.0 * j / length) * np.sign(b - a))
    return np.concatenate(rows)


def flow_to_color(flow: np.ndarray, max_flow: float | None = None) -> np.ndarray:
    """Colour-codes a flow field.

    Args:
      flow: float [H, W, 2] (x, y) displacements; non-finite values count as zero.
      max_flow: length that gets full saturation; None = the largest length in `flow`.

    Returns:
      uint8 [H, W, 3] RGB.
    """
    flow = np.asarray(flow, np.float64)
    if flow.ndim != 3 or flow.shape[-1] != 2:
        raise ValueError(f"flow must be [H, W, 2], got shape {flow.shape}")
    flow = np.where(np.isfinite(flow), flow, 0.0)
    u, v = flow[..., 0], flow[..., 1]
    rad = np.hypot(u, v)
    norm = float(rad.max()) if max_flow is None else float(max_flow)
    eps = 1e-5
    u, v, rad = u / (norm + eps), v / (norm + eps), rad / (norm + eps)
    wheel = color_wheel() / 255.0
    n = len(wheel)
    angle = np.arctan2(-v, -u) / np.pi  # in [-1, 1]; -1 / 1 = flow to the right (red)
    pos = (angle + 1.0) / 2.0 * (n - 1)
    k0 = np.floor(pos).astype(np.int64)
    k1 = (k0 + 1) % n
    frac = (pos - k0)[..., None]
    col = (1.0 - frac) * wheel[k0] + frac * wheel[k1]
    inside = (rad <= 1.0)[..., None]
    col = np.where(inside, 1.0 - rad[..., None] * (1.0 - col), col * 0.75)
    return np.floor(255.0 * col).astype(np.uint8)


def resize_flow(flow: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float32 [h, w, 2] -> [H, W, 2] bilinear, vectors scaled by W/w and H/h."""
    h, w = flow.shape[:2]
    if (h, w) == tuple(size):
        return np.asarray(flow, np.float32)
    hh, ww = size
    channels = [
        np.asarray(
            Image.fromarray(np.asarray(flow[..., c], np.float32)).resize((ww, hh), Image.BILINEAR)
        )
        for c in range(2)
    ]
    return np.stack([channels[0] * (ww / w), channels[1] * (hh / h)], axis=-1)


def png_bytes(flow: np.ndarray, size: tuple[int, int] | None = None) -> bytes:
    """Flow float [h, w, 2] (resized to `size` = (H, W) first) as the bytes of an RGB PNG."""
    if size is not None:
        flow = resize_flow(flow, size)
    out = io.BytesIO()
    Image.fromarray(flow_to_color(flow)).save(out, format="PNG")
    return out.getvalue()
