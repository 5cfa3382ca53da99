"""Shapes, procedural textures and compositing for the synthetic VOS videos (pure numpy + PIL).

Shapes are implicit functions in object-local coordinates (u, v), all inside the unit disc, so an
object of pixel radius r centred at (cx, cy) covers at most the box [cx - r, cx + r] x [cy - r, cy + r].
Textures are sampled with the same local coordinates, so they move, scale and rotate with the object.
"""

import colorsys

import numpy as np
from PIL import Image


def _polar(u, v):
    return np.hypot(u, v), np.arctan2(v, u)


def _polygon(u, v, sides):
    rho, theta = _polar(u, v)
    sector = 2 * np.pi / sides
    alpha = np.mod(theta + sector / 2, sector) - sector / 2
    return rho * np.cos(alpha) <= np.cos(np.pi / sides)


def _ellipse(u, v, p):
    return u * u + (v / p["aspect"]) ** 2 <= 1.0


def _rectangle(u, v, p):
    return (np.abs(u) <= 0.95) & (np.abs(v) <= 0.95 * p["aspect"])


def _triangle(u, v, p):
    return _polygon(u, v, 3)


def _hexagon(u, v, p):
    return _polygon(u, v, 6)


def _star(u, v, p):
    rho, theta = _polar(u, v)
    sector = 2 * np.pi / p["points"]
    alpha = np.abs(np.mod(theta, sector) - sector / 2) / (sector / 2)  # 0 at a tip, 1 between
    return rho <= 1.0 - (1.0 - p["inner"]) * (1.0 - alpha)


def _blob(u, v, p):
    rho, theta = _polar(u, v)
    radius = 0.7 + sum(
        a * np.cos(k * theta + phase) for k, (a, phase) in enumerate(p["harmonics"], start=2)
    )
    return rho <= radius


def _ring(u, v, p):
    rho = np.hypot(u, v)
    return (rho <= 1.0) & (rho >= p["inner"])


def _cross(u, v, p):
    w = p["arm"]
    return ((np.abs(u) <= w) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= w) & (np.abs(u) <= 0.95))


def _crescent(u, v, p):
    return (u * u + v * v <= 1.0) & ((u - p["offset"]) ** 2 + v * v > p["cut"] ** 2)


SHAPES = {
    "ellipse": _ellipse,
    "rectangle": _rectangle,
    "triangle": _triangle,
    "star": _star,
    "blob": _blob,
    "hexagon": _hexagon,
    "ring": _ring,
    "cross": _cross,
    "crescent": _crescent,
}


def sample_shape_params(rng: np.random.Generator, shape: str) -> dict:
    """Random per-object parameters of a shape (aspect ratio, star points, ring hole, ...)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; known: {sorted(SHAPES)}")
    return {
        "aspect": float(rng.uniform(0.45, 1.0)),
        "points": int(rng.integers(4, 7)),
        "inner": float(rng.uniform(0.4, 0.6)),
        "harmonics": [
            (float(rng.uniform(0.0, 0.1)), float(rng.uniform(0, 2 * np.pi))) for _ in range(3)
        ],
        "arm": float(rng.uniform(0.25, 0.4)),
        "offset": float(rng.uniform(0.35, 0.6)),
        "cut": float(rng.uniform(0.65, 0.85)),
    }


def hsv_colour(h: float, s: float, v: float) -> np.ndarray:
    """float32[3] RGB in [0, 255] from HSV in [0, 1] (hue wraps)."""
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32) * 255.0


def smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """float32[height, width] in [0, 1]: random values on a `cell`-pixel grid, bilinearly upsampled."""
    gh, gw = height // cell + 2, width // cell + 2
    grid = Image.fromarray(rng.random((gh, gw), dtype=np.float32))
    big = np.asarray(grid.resize((gw * cell, gh * cell), Image.BILINEAR), np.float32)
    return big[:height, :width]


def make_texture(
    rng: np.random.Generator,
    height: int,
    width: int,
    colours: tuple[np.ndarray, np.ndarray],
    kind: str,
    period: float,
    grain: float = 6.0,
) -> np.ndarray:
    """Procedural two-colour texture.

    Args:
      rng: random generator.
      height, width: texture size in pixels.
      colours: two float32[3] RGB colours blended by the pattern.
      kind: 'stripes', 'checker', 'dots' or 'noise'.
      period: pattern period in pixels.
      grain: amplitude of per-pixel noise (grey levels).

    Returns:
      uint8[height, width, 3].
    """
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    angle = rng.uniform(0, np.pi)
    a = (xs * np.cos(angle) + ys * np.sin(angle)) * (2 * np.pi / period)
    b = (-xs * np.sin(angle) + ys * np.cos(angle)) * (2 * np.pi / period)
    if kind == "stripes":
        pattern = 0.5 + 0.5 * np.cos(a)
    elif kind == "checker":
        pattern = (np.sin(a) * np.sin(b) > 0).astype(np.float32)
    elif kind == "dots":
        pattern = (np.cos(a) * np.cos(b) > 0.3).astype(np.float32)
    elif kind == "noise":
        pattern = smooth_noise(rng, height, width, max(2, int(period / 2)))
    else:
        raise ValueError(f"unknown texture kind {kind!r}")
    mix = 0.75 * pattern + 0.25 * smooth_noise(rng, height, width, max(2, int(period)))
    image = colours[0] + (colours[1] - colours[0]) * mix[..., None]
    image += grain * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def render_object(
    frame: np.ndarray,
    labels: np.ndarray,
    label: int,
    shape: str,
    params: dict,
    texture: np.ndarray,
    center: tuple[float, float],
    radius: float,
    angle: float,
) -> None:
    """Draws one object in place over `frame` uint8[H, W, 3] and writes `label` into uint8[H, W].

    Args:
      center: (x, y) in pixels; radius: half-size in pixels; angle: rotation in radians.
      texture: uint8[S, S, 3] spanning local coordinates [-1, 1]^2.
    """
    height, width = labels.shape
    cx, cy = center
    x0, x1 = max(0, int(np.floor(cx - radius))), min(width, int(np.ceil(cx + radius)) + 1)
    y0, y1 = max(0, int(np.floor(cy - radius))), min(height, int(np.ceil(cy + radius)) + 1)
    if x0 >= x1 or y0 >= y1 or radius <= 0:
        return
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] + np.float32(0.5 - cx)
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] + np.float32(0.5 - cy)
    cos, sin = np.float32(np.cos(angle) / radius), np.float32(np.sin(angle) / radius)
    u = cos * dx + sin * dy
    v = cos * dy - sin * dx
    mask = SHAPES[shape](u, v, params)
    size = texture.shape[0]
    tu = np.clip(((u + 1) * 0.5 * (size - 1)).astype(np.int32), 0, size - 1)
    tv = np.clip(((v + 1) * 0.5 * (size - 1)).astype(np.int32), 0, size - 1)
    frame[y0:y1, x0:x1][mask] = texture[tv[mask], tu[mask]]
    labels[y0:y1, x0:x1][mask] = label
