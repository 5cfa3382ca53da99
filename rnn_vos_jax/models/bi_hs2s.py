"""Bi-HS2S (paper B §3.2): HS2S with bidirectional memories, predicting whole clips offline.

The authors released no code; variants-spec.md §5 fixes what the paper leaves open ([CHOSEN]).
For a clip x_0..x_{T-1} with the first mask y_0, predicting frames t = 1..T-1:

  r0, m0 = RefEnc(x0, y0) ('e', 'f16')                 the HS2S reference encoder (mask input)
  (h, c)_0, (h_sm, c_sm)_0 = Initializer(r0, m0)       ReLU(1x1) per state, Xavier
  enc_t = Enc(x_t)                                     the HS2S encoder without its mask conv
  hf_t   = ConvLSTM3x3_fwd(enc_t.e),   t = 1..T-1      from the initializer's states
  hb_t   = ConvLSTM3x3_bwd(enc_t.e),   t = T-1..1      from the last forward state (h, c)_{T-1}
  (likewise the 5x5 skip memories on enc_t.f16, with their own forward/backward weights)
  h_t    = ReLU(combine 1x1 cat[hf_t, hb_t]);  h_sm_t = ReLU(combine_sm 1x1 cat[hf_sm, hb_sm])
  r_{t-1}, m1 = RefEnc(x_{t-1}, m_{t-1})
  logit_t, dist_t = DecoderRef(r0, h_t, enc_t skips, r_{t-1}, h_sm_t, m0, m1)

The memories never see a mask after frame 0 (mask guidance cannot run backwards), so the two
memory scans run first; a third scan decodes frame by frame, because r_{t-1} needs the previous
mask m_{t-1}: the sigmoid of the previous logit (not detached), or the ground truth under
scheduled sampling, with HS2S's one coin per step for the whole batch
(previous_masks.sample_coins). m_0 is always y_0. Every frame's encoder features and memory
outputs are held until the decode scan, so memory grows linearly with the clip length
(benchmarks/bi_hs2s_memory.py); the whole-clip predictor's windowed mode
(inference/predictors.py ClipPredictor, config.eval.clip_window) bounds it.

Building blocks by config as HS2S: `backbone` (both encoders), `cell` (both bottleneck
memories) and `skip_cell` (both skip memories), restricted to cells with a ConvLSTM (h, c)
carry because the initializer makes those states; `fusion` (the decoder's matching). Both
reference frames are always matched (the initializer needs frame 0 anyway).

Variable tree (HS2S's names where the module is HS2S's; no PyTorch counterpart exists, but the
family exports/reads the same `{'model': DataParallel state dict}` layout as HS2S):
  encoder_ref, encoder (hs2s_encoder.HS2SEncoder; encoder has no mask_conv), initializer
  (h0, c0, h0_sm, c0_sm), memory, memory_backward, skip_memory, skip_memory_backward (cells),
  combine, combine_sm (1x1 convs), decoder (decoders/hs2s.py DecoderRef).
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnn_vos_jax.models import cells, hs2s, hs2s_encoder, losses, previous_masks
from rnn_vos_jax.models.cells.convlstm import ConvLSTM
from rnn_vos_jax.models.decoders.hs2s import DecoderRef
from rnn_vos_jax.models.family import Family
from rnn_vos_jax.models.layers import Conv, normalize_frames
from rnn_vos_jax.models.recurrent import scan_over_time
from rnn_vos_jax.models.torch_layouts import StateDictLayout

State = tuple[jax.Array, jax.Array]
SKIPS = ("f32", "f16", "f8", "f4", "f2")


def _flip(tree: Any) -> Any:
    return jax.tree.map(lambda v: jnp.flip(v, axis=0), tree)


class Initializer(nn.Module):
    """Frame 0's reference encodings -> the first (h, c) of the bottleneck and skip memories.

    Attributes:
      features: hidden channels of the bottleneck memory (num_ch / width_divisor).
      features_sm: hidden channels of the skip memory (the backbone's f16 width).
      dtype: compute dtype; the states are float32.
    """

    features: int
    features_sm: int
    dtype: Any = jnp.float32

    def _initial(self, x: jax.Array, features: int, suffix: str) -> State:
        # As S2S++'s state heads: ReLU(1x1), Xavier weights, zero bias; ReLU keeps c >= 0,
        # which the authors' ConvLSTM (h = o * ReLU(c)) expects.
        h, c = (
            nn.relu(
                Conv(
                    features,
                    1,
                    padding=0,
                    kernel_init="xavier",
                    bias_init="zeros",
                    dtype=self.dtype,
                    name=name + suffix,
                )(x)
            ).astype(jnp.float32)
            for name in ("h0", "c0")
        )
        return h, c

    @nn.compact
    def __call__(self, e: jax.Array, f16: jax.Array) -> dict[str, State]:
        """e [N,h32,w32,C], f16 [N,h16,w16,C16] -> {'memory': (h, c), 'skip_memory': (h, c)}."""
        return {
            "memory": self._initial(e, self.features, ""),
            "skip_memory": self._initial(f16, self.features_sm, "_sm"),
        }


class BiHS2S(nn.Module):
    """Bi-HS2S video object segmentation model (offline: predict_clip; models/family.py).

    Attributes:
      backbone: backbone of both encoders (models/backbones/); 'resnet50' as HS2S's release,
        'resnet101' as paper B.
      num_ch: channels of `e` and of the bottleneck memories (skip memories: f16's width).
      num_classes: border-distance classes K.
      mem_kernel: kernel of the bottleneck ConvLSTMs (at H/32 x W/32).
      sm_kernel: kernel of the skip-memory ConvLSTMs (at H/16 x W/16).
      cell: cell of the forward and backward bottleneck memories ('authors' or 'tanh': the
        initializer makes ConvLSTM (h, c) states).
      skip_cell: cell of the forward and backward skip memories (same restriction).
      fusion: fusion block of the decoder's reference matching (models/fusion/).
      width_divisor: divides every channel count (tiny test/demo variants); 1 = full size.
      blocks: optional override of the backbone's stage depths, e.g. (1, 1, 1, 1).
      depth_divisor: thins the backbone's stages (as HS2S.depth_divisor); 1 = its own.
      dtype: compute dtype (params, BatchNorm statistics, memories and outputs stay float32).
      remat: False / 'none', or True / 'encoders': rematerialise the encoders in the backward
        pass ('steps' is HS2S's only).
      backbone_remat: rematerialise the backbone block by block (backbones with `remat`).
      mask_jitter: training only: GT previous masks after the first are moved by up to this
        many pixels per axis (as HS2S.mask_jitter); 0 = off. Never applied in predict_clip.
      mask_morph: training only: GT previous masks after the first are eroded or dilated by up
        to this many pixels before the shift (as HS2S.mask_morph); 0 = off.
      scan_unroll: time steps per loop iteration of the three scans (same results).
    """

    backbone: str = "resnet50"
    num_ch: int = 1024
    num_classes: int = 42
    mem_kernel: int = 3
    sm_kernel: int = 5
    cell: str = "authors"
    skip_cell: str = "authors"
    fusion: str = "gc"
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
        for key in ("cell", "skip_cell"):
            name = getattr(self, key)
            if not issubclass(cells.REGISTRY[name], ConvLSTM):
                raise ValueError(  # noqa: TRY004 - a config value, not a caller's type error
                    f"Bi-HS2S: config.model.{key}={name!r} has no ConvLSTM (h, c) state for the "
                    "initializer; use 'authors' or 'tanh'"
                )
        policy = hs2s.remat_policy(self.remat)
        if policy == "steps":
            raise ValueError(
                "Bi-HS2S: config.model.remat='steps' is not supported (its three scans share "
                "the encodings of the whole clip); use True / 'encoders'"
            )
        self.encoder_ref, self.encoder = hs2s_encoder.encoders(self, policy == "encoders")
        ch = self.num_ch // self.width_divisor
        c16 = hs2s_encoder.skip_width(self)
        self.initializer = Initializer(ch, c16, dtype=self.dtype)
        self.memory = cells.build(self.cell, ch, self.mem_kernel, dtype=self.dtype)
        self.memory_backward = cells.build(self.cell, ch, self.mem_kernel, dtype=self.dtype)
        self.skip_memory = hs2s_encoder.skip_memory(self)
        self.skip_memory_backward = hs2s_encoder.skip_memory(self)
        new = {"padding": 0, "kernel_init": "he_fan_out", "bias_init": "zeros", "dtype": self.dtype}
        self.combine = Conv(ch, 1, **new)
        self.combine_sm = Conv(c16, 1, **new)
        self.decoder = DecoderRef(
            ch, self.num_classes, self.width_divisor, fusion=self.fusion, dtype=self.dtype
        )

    def _check(self, frames: jax.Array, mask0: jax.Array) -> None:
        if frames.ndim != 5 or frames.shape[1] < 2 or frames.shape[-1] != 3:
            raise ValueError(f"Bi-HS2S: frames must be [B,T,H,W,3], T >= 2, got {frames.shape}")
        if mask0.shape != frames.shape[:1] + frames.shape[2:4] + (1,):
            raise ValueError(
                f"Bi-HS2S: first masks {mask0.shape} must be [B,H,W,1] for frames {frames.shape}"
            )
        h, w = frames.shape[2:4]
        if h % 32 or w % 32:
            raise ValueError(f"Bi-HS2S: frame size {h}x{w} must be a multiple of 32")

    # --- the three scanned bodies (module, carry, xs, train) -> (carry, ys) ---------------------

    def _forward_body(self, carry: dict, x: jax.Array, train: bool):
        """Encodes frame x (no mask) and advances both forward memories."""
        enc = self.encoder(x, None, train)
        memory, hf = self.memory(carry["memory"], enc["e"], train=train)
        skip_memory, hf_sm = self.skip_memory(carry["skip_memory"], enc["f16"], train=train)
        return {"memory": memory, "skip_memory": skip_memory}, (enc, hf, hf_sm)

    def _backward_body(self, carry: dict, xs: tuple, train: bool):
        """Advances both backward memories and combines them with the forward outputs."""
        e, f16, hf, hf_sm = xs
        memory, hb = self.memory_backward(carry["memory"], e, train=train)
        skip_memory, hb_sm = self.skip_memory_backward(carry["skip_memory"], f16, train=train)
        cat = lambda a, b: jnp.concatenate([a.astype(self.dtype), b.astype(self.dtype)], -1)
        h = nn.relu(self.combine(cat(hf, hb)))
        h_sm = nn.relu(self.combine_sm(cat(hf_sm, hb_sm)))
        return {"memory": memory, "skip_memory": skip_memory}, (h, h_sm)

    def _decode_body(self, carry: dict, xs: tuple, train: bool):
        """Decodes one frame, matching against frame 0 and the previous frame with its mask."""
        x, gt_prev, use_pred, skips, h, h_sm = xs
        # carry['prev_pred'] is y0 before the first step, so m_0 is always the given mask.
        mask = jnp.where(use_pred, carry["prev_pred"], gt_prev)
        prev = self.encoder_ref(carry["prev_frame"], mask, train)
        logits, dist = self.decoder(
            carry["ref"], h, skips, prev["e"], h_sm, carry["ref_mid"], prev["f16"], train
        )
        return dict(carry, prev_frame=x, prev_pred=jax.nn.sigmoid(logits)), (logits, dist)

    def _scan(self, body, carry, xs, train: bool):
        if self.is_initializing():
            # BatchNorm statistics must exist before a scan carries them (DESIGN.md pitfalls).
            body(self, carry, jax.tree.map(lambda v: v[0], xs), train)
        scan = scan_over_time(
            body,
            train,
            in_axes=(0, nn.broadcast),
            out_axes=0,
            unroll=self.scan_unroll,
            length=jax.tree.leaves(xs)[0].shape[0],
        )
        return scan(self, carry, xs, train)

    def _run(self, x: jax.Array, y0: jax.Array, gt_prev: jax.Array, coins: jax.Array, train: bool):
        """Time-major (logits, distance) [T-1, B, ...] of normalised frames x [T, B, H, W, 3]."""
        ref = self.encoder_ref(x[0], y0, train)
        state = self.initializer(ref["e"], ref["f16"])
        body = type(self)
        last, (enc, hf, hf_sm) = self._scan(body._forward_body, state, x[1:], train)
        backward_xs = _flip((enc["e"], enc["f16"], hf, hf_sm))
        _, (h, h_sm) = self._scan(body._backward_body, last, backward_xs, train)
        h, h_sm = _flip((h, h_sm))
        carry = {"ref": ref["e"], "ref_mid": ref["f16"], "prev_frame": x[0], "prev_pred": y0}
        xs = (x[1:], gt_prev, coins, {k: enc[k] for k in SKIPS}, h, h_sm)
        _, outs = self._scan(body._decode_body, carry, xs, train)
        return outs

    def __call__(
        self, frames: jax.Array, masks: jax.Array, *, sample_prob: Any = 0.0, train: bool = False
    ) -> dict[str, jax.Array]:
        """Segments frames 1..T-1 of a batch of clips given the first masks (training forward).

        Args:
          frames: uint8 or float in [0, 255], [B, T, H, W, 3], T >= 2, H and W multiples of 32.
          masks: float32 [B, T, H, W, 1]; masks[:, 0] is the given first mask, masks[:, t] the
            GT of frame t, fed to the reference encoder as the previous mask of frame t + 1.
          sample_prob: probability (Python float or traced scalar) that the previous prediction
            (sigmoid, not detached) replaces that GT mask; one coin per step for the whole batch
            from rng stream 'sample' (as HS2S). sample_prob=1 gives predict_clip's outputs.
          train: BatchNorm mode (batch statistics, running stats updated when mutable).

        Returns:
          {'logits': f32[B, T-1, H, W, 1], 'distance': f32[B, T-1, H, W, num_classes]}.
        """
        self._check(frames, masks[:, 0])
        if masks.shape != frames.shape[:-1] + (1,):
            raise ValueError(f"Bi-HS2S: masks {masks.shape} must be frames {frames.shape}[..., :1]")
        x = jnp.swapaxes(normalize_frames(frames, self.dtype), 0, 1)  # [T, B, H, W, 3]
        y = jnp.swapaxes(masks.astype(jnp.float32), 0, 1)
        gt_prev = previous_masks.perturb_gt_masks(self, y[:-1])
        coins = previous_masks.sample_coins(self, x.shape[0] - 1, sample_prob)
        logits, dist = self._run(x, y[0], gt_prev, coins, train)
        return {"logits": jnp.swapaxes(logits, 0, 1), "distance": jnp.swapaxes(dist, 0, 1)}

    def predict_clip(self, frames: jax.Array, mask0: jax.Array) -> jax.Array:
        """Offline inference on a whole clip (eval-mode BatchNorm), feeding back predictions.

        Args:
          frames: uint8 or float in [0, 255], [N, T, H, W, 3], T >= 2 (N = objects).
          mask0: float [N, H, W, 1] first masks (0/1).

        Returns:
          logits f32[N, T-1, H, W, 1] of frames 1..T-1; every frame's output depends on every
          frame of the clip (the backward memories run from the last frame).
        """
        self._check(frames, mask0)
        x = jnp.swapaxes(normalize_frames(frames, self.dtype), 0, 1)
        n = x.shape[0] - 1
        unused_gt = jnp.zeros((n, *mask0.shape), jnp.float32)
        logits, _ = self._run(x, mask0.astype(jnp.float32), unused_gt, jnp.ones((n,), bool), False)
        return jnp.swapaxes(logits, 0, 1)


FAMILY = Family(
    name="bi_hs2s",
    model=BiHS2S,
    loss=losses.segmentation_loss,
    prediction="clip",
    # No authors' file exists; HS2S's layout lets these weights convert and export the same way.
    checkpoint=StateDictLayout("bi_hs2s", container="model", data_parallel=True),
    # Both encoders are HS2S's, under the same names: the same torchvision mapping.
    init_backbones=hs2s.FAMILY.init_backbones,
    tiny={"width_divisor": 16, "blocks": (1, 1, 1, 1)},
)
