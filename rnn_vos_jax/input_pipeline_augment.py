"""Clip augmentation for the training pipeline (TensorFlow ops): flip + affine, decode, resize.

One set of parameters is drawn per clip and applied to every frame and mask of the clip, as in
the authors' dataloader (horizontal flip first, then a torchvision-style affine about the image
centre: rotation, scale, x-shear, translation).

Geometry is defined in the ORIGINAL frame's continuous pixel coordinates (origin at the top-left
corner, pixel centres at +0.5), where the authors apply it before resizing. We resample once or
twice at the target size instead: for an output pixel we compose resize^-1 . affine^-1 . flip^-1
and sample the decoded frame there. This is the same geometry as "affine at full size, then
resize" (the anisotropic resize is conjugated into the matrix) at a fraction of the cost. Masks
are sampled once with nearest neighbour straight from the full-size annotation, which is what a
nearest resize after a nearest affine does up to ties.

Units (`affine_units`):
  'pixels_degrees' (default): angle U(-rotation, rotation) degrees, scale U(scale[0], scale[1]),
      x-shear U(-shear, shear) degrees, translation U(-translation, translation) * width / height
      pixels, drawn independently for x and y.
  'authors': the authors' integer draws: angle U{-rotation..rotation-1} degrees, scale
      U{100*scale[0]..100*scale[1]-1}/100, and translation U{-100t..100t-1}/100 and shear
      U{-shear..shear-1}/100 passed on as pixels / degrees (so they are nearly no-ops), with one
      translation value for both axes.
Positive angles rotate counter-clockwise on screen; positive shear moves lower rows to the right.
"""

import math

import tensorflow as tf

NUM_UNIFORMS = 7  # flip, angle, scale, shear, tx, ty, (spare for the clip sampler)

_INTERP = {"bilinear": "BILINEAR", "nearest": "NEAREST"}


def sample_affine(u, orig_hw, aug):
    """Affine parameters of one clip from uniforms.

    Args:
        u: float32[>=6] uniforms in [0, 1): flip, angle, scale, shear, tx, ty.
        orig_hw: (height, width) of the original frames (numbers or scalar tensors).
        aug: the `config.data` section (keys hflip_prob, rotation, scale, shear, translation,
            affine_units, augment).

    Returns:
        dict of float32 scalars: flip (0/1), angle and shear (degrees), scale, tx and ty (pixels
        of the original frame).
    """
    h0 = tf.cast(orig_hw[0], tf.float32)
    w0 = tf.cast(orig_hw[1], tf.float32)
    if not aug.augment:
        zero = tf.constant(0.0)
        return {
            "flip": zero,
            "angle": zero,
            "scale": tf.constant(1.0),
            "shear": zero,
            "tx": zero,
            "ty": zero,
        }
    flip = tf.cast(u[0] < aug.hflip_prob, tf.float32)
    lo, hi = float(aug.scale[0]), float(aug.scale[1])
    rot, shear, trans = float(aug.rotation), float(aug.shear), float(aug.translation)
    if aug.affine_units == "pixels_degrees":
        angle = (2.0 * u[1] - 1.0) * rot
        scale = lo + u[2] * (hi - lo)
        shear_deg = (2.0 * u[3] - 1.0) * shear
        tx = (2.0 * u[4] - 1.0) * trans * w0
        ty = (2.0 * u[5] - 1.0) * trans * h0
    elif aug.affine_units == "authors":

        def integer(v, low, high):  # U{low..high-1}, like random.choice(range(low, high))
            return tf.floor(low + v * (high - low))

        angle = integer(u[1], -round(rot), round(rot))
        scale = integer(u[2], round(100 * lo), round(100 * hi)) / 100.0
        tx = ty = integer(u[4], -round(100 * trans), round(100 * trans)) / 100.0
        shear_deg = integer(u[3], -round(shear), round(shear)) / 100.0
    else:
        raise ValueError(
            f"config.data.affine_units must be 'pixels_degrees' or 'authors', got "
            f"{aug.affine_units!r}"
        )
    return {"flip": flip, "angle": angle, "scale": scale, "shear": shear_deg, "tx": tx, "ty": ty}


def forward_matrix(params, orig_hw):
    """3x3 float32 map of original continuous coordinates (x, y, 1): flip, then the affine."""
    h0 = tf.cast(orig_hw[0], tf.float32)
    w0 = tf.cast(orig_hw[1], tf.float32)
    one, zero = tf.constant(1.0), tf.constant(0.0)
    f = params["flip"]
    flip = tf.stack([[1.0 - 2.0 * f, zero, f * w0], [zero, one, zero], [zero, zero, one]])
    theta = params["angle"] * (math.pi / 180.0)
    cos, sin = tf.cos(theta), tf.sin(theta)
    tan = tf.tan(params["shear"] * (math.pi / 180.0))
    s = params["scale"]
    # rotation [[cos, sin], [-sin, cos]] (counter-clockwise with y pointing down) @ x-shear
    m = tf.stack([[s * cos, s * (cos * tan + sin)], [-s * sin, s * (cos - sin * tan)]])
    cx, cy = w0 / 2.0, h0 / 2.0
    centre = tf.stack([cx, cy])
    offset = centre + tf.stack([params["tx"], params["ty"]]) - tf.linalg.matvec(m, centre)
    affine = tf.concat([tf.concat([m, offset[:, None]], 1), [[zero, zero, one]]], 0)
    return affine @ flip


def sampling_transform(forward, orig_hw, in_hw, out_hw):
    """TF projective-transform vector that samples an input image to produce the output.

    Args:
        forward: float32[3, 3] map of original continuous coordinates (see forward_matrix).
        orig_hw: original frame size; the input and output images both cover its full extent.
        in_hw: size of the image being sampled (e.g. a downscaled decode or the full frame).
        out_hw: size of the output image.

    Returns:
        float32[1, 8] transform mapping output pixel indices to input pixel indices.
    """

    def scaling(hw):
        sy = tf.cast(hw[0], tf.float32) / tf.cast(orig_hw[0], tf.float32)
        sx = tf.cast(hw[1], tf.float32) / tf.cast(orig_hw[1], tf.float32)
        return tf.stack([[sx, 0.0, 0.0], [0.0, sy, 0.0], [0.0, 0.0, 1.0]])

    half = tf.constant([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    unhalf = tf.constant([[1.0, 0.0, -0.5], [0.0, 1.0, -0.5], [0.0, 0.0, 1.0]])
    mat = unhalf @ scaling(in_hw) @ tf.linalg.inv(forward) @ tf.linalg.inv(scaling(out_hw)) @ half
    mat = mat / mat[2, 2]
    return tf.reshape(mat, [9])[:8][None]


def warp(images, transform, out_hw, interpolation):
    """Samples images [N, H, W, C] (uint8 or float32) with one transform; zeros outside."""
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transform,
        output_shape=tf.cast(tf.stack(out_hw), tf.int32),
        fill_value=0.0,
        interpolation=_INTERP[interpolation],
        fill_mode="CONSTANT",
    )


def decode_jpegs(jpegs, orig_hw, out_hw, downscale):
    """Decodes frames, letting libjpeg downscale by 2/4/8 while staying >= the output size.

    Args:
        jpegs: string[N] JPEG bytes of frames of one video.
        orig_hw: (H0, W0) int scalars, the frames' size.
        out_hw: (H, W) python ints, the size the frames will be resampled to.
        downscale: whether to use DCT-domain downscaling (much cheaper than decoding in full).

    Returns:
        uint8[N, Hd, Wd, 3] with Hd = ceil(H0 / r), Wd = ceil(W0 / r) for the chosen r.
    """
    ratios = (1, 2, 4, 8) if downscale else (1,)
    h0 = tf.cast(orig_hw[0], tf.int64)
    w0 = tf.cast(orig_hw[1], tf.int64)
    fits = [
        tf.logical_and((h0 + r - 1) // r >= out_hw[0], (w0 + r - 1) // r >= out_hw[1])
        for r in ratios
    ]
    index = tf.reduce_sum(tf.cast(tf.stack(fits[1:] + [tf.constant(False)]), tf.int32))

    def branch(r):
        def fn():
            return tf.map_fn(
                lambda b: tf.io.decode_jpeg(b, channels=3, ratio=r, dct_method="INTEGER_ACCURATE"),
                jpegs,
                fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
            )

        return fn

    return tf.switch_case(index, [branch(r) for r in ratios])


def augment_frames(decoded, forward, orig_hw, out_hw, aug):
    """Resizes and warps decoded frames to the output size.

    Args:
        decoded: uint8[N, Hd, Wd, 3] frames covering the original extent.
        forward: float32[3, 3] flip + affine in original coordinates.
        orig_hw: original (H0, W0).
        out_hw: (H, W) python ints.
        aug: `config.data` (keys antialias, frame_resample).

    Returns:
        uint8[N, H, W, 3].
    """
    in_hw = tf.shape(decoded)[1:3]
    images = tf.cast(decoded, tf.float32)
    if aug.antialias:
        # PIL-like antialiased bilinear resize first, then the flip/affine at the output size.
        images = tf.image.resize(images, out_hw, method="bilinear", antialias=True)
        in_hw = out_hw
    transform = sampling_transform(forward, orig_hw, in_hw, out_hw)
    images = warp(images, transform, out_hw, aug.frame_resample)
    return tf.cast(tf.clip_by_value(tf.round(images), 0.0, 255.0), tf.uint8)


def augment_masks(masks, forward, orig_hw, out_hw):
    """Nearest-neighbour resize + flip + affine of binary masks uint8[N, H0, W0, 1] to [N, H, W, 1]."""
    transform = sampling_transform(forward, orig_hw, orig_hw, out_hw)
    return warp(masks, transform, out_hw, "nearest")
