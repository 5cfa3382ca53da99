"""A model with its weights that segments one video at a time (`Segmenter`, the Python API's
object: `api.Segmenter`), loaded from an orbax checkpoint or an authors' .pth and checked against
the configured model; for streaming families it also hands out a video's tracking state
(`start`, `tracker`, `load_tracker`: tracker.Tracker). `own_video` (the segment command) builds
on it.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Mapping
from typing import Any

import jax
import numpy as np

from rnn_vos_jax import models
from rnn_vos_jax.inference import predictors, slots
from rnn_vos_jax.inference import tracker as tracker_lib
from rnn_vos_jax.runtime import checkpoints, config_files, storage
from rnn_vos_jax.weights import torch_checkpoints

TORCH_SUFFIXES = (".pth", ".pt")


class Segmenter:
    """A model with its weights, segmenting one video at a time.

    Args:
      model: the Flax model of a registered family (models/family.py).
      variables: its {'params'[, 'batch_stats']}.
      image_size: (H, W) the model runs at (multiples of 32).
      **options: predictor settings (predictors.predictor_for: clip_window, clip_overlap);
        from_checkpoint takes them from config.eval.
    """

    def __init__(self, model: Any, variables: Mapping[str, Any], image_size: Any, **options):
        self.model = model
        self.variables = jax.device_put({k: v for k, v in variables.items() if v})
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.predictor = predictors.predictor_for(model, self.variables, self.image_size, **options)
        self.source = None  # the checkpoint path, when built by from_checkpoint
        self.config = None  # the full config, when built by from_checkpoint

    @classmethod
    def from_checkpoint(cls, path: str, config: Any) -> Segmenter:
        """Builds the configured model and loads its weights.

        Args:
          path: orbax variables/workdir/step directory, or an authors' .pth/.pt file.
          config: full config (ConfigDict with `model` and `data.image_size`) or a config file
            spec such as 'configs/hs2s.py:demo'.

        Raises:
          FileNotFoundError: path or config file missing.
          ValueError / ConversionError: weights that do not fit the configured model.
        """
        if isinstance(config, str):
            config = config_files.load_config(config)
        model = models.build(config.model)
        if storage.isfile(path) and path.endswith(TORCH_SUFFIXES):
            with storage.local_file(path) as local:  # torch.load reads a real file
                variables = torch_checkpoints.convert_checkpoint(
                    local, config.model, config.data.image_size
                )
        elif storage.isfile(path):
            raise ValueError(
                f"{path}: expected an orbax checkpoint directory or a PyTorch {TORCH_SUFFIXES} file"
            )
        else:
            variables = checkpoints.load_variables(path)
            models.check_variables(variables, model, config.data.image_size, path)
        segmenter = cls(
            model, variables, config.data.image_size, **predictors.predictor_options(config)
        )
        segmenter.source, segmenter.config = path, config
        return segmenter

    @staticmethod
    def object_ids(first_mask: np.ndarray) -> list[int]:
        """The object ids `segment` reports, in its order: [1] for a boolean mask, else the sorted
        nonzero ids of an integer id mask."""
        first_mask = np.asarray(first_mask)
        if first_mask.dtype == bool:
            return [1]
        return [int(i) for i in np.unique(first_mask) if i != 0]

    def tracker(self, reserve=()) -> tracker_lib.Tracker:
        """An empty tracking state for one video (objects join with `step(frame, add=...)`).

        Args:
          reserve: ids of objects known in advance (they share one batch from the start).

        Raises:
          ValueError: naming the family when it is offline (whole-clip, e.g. Bi-HS2S).
        """
        tracker_lib.check_streaming(self.model)
        return tracker_lib.Tracker(self.predictor, reserve, source=self.source, config=self.config)

    def start(self, frame: np.ndarray, masks) -> tracker_lib.Tracker:
        """A tracking state started on `frame` with its objects.

        Args:
          frame: uint8[H, W, 3] RGB, the video's first frame.
          masks: bool[H, W] (object 1), integer[H, W] object ids (0 = background), or
            {object id: bool[H, W]}.

        Returns:
          The Tracker after this frame (`probabilities`: the given masks as 0/1, objects in
          ascending id order); `step` it with the next frames.

        Raises:
          ValueError: an offline family (named), or masks without an object / of another size.
        """
        if not isinstance(masks, dict):
            mask = np.asarray(masks)
            ids = self.object_ids(mask) if mask.dtype == bool or mask.any() else []
            masks = {i: (mask if mask.dtype == bool else mask == i) for i in ids}
        if not masks:
            raise ValueError("masks hold no object: mark at least one object pixel on the frame")
        state = self.tracker(reserve=list(masks))
        state.step(frame, add=masks)
        return state

    def load_tracker(self, folder: str) -> tracker_lib.Tracker:
        """A tracking state saved by `Tracker.save`, to step on with this model.

        Raises:
          FileNotFoundError: no state in `folder`.
          ValueError: an offline family, or a state saved by another model or checkpoint (what
            differs is named).
        """
        tracker_lib.check_streaming(self.model)
        return tracker_lib.Tracker.load(
            folder, self.predictor, source=self.source, config=self.config
        )

    def segment(self, frames: np.ndarray, first_mask: np.ndarray) -> np.ndarray:
        """Per-frame foreground probabilities of the objects marked on frame 0.

        Args:
          frames: uint8[T, H, W, 3] RGB video, T >= 1, any H, W.
          first_mask: bool[H, W] (one object) or integer[H, W] object ids (0 = background) on
            frame 0.

        Returns:
          float32[T, H, W] for a boolean mask, float32[T, K, H, W] for an id mask (K objects in
          ascending id order, see `object_ids`). Frame 0 holds the given mask(s) as 0/1.

        Raises:
          ValueError: wrong shapes, dtypes, or a first mask without any object.
        """
        frames = np.asarray(frames)
        mask = np.asarray(first_mask)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be uint8[T,H,W,3], got {frames.dtype}{frames.shape}")
        if frames.shape[0] < 1:
            raise ValueError("frames is empty (T = 0)")
        if mask.shape != frames.shape[1:3]:
            raise ValueError(
                f"first_mask must be [H,W] = {frames.shape[1:3]} like the frames, got {mask.shape}"
            )
        if mask.dtype != bool and not np.issubdtype(mask.dtype, np.integer):
            raise ValueError(
                f"first_mask must be bool (one object) or integer object ids, got {mask.dtype}"
            )
        if mask.dtype != bool and mask.min() < 0:
            raise ValueError(f"first_mask ids must be >= 0, got {int(mask.min())}")
        ids = self.object_ids(mask)
        if not ids or not mask.any():
            raise ValueError("first_mask is empty: mark at least one object pixel on frame 0")
        first = {i: (0, mask if mask.dtype == bool else mask == i) for i in ids}
        probs = np.stack(list(self.predictor.predict(frames, first)))
        return probs[:, 0] if mask.dtype == bool else probs

    def segment_many(
        self, videos: Iterable[tuple[Hashable, Any, Mapping]], object_slots: int
    ) -> Iterator[slots.SlotFrame]:
        """Several videos at once: the objects of several videos stepped together in
        `object_slots` slots, a video starting when its objects fit (inference/slots.py:
        continuous batching; what config.eval.object_slots does in evaluation). Streaming
        families only.

        Args:
          videos: (key, frames uint8[T, H, W, 3] or T frames uint8[H, W, 3], {object id:
            (its first frame, bool[H, W] mask there)}) per video, read as its turn comes.
          object_slots: S, at least the largest number of objects in a video.

        Yields:
          slots.SlotFrame for each frame of each video as it is done (`key`, frame `index`,
          `last`, `probs` float32[K, H, W] in ascending id order, as `segment` gives them to
          within float rounding of the batch size); frames of one video come in order.

        Raises:
          ValueError: an offline family (named), or a video with more objects than slots.
        """
        tracker_lib.check_streaming(self.model)
        runner = slots.SlotRunner(self.predictor, object_slots)
        for step in runner.run(slots.SlotVideo(*video) for video in videos):
            yield from step
