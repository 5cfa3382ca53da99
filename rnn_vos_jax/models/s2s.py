"""S2S (Xu et al. 2018, the baseline of paper A's Table II) and S2S++ (paper A; RS2S code).

    states_0 = Initializer(x_0, y_0)                  # all ConvLSTM states from frame 0 + mask
    e_t, {f2..f32} = Encoder(x_t)                      # VGG16 + FC-as-conv head, t >= 1
    h_t   = ConvLSTM 3x3 512 (e_t)           at H/32   'convlstm'
    h2_t  = ConvLSTM 3x3 512 (f16_t = b4_t)  at H/16   'convlstm_middle' (skip-memory 1)
    h3_t  = ConvLSTM 5x5 256 (f8_t = b3_t)   at H/8    'convlstm_3'      (skip-memory 2)
    logit_t, dist_t = DecoderSkip(h_t, {f}, h2_t, h3_t)

S2S++ = 2 skip-memories + distance head (the released model); paper A's ablations are
num_skip_memories in {0, 1, 2} with or without the distance head; S2S = 0 skip-memories, no
distance head. The model never sees a mask after frame 0, so there is no teacher forcing and
no scheduled sampling: `sample_prob` (and the 'sample' rng) is accepted for the common model
API and has no effect, exactly as in the authors' training loop. There is no BatchNorm and no
dropout, so `train` changes nothing either.

Time recurrence: `nn.scan` over the whole per-frame step (encoder + ConvLSTMs + decoder),
parameters broadcast (shared). We scan the encoder rather than encoding all frames in one
batched call because (a) the streaming `step` used at inference is then literally the scanned
body, (b) without gradients only one frame's activations live at a time -- the authors'
1x1 head alone makes an [N, H/32, W/32, 200704] activation per frame (90 MB per sample at
256x448 in float32), and (c) with `remat=True` training keeps only the small carries per step
and recomputes each step's activations in the backward pass. The scan is a function of this
module (not a submodule), so parameter paths stay those of the authors' checkpoint.

The memories are cells of models/cells/ whose carry is a ConvLSTM's (h, c): the initializer
makes those states.

Parameter tree (torch checkpoint dict key -> flax top-level collection entry):
    initializer -> params/initializer   (see models/s2s_initializer.py)
    encoder     -> params/encoder       (vgg_backbone/encoder_{b}_{i}, out_0, out_2;
                                         models/s2s_encoder.py, models/backbones/vgg.py)
    convlstm, convlstm_middle, convlstm_3 -> params/<same>/conv/{kernel,bias}
    decoder     -> params/decoder       (models/decoders/s2s.py)
Rule for every key: ".<int>" -> "_<int>", weight (O,I,kh,kw) -> kernel (kh,kw,I,O), bias -> bias.
The PyTorch file holds one state dict per module (models/s2s_weights.py).
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnn_vos_jax.models import cells, losses
from rnn_vos_jax.models.cells.convlstm import ConvLSTM
from rnn_vos_jax.models.decoders.s2s import DecoderSkip
from rnn_vos_jax.models.family import Family
from rnn_vos_jax.models.layers import check_spatial, normalize_frames, scaled
from rnn_vos_jax.models.recurrent import scan_over_time
from rnn_vos_jax.models.s2s_encoder import ENCODER_HEADS, VGGEncoder
from rnn_vos_jax.models.s2s_initializer import MEMORY_NAMES, Initializer
from rnn_vos_jax.models.s2s_weights import CHECKPOINT, init_backbones

Carry = dict[str, tuple[jax.Array, jax.Array]]

# (hidden width, kernel) per ConvLSTM, in MEMORY_NAMES order.
_MEMORY_PLAN = ((512, 3), (512, 3), (256, 5))


class S2SPlusPlus(nn.Module):
    """S2S++ with its ablation knobs; `S2S` below is the baseline preset.

    Attributes:
      num_skip_memories: 0, 1 or 2 skip-memory ConvLSTMs (at H/16, then also H/8).
      use_distance: whether the decoder has the border-distance head (multi-task loss).
      num_classes: distance classes K (2*border/bin + 2; 42 for border 20, bin 1).
      encoder_head: 'authors_1x1' (released code) or 'fcn_7x7' (see models/s2s_encoder.py).
      cell: cell of every memory (models/cells/; its carry must be a ConvLSTM's (h, c)):
        'authors' (sigmoid g, ReLU c) or 'tanh'.
      width_divisor: divides every channel count incl. the 4096/200704 heads (tiny variants).
      dtype: compute dtype (params and ConvLSTM states stay float32; outputs are float32).
      remat: rematerialise each scanned step in the backward pass (saves activation memory).
      scan_unroll: time steps per loop iteration of the scan (same results; > 1 is much faster
        on CPU, see recurrent.scan_over_time).
    """

    num_skip_memories: int = 2
    use_distance: bool = True
    num_classes: int = 42
    encoder_head: str = "authors_1x1"
    cell: str = "authors"
    width_divisor: int = 1
    dtype: Any = jnp.float32
    remat: bool = False
    scan_unroll: int = 1

    def setup(self):
        if self.num_skip_memories not in (0, 1, 2):
            raise ValueError(f"num_skip_memories must be 0, 1 or 2, got {self.num_skip_memories}")
        if self.encoder_head not in ENCODER_HEADS:
            raise ValueError(
                f"Unknown encoder_head {self.encoder_head!r}; expected one of {ENCODER_HEADS}"
            )
        if not issubclass(cells.REGISTRY[self.cell], ConvLSTM):
            raise ValueError(  # noqa: TRY004 - a config value, not a caller's type error
                f"S2S/S2S++: cell {self.cell!r} has no ConvLSTM (h, c) state for the initializer"
            )
        if self.use_distance and self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 with use_distance, got {self.num_classes}")
        d, dt = self.width_divisor, self.dtype
        self.initializer = Initializer(self.num_skip_memories, width_divisor=d, dtype=dt)
        self.encoder = VGGEncoder(head=self.encoder_head, width_divisor=d, dtype=dt)
        self.memories = {
            MEMORY_NAMES[i]: cells.build(
                self.cell, scaled(width, d), kernel, dtype=dt, name=MEMORY_NAMES[i]
            )
            for i, (width, kernel) in enumerate(_MEMORY_PLAN[: 1 + self.num_skip_memories])
        }
        self.decoder = DecoderSkip(
            self.num_classes if self.use_distance else None, width_divisor=d, dtype=dt
        )

    def init_carry(self, frame0: jax.Array, mask0: jax.Array) -> Carry:
        """Runs the initializer on the first frame of every object.

        Args:
          frame0: uint8 or float [N,H,W,3] in [0,255]; H, W multiples of 32.
          mask0: float [N,H,W,1] first mask (0/1).

        Returns:
          {'convlstm': (h, c)[, 'convlstm_middle': (h, c)[, 'convlstm_3': (h, c)]]}, float32,
          h/c of shape [N,H/32,W/32,512/d], [N,H/16,W/16,512/d], [N,H/8,W/8,256/d].
        """
        check_spatial(frame0.shape, "frame0")
        if mask0.shape != frame0.shape[:3] + (1,):
            raise ValueError(
                f"mask0 must be [N,H,W,1] matching frame0 {frame0.shape}, got {mask0.shape}"
            )
        return self.initializer(normalize_frames(frame0, self.dtype), mask0)

    def _advance(self, carry: Carry, frame: jax.Array):
        """One frame: (carry, frame [N,H,W,3]) -> (carry, (logits f32[N,H,W,1], dist|None))."""
        e, feats = self.encoder(normalize_frames(frame, self.dtype))
        inputs = {"convlstm": e, "convlstm_middle": feats["f16"], "convlstm_3": feats["f8"]}
        new_carry, outs = {}, {}
        for name, cell in self.memories.items():
            new_carry[name], outs[name] = cell(carry[name], inputs[name])
        logits, dist = self.decoder(
            outs["convlstm"], feats, outs.get("convlstm_middle"), outs.get("convlstm_3")
        )
        dist = None if dist is None else dist.astype(jnp.float32)
        return new_carry, (logits.astype(jnp.float32), dist)

    def step(self, carry: Carry, frame: jax.Array) -> tuple[Carry, jax.Array]:
        """Streaming step: next frame of every object -> (carry, mask logits f32[N,H,W,1]).

        Args:
          carry: as returned by `init_carry` or a previous `step`.
          frame: uint8 or float [N,H,W,3] in [0,255].
        """
        check_spatial(frame.shape, "frame")
        carry, (logits, _) = self._advance(carry, frame)
        return carry, logits

    def __call__(
        self,
        frames: jax.Array,
        masks: jax.Array,
        *,
        sample_prob: float | jax.Array = 0.0,
        train: bool = False,
    ) -> dict[str, jax.Array | None]:
        """Segments frames 1..T-1 of each clip given the mask of frame 0.

        Args:
          frames: uint8 or float [B,T,H,W,3] in [0,255], T >= 2, H, W multiples of 32.
          masks: float32 [B,T,H,W,1]; only masks[:, 0] is used (the model takes no mask later).
          sample_prob: accepted for the common API; no effect (no mask input after frame 0).
          train: accepted for the common API; no effect (no BatchNorm or dropout).

        Returns:
          {'logits': f32[B,T-1,H,W,1], 'distance': f32[B,T-1,H,W,K] or None without the
          distance head}.
        """
        del sample_prob, train
        if frames.ndim != 5 or frames.shape[1] < 2:
            raise ValueError(f"frames must be [B,T,H,W,3] with T >= 2, got shape {frames.shape}")
        if masks.shape != frames.shape[:4] + (1,):
            raise ValueError(
                f"masks must be [B,T,H,W,1] matching frames {frames.shape}, got {masks.shape}"
            )
        check_spatial(frames.shape[:1] + frames.shape[2:], "frames [B,H,W,C] slice")
        carry = self.init_carry(frames[:, 0], masks[:, 0])

        def body(module, carry, frame):
            return module._advance(carry, frame)

        if self.remat:
            body = nn.remat(body, prevent_cse=False)
        # No BatchNorm in the S2S family: eval-mode scan (params broadcast) is all it needs.
        scan = scan_over_time(
            body, train=False, unroll=self.scan_unroll, length=frames.shape[1] - 1
        )
        _, (logits, dist) = scan(self, carry, frames[:, 1:])
        return {"logits": logits, "distance": dist}


class S2S(S2SPlusPlus):
    """The S2S baseline (paper A Table II "base model"): no skip-memory, no distance head."""

    num_skip_memories: int = 0
    use_distance: bool = False


S2SPP_FAMILY = Family(
    name="s2s_pp",
    model=S2SPlusPlus,
    loss=losses.segmentation_loss,
    prediction="streaming",
    checkpoint=CHECKPOINT,
    init_backbones=init_backbones,
    tiny={"width_divisor": 32},
)
S2S_FAMILY = dataclasses.replace(S2SPP_FAMILY, name="s2s", model=S2S)
