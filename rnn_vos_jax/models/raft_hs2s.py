"""RAFT-HS2S (paper B §3.3; no released code, spec §6): HS2S plus a RAFT flow head.

HS2S (models/hs2s.py) segments every frame exactly as before; beside it a RAFT flow head
(models/raft/) estimates the flow F_{t-1 -> t} between consecutive frames from HS2S's own
features, trained only by an unsupervised photometric loss added to the HS2S loss (multi-task;
the flow is not fed to the decoder [CHOSEN]). Per step t = 1..T-1:

  matching: g_t = match_proj(Enc(x_t, m_{t-1}).f8)      shared 1x1 512 -> 256 [CHOSEN]
            g_{t-1} from the previous step (carried); for t = 1, match_proj(Enc(x_0, y_0).f8)
  context:  c = context_proj(RefEnc(x_{t-1}, m_{t-1}).f8)   1x1 512 -> 256, split 128 / 128:
            net = tanh, inp = ReLU (RAFT's convention) [CHOSEN]
  flow:     flow_iters (12) RAFT iterations from zero flow on the 4-level, radius-4 correlation
            of g_{t-1} with g_t; convex x8 upsampling to the input size after each.

Outputs: HS2S's {'logits', 'distance'} plus 'flow' [B, T-1, flow_iters, H, W, 2] (pixels,
(x, y), frame t-1 -> t) for the photometric loss; streaming `step_outputs` also returns each
frame's final flow (Family.frame_outputs; evaluation writes it with config.eval.save_flow).
The carry is HS2S's plus 'prev_match' (g_{t-1}) and always 'prev_frame' (the context needs
RefEnc of frame t-1 whichever references the decoder matches).

Variable tree: HS2S's (unchanged names) plus match_proj, context_proj and update_block (RAFT's
module names, so config.model.raft_init loads a princeton-vl/RAFT update block). The RAFT-side
convs keep torch's default init, as RAFT. At 256x448 with ResNet-50: HS2S's 395,759,593 plus
3,383,616 parameters.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnn_vos_jax.models import hs2s, losses
from rnn_vos_jax.models.family import Family, FrameOutput
from rnn_vos_jax.models.layers import Conv, normalize_frames, scaled
from rnn_vos_jax.models.raft import flow_viz, photometric, weights
from rnn_vos_jax.models.raft.flow import estimate_flow
from rnn_vos_jax.models.raft.update import BasicUpdateBlock
from rnn_vos_jax.models.torch_layouts import StateDictLayout

Carry = dict[str, Any]


class RAFTHS2S(hs2s.HS2S):
    """HS2S with a RAFT flow head between consecutive frames (family contract: models/family.py).

    Attributes (besides HS2S's, whose defaults are unchanged):
      flow_iters: RAFT refinement iterations, in training and inference (RAFT's train default).
      corr_levels: levels of the correlation pyramid.
      corr_radius: lookup radius at every level.
      raft_width_divisor: divides the RAFT widths (update block, the 256-channel matching
        features and the 128 + 128 context); 1 = RAFT's, which raft_init needs.
    """

    flow_iters: int = 12
    corr_levels: int = 4
    corr_radius: int = 4
    raft_width_divisor: int = 1

    def setup(self):
        super().setup()
        d = self.raft_width_divisor
        self.match_proj = Conv(scaled(256, d), 1, padding=0, dtype=self.dtype)
        self.context_proj = Conv(2 * scaled(128, d), 1, padding=0, dtype=self.dtype)
        self.update_block = BasicUpdateBlock(d, self.dtype)

    def _match(self, enc: dict[str, jax.Array]) -> jax.Array:
        return self.match_proj(enc["f8"]).astype(jnp.float32)

    def _start(self, x0: jax.Array, y0: jax.Array, train: bool) -> Carry:
        carry = super()._start(x0, y0, train)
        carry["prev_match"] = self._match(self.encoder(x0, y0, train))
        carry["prev_frame"] = x0
        return carry

    def _flow(self, prev_match: jax.Array, match: jax.Array, prev: dict) -> jax.Array:
        """[N, flow_iters, H, W, 2] flows from frame t-1 (prev_match) to frame t (match)."""
        net, inp = jnp.split(self.context_proj(prev["f8"]), 2, axis=-1)
        flows, _ = estimate_flow(
            self.update_block,
            prev_match,
            match,
            jnp.tanh(net.astype(jnp.float32)),
            nn.relu(inp),
            iters=self.flow_iters,
            levels=self.corr_levels,
            radius=self.corr_radius,
        )
        return flows

    def _step(self, carry: Carry, x: jax.Array, mask: jax.Array, train: bool):
        prev, enc = self._encode(carry, x, mask, train)
        match = self._match(enc)
        flows = self._flow(carry["prev_match"], match, prev)
        carry, out = self._segment(carry, x, prev, enc, train)
        return dict(carry, prev_match=match), {**out, "flow": flows}

    def _check(self, frames: jax.Array, masks: jax.Array, time_axis: bool) -> None:
        super()._check(frames, masks, time_axis)
        f8 = min(frames.shape[-3], frames.shape[-2]) // 8
        if f8 < 2 ** (self.corr_levels - 1):
            raise ValueError(
                f"RAFT-HS2S: frames {frames.shape[-3]}x{frames.shape[-2]} give a 1/8 map too small "
                f"for corr_levels={self.corr_levels} (each level halves it)"
            )

    def step_outputs(
        self, carry: Carry, frame: jax.Array
    ) -> tuple[Carry, jax.Array, dict[str, jax.Array]]:
        """`step` plus this frame's flow: (carry, logits f32[N,H,W,1], {'flow': f32[N,H,W,2]}).

        The flow is the last iteration's, from the previous frame to this one, in pixels (x, y)
        of the model's input size.
        """
        mask = carry["prev_pred"]
        self._check(frame, mask, time_axis=False)
        carry, out = self._step(carry, normalize_frames(frame, self.dtype), mask, False)
        return carry, out["logits"], {"flow": out["flow"][:, -1]}


def loss(
    outputs: dict[str, jax.Array],
    batch: dict[str, jax.Array],
    *,
    photo_weight: float = 1.0,
    photo_gamma: float = 0.8,
    **seg_config,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """HS2S's loss + photo_weight * the photometric loss of every flow iteration.

    Args:
      outputs: RAFTHS2S outputs ('logits', 'distance', 'flow' [B,T-1,iters,H,W,2]).
      batch: frames uint8 [B,T,H,W,3], masks, distance, valid (Family.loss).
      photo_weight: weight of the photometric term (the paper gives none; 1.0 [CHOSEN]).
      photo_gamma: RAFT's iteration decay (weights normalised to sum 1).
      **seg_config: losses.sequence_loss keywords (config.train.loss).

    Returns:
      (loss, {'bce', 'jaccard', 'distance', 'photo'}).
    """
    seg, parts = losses.segmentation_loss(outputs, batch, **seg_config)
    photo = photometric.sequence_photometric_loss(
        batch["frames"], outputs["flow"], batch["valid"], photo_gamma
    )
    return seg + photo_weight * photo, {**parts, "photo": photo}


FAMILY = Family(
    name="raft_hs2s",
    model=RAFTHS2S,
    loss=loss,
    prediction="streaming",
    # No authors' file exists; HS2S's layout with the RAFT modules beside its own.
    checkpoint=StateDictLayout("raft_hs2s", container="model", data_parallel=True),
    init_backbones=hs2s.FAMILY.init_backbones,
    tiny={
        **hs2s.FAMILY.tiny,
        "raft_width_divisor": 8,
        "flow_iters": 2,
        "corr_levels": 2,
        "corr_radius": 2,
    },
    config_only_keys=("backbone_init", "raft_init"),
    fed_back_mask=hs2s.FAMILY.fed_back_mask,
    frame_outputs={
        "flow": FrameOutput(switch="save_flow", folder="Flow", encode=flow_viz.png_bytes)
    },
    init_files={"raft_init": weights.init_update_block},
)
