"""HS2S (paper B, the authors' `ModelMatch`): RNN memories plus matching to reference frames.

For t = 1..T-1, with m_{t-1} the previous mask (GT, or the previous prediction under scheduled
sampling and at inference):
  r0, m0 = RefEnc(x0, y0) ('e', 'f16');  r_{t-1}, m1 = RefEnc(x_{t-1}, m_{t-1})
  enc = Enc(x_t, m_{t-1});  h = ConvLSTM3x3(enc.e);  h_sm = ConvLSTM5x5(enc.f16)
  logit_t, dist_t = DecoderRef(r0, h, enc skips, r_{t-1}, h_sm, m0, m1)
The step holds both encoders because the previous mask is one of their inputs. Time runs through
`nn.scan` over one step function (parameters shared across steps); streaming inference calls the
same step function with an explicit carry, so memory does not grow with the video length.

Building blocks by config: `backbone` (models/backbones/, both encoders), `cell` (models/cells/,
the bottleneck memory) and `skip_cell` (the skip memory), `fusion` (models/fusion/, the matching
blocks of the decoder), `references` (which reference frames are matched, paper B Table 2b:
'both', 'first' = HS2S_0, 'previous' = HS2S_{t-1}; a single-reference model has no fusion or
merge weights of the other branch, and only the carry entries it reads).

Variable tree (top-level names = the authors' torch modules, `module.` prefix stripped):
  encoder_ref, encoder (hs2s_encoder.HS2SEncoder: backbone + mask conv + reduction), memory,
  skip_memory (the cells), decoder (decoders/hs2s.py DecoderRef). The PyTorch file layout is
  {'model': DataParallel state dict, ...} (FAMILY.checkpoint).
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import logging

from rnn_vos_jax.models import backbones, cells, hs2s_encoder, losses, previous_masks
from rnn_vos_jax.models.decoders.hs2s import DecoderRef
from rnn_vos_jax.models.family import Family
from rnn_vos_jax.models.layers import normalize_frames
from rnn_vos_jax.models.recurrent import scan_over_time
from rnn_vos_jax.models.torch_layouts import StateDictLayout

Carry = dict[str, Any]

# config.model.references -> the reference frames the decoder matches against.
REFERENCES = {"both": ("first", "previous"), "first": ("first",), "previous": ("previous",)}
# What the backward pass recomputes instead of keeping (config.model.remat): nothing; each
# encoder call (the ResNet activations); or each whole time step, so that training keeps only
# the carries per frame and the memory of one step at a time (long clips).
REMAT_POLICIES = {
    False: "none",
    True: "encoders",
    "none": "none",
    "encoders": "encoders",
    "steps": "steps",
}


def remat_policy(value) -> str:
    """config.model.remat (False / True / a name) -> 'none' | 'encoders' | 'steps'."""
    try:
        return REMAT_POLICIES[value]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown config.model.remat {value!r}; expected False, True or one of "
            "'none', 'encoders', 'steps'"
        ) from None


class HS2S(nn.Module):
    """HS2S video object segmentation model (streaming; the family contract is models/family.py).

    Attributes:
      backbone: backbone of both encoders (models/backbones/); 'resnet50' = the authors'
        released weights, 'resnet101' as paper B.
      num_ch: channels of the encoder output `e` and of the bottleneck memory (the skip memory
        has the backbone's f16 width: 1024 for ResNets, num_ch in the authors' model).
      num_classes: border-distance classes K.
      mem_kernel: kernel of the bottleneck ConvLSTM (at H/32 x W/32).
      sm_kernel: kernel of the skip-memory ConvLSTM (at H/16 x W/16).
      cell: cell of the bottleneck memory (models/cells/): 'authors' (ConvLSTM with sigmoid g,
        ReLU c), 'tanh' (the standard ConvLSTM), 'deep_rnn', 'tt_lstm' (paper B Table 4).
      skip_cell: cell of the skip memory; paper B swaps only "the RNN block", so the ablations
        keep the authors' ConvLSTM here.
      fusion: fusion block of the decoder's reference matching (models/fusion/): 'gc' (the
        authors'), 'cosine', 'axial' (paper B Table 5).
      references: 'both' (the authors'), 'first' (only frame 0 is matched) or 'previous' (only
        frame t-1), paper B Table 2b.
      width_divisor: divides every channel count (tiny test/demo variants); 1 = authors'.
      blocks: optional override of the ResNet stage depths, e.g. (1, 1, 1, 1).
      depth_divisor: > 1 keeps max(1, round(depth / d)) blocks of each backbone stage (the
        demo's thin backbones; ignored by backbones without stages); 1 = the backbone's own.
      dtype: compute dtype (params, BatchNorm statistics, memories and outputs stay float32).
      remat: what the backward pass recomputes (REMAT_POLICIES; same gradients): False /
        'none'; True / 'encoders' (each encoder call); 'steps' (each whole time step: the
        activation memory of one frame instead of the clip's, for long clips).
      backbone_remat: rematerialise the backbone block by block (backbones with a `remat`
        field: axial_s); combinable with remat.
      mask_jitter: training only (__call__): each GT previous mask after the first is moved by a
        random offset of up to this many pixels per axis (zero fill), per sample and step, so the
        model must find the object in the frame instead of copying the mask (MaskTrack-style
        mask deformation). 0 = the authors' training (default); never applied in init_carry/step.
      mask_morph: training only (__call__): each GT previous mask after the first is eroded or
        dilated by a random k in [-mask_morph, mask_morph] pixels (square filter), per sample
        and step, before mask_jitter's shift, so the model learns to regrow a mask that has
        shrunk (its own fed-back masks erode at inference). 0 = the authors' training (default).
      scan_unroll: time steps per loop iteration of the training scan (same results; > 1 is
        much faster on CPU, see recurrent.scan_over_time).
    """

    backbone: str = "resnet50"
    num_ch: int = 1024
    num_classes: int = 42
    mem_kernel: int = 3
    sm_kernel: int = 5
    cell: str = "authors"
    skip_cell: str = "authors"
    fusion: str = "gc"
    references: str = "both"
    width_divisor: int = 1
    blocks: Sequence[int] | None = None
    depth_divisor: int = 1
    dtype: Any = jnp.float32
    remat: bool | str = False
    backbone_remat: bool = False
    mask_jitter: int = 0
    mask_morph: int = 0
    scan_unroll: int = 1

    def setup(self):
        if self.references not in REFERENCES:
            raise ValueError(
                f"Unknown config.model.references {self.references!r}; known: {sorted(REFERENCES)}"
            )
        remat_encoders = remat_policy(self.remat) == "encoders"
        self.encoder_ref, self.encoder = hs2s_encoder.encoders(self, remat_encoders)
        ch = self.num_ch // self.width_divisor
        self.memory = cells.build(self.cell, ch, self.mem_kernel, dtype=self.dtype)
        self.skip_memory = hs2s_encoder.skip_memory(self)
        self.decoder = DecoderRef(
            ch,
            self.num_classes,
            self.width_divisor,
            fusion=self.fusion,
            references=REFERENCES[self.references],
            dtype=self.dtype,
        )

    def _check(self, frames: jax.Array, masks: jax.Array, time_axis: bool) -> None:
        lead = 2 if time_axis else 1
        if frames.ndim != lead + 3 or frames.shape[-1] != 3:
            raise ValueError(
                f"HS2S: frames must be [{'B,T,' if time_axis else 'N,'}H,W,3], "
                f"got shape {frames.shape}"
            )
        if masks.shape != frames.shape[:-1] + (1,):
            raise ValueError(
                f"HS2S: masks shape {masks.shape} must be frames shape {frames.shape} with 1 channel"
            )
        h, w = frames.shape[-3:-1]
        if h % 32 or w % 32:
            raise ValueError(f"HS2S: frame size {h}x{w} must be a multiple of 32")

    def _start(self, x0: jax.Array, y0: jax.Array, train: bool) -> Carry:
        """Carry before the first step from a normalised frame 0 and its mask."""
        refs = REFERENCES[self.references]
        if "first" in refs:
            ref = self.encoder_ref(x0, y0, train)
        else:
            # Only the shapes are read (XLA drops the computation); eval mode, so no BatchNorm
            # statistics move for a frame the model never matches.
            ref = self.encoder_ref(x0, y0, False)
        n, h32, w32, _ = ref["e"].shape
        h16, w16 = ref["f16"].shape[1:3]
        carry = {
            "memory": self.memory.initialize_carry(n, h32, w32),
            "skip_memory": self.skip_memory.initialize_carry(n, h16, w16),
            "prev_pred": y0.astype(jnp.float32),
        }
        if "first" in refs:
            carry.update(ref=ref["e"], ref_mid=ref["f16"])
        if "previous" in refs:
            carry["prev_frame"] = x0
        return carry

    def _step(
        self, carry: Carry, x: jax.Array, mask: jax.Array, train: bool
    ) -> tuple[Carry, dict[str, jax.Array]]:
        """One step: segment normalised frame x given the mask `mask` of the previous frame.

        Returns (carry, {'logits': [N,H,W,1], 'distance': [N,H,W,K]}); families built on HS2S
        add their own per-frame outputs to the dict (the scan stacks every entry over time).
        """
        prev, enc = self._encode(carry, x, mask, train)
        return self._segment(carry, x, prev, enc, train)

    def _encode(
        self, carry: Carry, x: jax.Array, mask: jax.Array, train: bool
    ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
        """(RefEnc(x_{t-1}, mask) or {} without carry['prev_frame'], Enc(x, mask)) features."""
        prev = {}
        if "prev_frame" in carry:
            prev = self.encoder_ref(carry["prev_frame"], mask, train)
        return prev, self.encoder(x, mask, train)

    def _segment(
        self, carry: Carry, x: jax.Array, prev: dict, enc: dict, train: bool
    ) -> tuple[Carry, dict[str, jax.Array]]:
        """Memories and decoder on the encodings of one step; the carry moves on to frame x."""
        memory, h = self.memory(carry["memory"], enc["e"], train=train)
        skip_memory, h_sm = self.skip_memory(carry["skip_memory"], enc["f16"], train=train)
        logits, dist = self.decoder(
            carry.get("ref"),
            h,
            enc,
            prev.get("e"),
            h_sm,
            carry.get("ref_mid"),
            prev.get("f16"),
            train,
        )
        carry = dict(
            carry, memory=memory, skip_memory=skip_memory, prev_pred=jax.nn.sigmoid(logits)
        )
        if "prev_frame" in carry:
            carry["prev_frame"] = x
        return carry, {"logits": logits, "distance": dist}

    def _scan_body(self, carry: Carry, xs: tuple, train: bool):
        x, gt_prev, use_pred = xs
        # carry['prev_pred'] is y0 before the first step, so m_0 is always the GT mask.
        mask = jnp.where(use_pred, carry["prev_pred"], gt_prev)
        return self._step(carry, x, mask, train)

    def __call__(
        self, frames: jax.Array, masks: jax.Array, *, sample_prob: Any = 0.0, train: bool = False
    ) -> dict[str, jax.Array]:
        """Segments frames 1..T-1 of a batch of clips given the first masks.

        Args:
          frames: uint8 or float in [0, 255], [B, T, H, W, 3], T >= 2, H and W multiples of 32.
          masks: float32 [B, T, H, W, 1]; masks[:, 0] is the given first mask, masks[:, t] the
            teacher-forcing GT of frame t.
          sample_prob: probability (Python float or traced scalar) that the previous prediction
            (sigmoid, not detached) replaces the GT previous mask; one coin per step for the
            whole batch from rng stream 'sample'. Step 0 always uses masks[:, 0].
          train: BatchNorm in train mode (batch statistics; running stats updated when
            'batch_stats' is mutable) or eval mode (running statistics).

        Returns:
          {'logits': f32[B, T-1, H, W, 1], 'distance': f32[B, T-1, H, W, num_classes]}.
        """
        self._check(frames, masks, time_axis=True)
        if frames.shape[1] < 2:
            raise ValueError(f"HS2S: need at least 2 frames, got T={frames.shape[1]}")
        x = jnp.swapaxes(normalize_frames(frames, self.dtype), 0, 1)  # [T, B, H, W, 3]
        y = jnp.swapaxes(masks.astype(jnp.float32), 0, 1)
        carry = self._start(x[0], y[0], train)
        gt_prev = previous_masks.perturb_gt_masks(self, y[:-1])
        xs = (x[1:], gt_prev, previous_masks.sample_coins(self, x.shape[0] - 1, sample_prob))
        if self.is_initializing():
            # BatchNorm statistics must exist before a scan carries them (DESIGN.md pitfalls).
            self._scan_body(carry, jax.tree.map(lambda v: v[0], xs), train)
        outs = self._scan(carry, xs, train)
        return {k: jnp.swapaxes(v, 0, 1) for k, v in outs.items()}

    def _scan(self, carry: Carry, xs: tuple, train: bool) -> dict[str, jax.Array]:
        """Time-major step outputs ('logits', 'distance', ...) over xs = (frames, GT prev
        masks, coins)."""
        body = type(self)._scan_body
        steps = xs[0].shape[0]
        if remat_policy(self.remat) == "steps":
            if steps > 1 and self.scan_unroll >= steps:
                # Straight-line code lets XLA schedule each step's recomputation beside its
                # forward pass: the memory of 'none' (benchmarks/RESULTS.md).
                logging.warning(
                    "config.model.remat='steps' saves no memory with the scan unrolled "
                    "(scan_unroll=%d >= %d steps); use scan_unroll=1",
                    self.scan_unroll,
                    steps,
                )
            # Argument 3 (self = 0) is `train`, a Python bool.
            body = nn.remat(body, static_argnums=(3,), prevent_cse=False)
        scan = scan_over_time(
            body,
            train,
            in_axes=(0, nn.broadcast),
            out_axes=0,
            unroll=self.scan_unroll,
            length=steps,
        )
        _, outs = scan(self, carry, xs, train)
        return outs

    def predict_clip(self, frames: jax.Array, mask0: jax.Array) -> jax.Array:
        """Whole-clip inference (eval-mode BatchNorm): every step is fed the previous prediction.

        Gives what init_carry and T-1 calls of step give, in one scanned call.

        Args:
          frames: uint8 or float in [0, 255], [N, T, H, W, 3], T >= 2.
          mask0: float [N, H, W, 1] first masks (0/1).

        Returns:
          logits f32[N, T-1, H, W, 1] of frames 1..T-1.
        """
        if frames.ndim != 5 or frames.shape[1] < 2:
            raise ValueError(f"HS2S: frames must be [N,T,H,W,3] with T >= 2, got {frames.shape}")
        self._check(frames[:, 0], mask0, time_axis=False)
        x = jnp.swapaxes(normalize_frames(frames, self.dtype), 0, 1)  # [T, N, H, W, 3]
        n = x.shape[0] - 1
        unused_gt = jnp.zeros((n, *mask0.shape), jnp.float32)
        xs = (x[1:], unused_gt, jnp.ones((n,), bool))
        logits = self._scan(self._start(x[0], mask0, False), xs, False)["logits"]
        return jnp.swapaxes(logits, 0, 1)

    def init_carry(self, frame0: jax.Array, mask0: jax.Array) -> Carry:
        """Streaming start: encodes the reference frame once (eval-mode BatchNorm).

        Args:
          frame0: uint8 or float in [0, 255], [N, H, W, 3] (N = objects of one video).
          mask0: float [N, H, W, 1] first masks (0/1).

        Returns:
          Carry: dict of pytrees with leading axis N: 'memory', 'skip_memory' (the cells' carries),
          'prev_pred', and by `references` 'ref', 'ref_mid' (frame 0's encodings) and
          'prev_frame'; its size does not depend on the video length.
        """
        self._check(frame0, mask0, time_axis=False)
        return self._start(normalize_frames(frame0, self.dtype), mask0, False)

    def step(self, carry: Carry, frame: jax.Array) -> tuple[Carry, jax.Array]:
        """Streaming step (eval-mode BatchNorm), as the authors' inference loop.

        The previous mask fed to both encoders is carry['prev_pred']: the first mask after
        init_carry, then the sigmoid of the previous logits. Replace that entry to feed another
        mask (e.g. GT for teacher forcing).

        Args:
          carry: from init_carry or the previous step.
          frame: uint8 or float in [0, 255], [N, H, W, 3], the next frame.

        Returns:
          (carry, logits f32[N, H, W, 1]).
        """
        mask = carry["prev_pred"]
        self._check(frame, mask, time_axis=False)
        carry, out = self._step(carry, normalize_frames(frame, self.dtype), mask, False)
        return carry, out["logits"]


def _init_backbones(state, flat, model_config, source) -> dict:
    """torchvision weights into the backbones of both encoders (the authors' new layers stay)."""
    name = model_config.get("backbone", HS2S.backbone)  # a model field: its default is HS2S's
    targets = [("encoder_ref", name), ("encoder", name)]
    return backbones.torchvision_init(state, flat, targets, source)


FAMILY = Family(
    name="hs2s",
    model=HS2S,
    loss=losses.segmentation_loss,
    prediction="streaming",
    checkpoint=StateDictLayout("hs2s", container="model", data_parallel=True),
    init_backbones=_init_backbones,
    tiny={"width_divisor": 16, "blocks": (1, 1, 1, 1)},
    fed_back_mask="prev_pred",
)
