"""The random scene of one synthetic video: object tracks (shape, texture, per-frame centre,
radius and angle, start frame, depth) and the panning background (generate.py renders them).

`VideoSpec` holds what one video is drawn from; the draws happen in a fixed order, so a dataset
keeps its bytes for a seed.
"""

import dataclasses

import numpy as np

from rnn_vos_jax.data.synthetic import render


@dataclasses.dataclass(frozen=True)
class VideoSpec:
    """What one video is drawn from.

    Attributes:
      height, width: frame size.
      length: sampled frames (the dataset's frames).
      categories: shape categories objects are drawn from.
      first_category: object 0's category, or None to draw it too.
      num_objects: inclusive (min, max) objects.
      contrast: a CONTRASTS key.
      substeps: rendered frames per sampled one (valid_all_frames renders frame_step of them).
    """

    height: int
    width: int
    length: int
    categories: tuple
    first_category: str | None
    num_objects: tuple
    contrast: str = "natural"
    substeps: int = 1


_TEXTURE_SIZE = 128
_TEXTURE_KINDS = ("stripes", "checker", "dots", "noise")
# Brightness ranges (HSV value) per contrast level: objects' main colour, the factor of their
# second texture colour, the background's base value and its second colour's offset. 'natural'
# overlaps objects' dark stripes with the background; 'high' keeps every object pixel brighter
# than every background pixel (the CPU demo, where a from-scratch model must learn appearance
# within minutes).
CONTRASTS = {
    "natural": {"object": (0.65, 1.0), "shade": 0.5, "background": (0.3, 0.6), "step": 0.15},
    "high": {"object": (0.8, 1.0), "shade": 0.85, "background": (0.1, 0.3), "step": 0.08},
}


def _outside(rng, height, width, radius):
    """A point beyond a random frame edge, so that an object of `radius` there is invisible."""
    side = int(rng.integers(4))
    along = rng.uniform(0.1, 0.9)
    gap = 1.1 * radius
    return [
        (along * width, -gap),
        (along * width, height + gap),
        (-gap, along * height),
        (width + gap, along * height),
    ][side]


def _inside(rng, height, width):
    return np.array([rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height])


def _times(length, substeps):
    """Times of the rendered frames in units of sampled frames: [length * substeps] floats."""
    return np.arange(length * substeps, dtype=np.float64) / substeps


def _late_start(rng, length, substeps):
    """First rendered frame of a 'late' object: half way between two sampled frames."""
    start = int(rng.integers(1, max(2, length // 2)))
    return start * substeps - substeps // 2


def sample_objects(rng, spec: VideoSpec) -> list[dict]:
    """Object tracks: shape, texture, per-frame centre/radius/angle, start frame and depth.

    Motions: 'stay' (wanders inside), 'exit' (ends outside), 'enter' (starts outside), 'late'
    (appears at a frame > 0); half of the later objects cross object 0's path half way.
    Tracks have length * substeps entries, `substeps` per sampled frame (the same random draws
    for any substeps; a late object starts half way between two sampled frames).
    """
    height, width, length, substeps = spec.height, spec.width, spec.length, spec.substeps
    categories, first_category = spec.categories, spec.first_category
    count = int(rng.integers(spec.num_objects[0], spec.num_objects[1] + 1))
    hues = rng.uniform() + np.arange(count) / count + rng.uniform(-0.04, 0.04, count)
    times = _times(length, substeps)
    progress = times / max(1, length - 1)
    levels = CONTRASTS[spec.contrast]
    objects = []
    for i in range(count):
        category = first_category if (i == 0 and first_category) else str(rng.choice(categories))
        radius0 = rng.uniform(0.12, 0.3) * min(height, width)
        motion = "stay" if i == 0 else str(rng.choice(["stay", "exit", "enter", "late"]))
        if i == 0 and rng.random() < 0.3:
            motion = "exit"
        out = np.array(_outside(rng, height, width, radius0)) if motion == "enter" else None
        start = out if out is not None else _inside(rng, height, width)
        out = np.array(_outside(rng, height, width, radius0)) if motion == "exit" else None
        end = out if out is not None else _inside(rng, height, width)
        if i > 0 and rng.random() < 0.5:  # cross object 0 half way: guarantees occlusions
            end = 2 * objects[0]["path"][(length // 2) * substeps] - start
        wobble = rng.uniform(0, 0.03) * min(height, width)
        phase, freq = rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 0.4)
        path = start + (end - start) * progress[:, None]
        path += wobble * np.stack([np.sin(freq * times + phase), np.cos(freq * times + phase)], 1)
        growth = rng.uniform(0.7, 1.4) ** progress
        pulse = 1 + 0.06 * np.sin(rng.uniform(0.1, 0.5) * times + rng.uniform(0, 2 * np.pi))
        saturation, value = rng.uniform(0.65, 1.0), rng.uniform(*levels["object"])
        colours = (
            render.hsv_colour(hues[i], saturation, value),
            render.hsv_colour(
                hues[i] + rng.uniform(-0.08, 0.08), saturation, value * levels["shade"]
            ),
        )
        kind = str(rng.choice(_TEXTURE_KINDS))
        period = rng.uniform(10, 30)
        objects.append(
            {
                "category": category,
                "params": render.sample_shape_params(rng, category),
                "texture": render.make_texture(
                    rng, _TEXTURE_SIZE, _TEXTURE_SIZE, colours, kind, period
                ),
                "path": path,
                "radius": radius0 * growth * pulse,
                "angle": rng.uniform(0, 2 * np.pi) + rng.uniform(-0.08, 0.08) * times,
                # drawn here, in this order, so that datasets keep their bytes
                "start": _late_start(rng, length, substeps) if motion == "late" else 0,
                "depth": rng.random(),
            }
        )
    return objects


def background(rng, spec: VideoSpec) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """(texture uint8[H + 2p, W + 2p, 3], per rendered frame its (x, y) crop offset)."""
    height, width, length, substeps = spec.height, spec.width, spec.length, spec.substeps
    levels = CONTRASTS[spec.contrast]
    pad = int(0.15 * max(height, width))
    hue, sat, val = rng.uniform(), rng.uniform(0.05, 0.3), rng.uniform(*levels["background"])
    step = levels["step"]
    colours = (
        render.hsv_colour(hue, sat, val),
        render.hsv_colour(hue + 0.05, sat, val + rng.choice([-step, step])),
    )
    period = rng.uniform(20, 80) * min(height, width) / 480
    kind = str(rng.choice(_TEXTURE_KINDS))
    texture = render.make_texture(rng, height + 2 * pad, width + 2 * pad, colours, kind, period, 8)
    start, end = rng.uniform(0, 2 * pad, 2), rng.uniform(0, 2 * pad, 2)
    offsets = [start + (end - start) * t / max(1, length - 1) for t in _times(length, substeps)]
    # Frames after the last sampled one extrapolate the pan: keep them inside the texture.
    offsets = [np.clip(o, 0, 2 * pad) for o in offsets]
    return texture, [(int(ox + 0.5), int(oy + 0.5)) for ox, oy in offsets]
