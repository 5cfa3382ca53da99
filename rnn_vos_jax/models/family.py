"""The model-family contract: everything generic code may know about a family.

A family module (models/<family>.py) defines its Flax model and one `Family` record, registered
by name in models/__init__.py. Generic code (training step, evaluation, inference, weight
conversion, backbone initialisation, the API, benchmarks) reads only this record and the model
methods below; it never names a family.

The model (`Family.model`, a Flax module whose fields are the keys of `config.model` other than
`name` and `Family.config_only_keys`) has:

  __call__(frames, masks, *, sample_prob=0.0, train=False) -> outputs
      frames uint8 [B, T, H, W, 3] (T >= 2), masks float32 [B, T, H, W, 1]: masks[:, 0] is the
      given first mask, masks[:, t] the ground truth of frame t (teacher forcing). sample_prob is
      the scheduled-sampling probability (rng stream 'sample'); train selects the BatchNorm mode
      (batch_stats is mutable in training). `outputs` is a dict of arrays over the predicted
      frames 1..T-1: 'logits' float32 [B, T-1, H, W, 1] are the mask logits (the contract test
      compares them with the predictor's); anything else (distance logits, flow, ...) is read
      only by the family's own `loss`.
  fields `dtype` (compute dtype; params and outputs float32) and `scan_unroll` (time steps per
      loop iteration; results are the same).
  For prediction == 'streaming' (memory flat in the video length):
    init_carry(frame0 uint8 [N, H, W, 3], mask0 float32 [N, H, W, 1]) -> carry
        a pytree with leading axis N whose size does not depend on the video length;
    step(carry, frame uint8 [N, H, W, 3]) -> (carry, logits float32 [N, H, W, 1]);
    with Family.fed_back_mask, the carry holds the previous frame's mask probability the next
    step feeds to the model under that key (float32 [N, H, W, 1]); inference may replace it
    between steps (config.eval.feedback='exclusive');
    with Family.frame_outputs, also
    step_outputs(carry, frame) -> (carry, logits, {name: float32 [N, H, W, C]})
        the same step plus extra per-frame outputs at the model's input size (e.g. 'flow',
        C = 2: pixels (x, y) from the previous frame to this one), which evaluation writes with
        each output's FrameOutput.write.
  For prediction == 'clip' (offline models that need the whole clip):
    predict_clip(frames uint8 [N, T, H, W, 3], mask0 float32 [N, H, W, 1])
        -> logits float32 [N, T-1, H, W, 1] for frames 1..T-1.
A family may offer both methods; `prediction` says which one evaluation uses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn

PREDICTIONS = ("streaming", "clip")
# The model methods each prediction kind needs.
PREDICTION_METHODS = {"streaming": ("init_carry", "step"), "clip": ("predict_clip",)}


@dataclasses.dataclass(frozen=True)
class FrameOutput:
    """A per-frame output of `step_outputs` that evaluation can write, one image per frame.

    Attributes:
      switch: the boolean config.eval key that asks for it (e.g. 'save_flow'; its default, False,
        is in configs/common.py).
      folder: its images go to WORKDIR/eval/<split>/<folder>/VIDEO/FRAME.png.
      encode: encode(value float32[H, W, C] at the model's input size, (H0, W0) the frame's
        size) -> one frame's image at the frame's size as PNG bytes (evaluation writes them).
    """

    switch: str
    folder: str
    encode: Callable[[Any, tuple[int, int]], bytes]


@dataclasses.dataclass(frozen=True)
class Family:
    """One model family.

    Attributes:
      name: registry name (= config.model.name).
      model: the Flax module class.
      loss: loss(outputs, batch, **config.train.loss) -> (loss float32 scalar, parts dict of
        float32 scalars, logged). `batch` holds frames uint8 [B,T,H,W,3], masks float32
        [B,T,H,W,1], distance int32 [B,T,H,W], valid bool [B,T] (frame 0 is the given one).
      prediction: 'streaming' (init_carry / step) or 'clip' (predict_clip); see the module doc.
      checkpoint: the authors' PyTorch file layout (models/torch_layouts.py), or None when the
        family has no PyTorch counterpart.
      init_backbones: (torchvision state dict, flat variables, config.model, source) ->
        {flax path: array}: the variables an ImageNet backbone file fills
        (config.model.backbone_init; usually via backbones.torchvision_init); None = no mapping.
      tiny: model fields of a tiny variant (tests and the contract test; small enough to compile
        in seconds on a CPU at 64x64).
      config_only_keys: config.model keys that are not model fields (weight files read at init).
      fed_back_mask: the carry key of the mask the model feeds back to its next step
        (streaming only; None when it feeds back none): generic inference reads and replaces
        it for config.eval.feedback='exclusive'.
      frame_outputs: name -> FrameOutput of the extra per-frame outputs of `step_outputs`
        (streaming only), which evaluation writes when their switch is on.
      init_files: config.model key (one of config_only_keys) -> (state dict, flat variables,
        config.model, source) -> {flax path: array}: further weight files read when training
        starts from scratch (backbone_init.apply_init_files), like init_backbones.
    """

    name: str
    model: type[nn.Module]
    loss: Callable[..., tuple[Any, dict[str, Any]]]
    prediction: str = "streaming"
    checkpoint: Any = None
    init_backbones: Callable[..., dict] | None = None
    tiny: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    config_only_keys: tuple[str, ...] = ("backbone_init",)
    fed_back_mask: str | None = None
    frame_outputs: Mapping[str, FrameOutput] = dataclasses.field(default_factory=dict)
    init_files: Mapping[str, Callable[..., dict]] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.prediction not in PREDICTIONS:
            raise ValueError(
                f"family {self.name}: prediction {self.prediction!r} not in {PREDICTIONS}"
            )
        missing = [m for m in PREDICTION_METHODS[self.prediction] if not hasattr(self.model, m)]
        if missing:
            raise TypeError(
                f"family {self.name}: {self.model.__name__} lacks {missing} for "
                f"prediction={self.prediction!r}"
            )
        if self.fed_back_mask is not None and self.prediction != "streaming":
            raise ValueError(f"family {self.name}: fed_back_mask is for streaming families")
        if self.frame_outputs and not (
            self.prediction == "streaming" and hasattr(self.model, "step_outputs")
        ):
            raise TypeError(
                f"family {self.name}: frame_outputs {sorted(self.frame_outputs)} need streaming "
                f"prediction and {self.model.__name__}.step_outputs"
            )
        stray = sorted(set(self.init_files) - set(self.config_only_keys))
        if stray:
            raise ValueError(f"family {self.name}: init_files keys {stray} not in config_only_keys")
