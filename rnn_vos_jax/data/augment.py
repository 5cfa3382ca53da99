"""Training-clip decoding and augmentation (numpy + OpenCV, no TensorFlow).

One set of parameters is drawn per clip and applied to every frame and mask of the clip, as in
the authors' dataloader: horizontal flip first, then a torchvision-style affine about the image
centre (rotation, scale, x-shear, translation).

Geometry is defined in the ORIGINAL frame's continuous pixel coordinates (origin at the top-left
corner, pixel centres at +0.5), where the authors apply it before resizing. We resample at the
output size instead: for an output pixel we compose resize^-1 . affine^-1 . flip^-1 and sample
there. That is the same geometry as "affine at full size, then resize" (the anisotropic resize is
conjugated into the matrix) at a fraction of the cost. Frames are decoded with libjpeg's DCT
downscaling (1/2, 1/4, 1/8 while still >= the output size) and then sampled bilinearly once at the
output size: the residual downscale factor is below 2, where bilinear sampling with half-pixel
centres is close to area averaging (`antialias=True` resizes with area averaging first, like
PIL's antialiased resize in the authors' code, and warps at the output size); masks are sampled
once, nearest neighbour, straight from the full-size annotation (what a nearest resize after a
nearest affine does up to ties). OpenCV is used because its warps are ~20x faster than
tf.raw_ops.ImageProjectiveTransformV3 on CPU and it releases the GIL, so tf.data's parallel map
threads run it concurrently.

Units (`affine_units`):
  'pixels_degrees': angle U(-rotation, rotation) degrees, scale U(scale[0], scale[1]),
      x-shear U(-shear, shear) degrees, translation U(-translation, translation) * width / height
      pixels, drawn independently for x and y.
  'authors' (the shipped configs): the authors' integer draws: angle U{-rotation..rotation-1}
      degrees, scale U{100*scale[0]..100*scale[1]-1}/100, and translation U{-100t..100t-1}/100
      and shear U{-shear..shear-1}/100 passed on as pixels / degrees (so they are nearly
      no-ops), with one translation value for both axes.
Positive angles rotate counter-clockwise on screen; positive shear moves lower rows to the right.
"""

import math

import cv2
import numpy as np

from rnn_vos_jax.data import annotations, distance

NUM_UNIFORMS = 6  # flip, angle, scale, shear, tx, ty
_INTERP = {"bilinear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}
_REDUCED = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


def sample_affine(u, orig_hw, data) -> dict:
    """Flip and affine parameters of one clip.

    Args:
        u: float[6] uniforms in [0, 1): flip, angle, scale, shear, tx, ty.
        orig_hw: (height, width) of the original frames.
        data: `config.data` (keys augment, hflip_prob, rotation, scale, shear, translation,
            affine_units).

    Returns:
        dict of floats: flip (0/1), angle and shear (degrees), scale, tx and ty (pixels of the
        original frame).
    """
    if not data.augment:
        return {"flip": 0.0, "angle": 0.0, "scale": 1.0, "shear": 0.0, "tx": 0.0, "ty": 0.0}
    u = [float(v) for v in u]
    h0, w0 = float(orig_hw[0]), float(orig_hw[1])
    lo, hi = float(data.scale[0]), float(data.scale[1])
    rot, shear, trans = float(data.rotation), float(data.shear), float(data.translation)
    flip = float(u[0] < data.hflip_prob)
    if data.affine_units == "pixels_degrees":
        angle = (2.0 * u[1] - 1.0) * rot
        scale = lo + u[2] * (hi - lo)
        shear_deg = (2.0 * u[3] - 1.0) * shear
        tx = (2.0 * u[4] - 1.0) * trans * w0
        ty = (2.0 * u[5] - 1.0) * trans * h0
    elif data.affine_units == "authors":

        def integer(v, low, high):  # U{low..high-1}, like random.choice(range(low, high))
            return float(math.floor(low + v * (high - low)))

        angle = integer(u[1], -round(rot), round(rot))
        scale = integer(u[2], round(100 * lo), round(100 * hi)) / 100.0
        tx = ty = integer(u[4], -round(100 * trans), round(100 * trans)) / 100.0
        shear_deg = integer(u[3], -round(shear), round(shear)) / 100.0
    else:
        raise ValueError(
            f"config.data.affine_units must be 'pixels_degrees' or 'authors', got "
            f"{data.affine_units!r}"
        )
    return {"flip": flip, "angle": angle, "scale": scale, "shear": shear_deg, "tx": tx, "ty": ty}


def forward_matrix(params: dict, orig_hw) -> np.ndarray:
    """float64[3, 3] map of original continuous coordinates (x, y, 1): flip, then the affine."""
    h0, w0 = float(orig_hw[0]), float(orig_hw[1])
    f = params["flip"]
    flip = np.array([[1.0 - 2.0 * f, 0.0, f * w0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    theta = math.radians(params["angle"])
    cos, sin = math.cos(theta), math.sin(theta)
    tan = math.tan(math.radians(params["shear"]))
    s = params["scale"]
    # rotation [[cos, sin], [-sin, cos]] (counter-clockwise with y pointing down) @ x-shear
    m = np.array([[s * cos, s * (cos * tan + sin)], [-s * sin, s * (cos - sin * tan)]])
    centre = np.array([w0 / 2.0, h0 / 2.0])
    offset = centre + np.array([params["tx"], params["ty"]]) - m @ centre
    affine = np.eye(3)
    affine[:2, :2], affine[:2, 2] = m, offset
    return affine @ flip


def sampling_matrix(forward, orig_hw, in_hw, out_hw) -> np.ndarray:
    """float64[2, 3] map from output pixel indices to input pixel indices (cv2 inverse map).

    Args:
        forward: [3, 3] map of original continuous coordinates (see forward_matrix).
        orig_hw: original frame size; input and output images both cover its full extent.
        in_hw: size of the image being sampled (e.g. a downscaled decode or the full frame).
        out_hw: size of the output image.
    """

    def scaling(hw):
        return np.diag([hw[1] / orig_hw[1], hw[0] / orig_hw[0], 1.0])

    half = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    mat = np.linalg.inv(half) @ scaling(in_hw) @ np.linalg.inv(forward)
    mat = mat @ np.linalg.inv(scaling(out_hw)) @ half
    return mat[:2] / mat[2, 2]


def warp(image: np.ndarray, matrix: np.ndarray, out_hw, interpolation: str) -> np.ndarray:
    """Samples image [H, W] or [H, W, C] (uint8) at matrix @ (x, y, 1); zeros outside."""
    if interpolation == "nearest":
        # OpenCV rounds half to even; break ties upwards like PIL's floor(x + 0.5)
        matrix = matrix + np.array([[0.0, 0.0, 2.0**-9], [0.0, 0.0, 2.0**-9]])
    return cv2.warpAffine(
        image,
        matrix,
        (int(out_hw[1]), int(out_hw[0])),
        flags=_INTERP[interpolation] | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


def decode_frame(jpeg: bytes, orig_hw, out_hw, downscale: bool, where: str = "") -> np.ndarray:
    """Decodes a JPEG to RGB uint8[Hd, Wd, 3], DCT-downscaled by the largest r in 1, 2, 4, 8 with
    ceil(H0 / r) >= H and ceil(W0 / r) >= W when `downscale`."""
    ratio = 1
    if downscale:
        for r in (2, 4, 8):
            if -(-orig_hw[0] // r) >= out_hw[0] and -(-orig_hw[1] // r) >= out_hw[1]:
                ratio = r
    bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), _REDUCED[ratio])
    if bgr is None:
        raise ValueError(f"cannot decode JPEG of {where}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def make_clip(jpegs, pngs, object_id, u, orig_hw, data, num_frames, where=""):
    """Decodes, augments and labels one clip, padded with zeros to num_frames.

    Args:
        jpegs, pngs: sequences of c <= num_frames JPEG / PNG bytes (the clip's frames in order).
        object_id: id of the object whose mask is the target.
        u: float[NUM_UNIFORMS] uniforms for the clip's augmentation.
        orig_hw: (H0, W0) original frame size.
        data: `config.data` (image_size, border, bin_size, frame_resample, antialias,
            jpeg_downscale and the sample_affine keys).
        num_frames: T, the padded clip length.
        where: video name for error messages.

    Returns:
        frames uint8[T, H, W, 3], masks uint8[T, H, W, 1] (0/1), distance int32[T, H, W].
    """
    out_hw = (int(data.image_size[0]), int(data.image_size[1]))
    orig_hw = (int(orig_hw[0]), int(orig_hw[1]))
    forward = forward_matrix(sample_affine(u, orig_hw, data), orig_hw)
    frames = np.zeros((num_frames, *out_hw, 3), np.uint8)
    masks = np.zeros((num_frames, *out_hw, 1), np.uint8)
    dist = np.zeros((num_frames, *out_hw), np.int32)
    mask_matrix = sampling_matrix(forward, orig_hw, orig_hw, out_hw)
    frame_matrix = None
    for t, (jpeg, png) in enumerate(zip(jpegs, pngs, strict=True)):
        image = decode_frame(jpeg, orig_hw, out_hw, data.jpeg_downscale, where)
        if frame_matrix is None:
            in_hw = out_hw if data.antialias else image.shape[:2]
            frame_matrix = sampling_matrix(forward, orig_hw, in_hw, out_hw)
        if data.antialias:
            image = cv2.resize(image, out_hw[::-1], interpolation=cv2.INTER_AREA)
        frames[t] = warp(image, frame_matrix, out_hw, data.frame_resample)
        if not png:
            raise ValueError(f"{where}: a frame listed for object {object_id} has no PNG")
        ids = annotations.decode(png, shape=orig_hw, name=f"PNG of {where}")
        masks[t, ..., 0] = warp((ids == object_id).view(np.uint8), mask_matrix, out_hw, "nearest")
        dist[t] = distance.distance_classes(masks[t, ..., 0], data.border, data.bin_size)
    return frames, masks, dist
