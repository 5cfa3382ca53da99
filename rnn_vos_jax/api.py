"""Python API: segment objects through a video from their masks where they first appear.

    from rnn_vos_jax import api
    seg = api.Segmenter.from_checkpoint("converted/hs2s", "configs/hs2s.py")
    probs = seg.segment(frames, first_mask)   # frames uint8[T,H,W,3]
    # bool first_mask[H,W]  -> probs float32[T,H,W]
    # int  first_mask[H,W]  -> probs float32[T,K,H,W], objects = seg.object_ids(first_mask)

    # Frame by frame, with a state you can hold (streaming families):
    tracker = seg.start(frame0, first_mask)   # bool or int ids [H,W], or {id: bool[H,W]}
    probs = tracker.step(frame)               # float32[K,H,W], K = len(tracker.object_ids)
    probs = tracker.step(frame, add={3: mask}, correct={1: mask})   # new object, correction
    tracker.remove(3); tracker.save("state/"); tracker = seg.load_tracker("state/")
    ids = api.merge_probabilities(probs, tracker.object_ids)        # uint8[H,W] object ids

    # Many videos, their objects stepped together in 8 slots (continuous batching):
    for f in seg.segment_many([(name, frames, {1: (0, mask)}), ...], object_slots=8):
        f.key, f.index, f.probs                # a frame of one video: float32[K,H,W]

    # A video file, frame folder or live source, streamed, to palette PNGs and an overlay
    # (resumes a stopped run into the same folder; later masks of an object are corrections):
    result = api.segment_video("configs/hs2s.py", "converted/hs2s", "IN.mp4", "FIRST.png", "out")
    result.pngs, result.overlay  # out/Annotations/00000.png ..., out/overlay.mp4

Checkpoints: an orbax directory (a converted checkpoint, a training workdir or one of its step
folders) or an authors'-format PyTorch .pth (converted in memory; needs torch). Frames are
resized to `config.data.image_size` for the model and the probabilities back to the input size;
the per-video predictor is the one the model's family asks for (streaming, or whole-clip for
offline models). `api.load_config("configs/hs2s.py:demo")` loads a config file by path.
"""

from __future__ import annotations

from typing import Any

from rnn_vos_jax.inference import object_merge, own_video, segmenter, tracker
from rnn_vos_jax.runtime import config_files

Segmenter = segmenter.Segmenter  # the API's object: a model with its weights (its docstring)
Tracker = tracker.Tracker  # one video's tracking state: Segmenter.start / tracker / load_tracker
merge_probabilities = object_merge.merge_probabilities  # [K,H,W] -> ids [H,W], as evaluation
load_config = config_files.load_config


def segment_video(
    config: Any,
    checkpoint: Any,
    video: str,
    masks: str,
    output: str,
    overlay: str = "mp4",
    **kwargs: Any,
) -> own_video.SegmentResult:
    """Segments your own video: `python -m rnn_vos_jax.segment` as one call.

    Args:
      config: config (ConfigDict) or file spec such as 'configs/hs2s.py'; None if `checkpoint`
        is a Segmenter.
      checkpoint: orbax directory or authors' .pth path, or a Segmenter (keeps its compilation).
      video: a video file OpenCV reads (mp4, ...), a folder of JPEG/PNG frames, '-'
        (YUV4MPEG2 on stdin), an rtsp:// or http:// URL, or a camera number.
      masks: a PNG of the first frame's objects, or a folder of PNGs named like the frames
        (a later PNG of a tracked object is a correction).
      output: folder for Annotations/FRAME.png, overlay.mp4|gif and segment.json; local or a
        bucket URL (gs://..., runtime.storage), as may be `video`, `masks` and `checkpoint`.
      overlay: 'mp4', 'gif' or 'none'.
      **kwargs: overwrite=False, fps=None, show_progress=True, state_every=None,
        max_frames=None.

    Returns:
      The written paths (annotations, pngs, overlay, record), object ids and their first frames.
    """
    return own_video.segment_video(config, checkpoint, video, masks, output, overlay, **kwargs)
