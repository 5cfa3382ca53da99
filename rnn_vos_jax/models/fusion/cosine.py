"""Cosine-similarity matching (registry 'cosine'; HS2S_sim of the HS2S paper's Table 5 ablation).

Every query position p attends to every reference position j (global; 112 x 112 pairs at
1/32 and 448 x 448 at 1/16 for a 256x448 input):

    q_p = h_p / |h_p|, k_j = r_j / |r_j|          L2 over channels, |.| >= EPS
    S_pj = q_p . k_j
    agg_p = sum_j ReLU(S_pj) r_j / (sum_j ReLU(S_pj) + 1e-6)
    s_max_p = max_j S_pj
    fused = ReLU(conv1x1(cat[h, agg, s_max]))     2C + 1 -> features, init 'he_fan_out', bias 0

h = query [N,h,w,C], r = reference [N,h',w',C] (same C). The matching runs in float32 whatever
the compute dtype: bfloat16 cosines of 1024-channel vectors lose the ranking the max relies on.
Details (ReLU'd weights, the normaliser, the max channel) are our choices, not the paper's.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnn_vos_jax.models.layers import Conv

EPS = 1e-6  # smallest norm a feature vector is divided by (zero vectors stay zero)


def _unit(x: jax.Array) -> jax.Array:
    # rsqrt of a clamped square norm: finite gradients at zero vectors, unlike 1 / max(|x|, eps).
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, -1, keepdims=True), EPS * EPS))


class Cosine(nn.Module):
    """The cosine-similarity fusion block (registry 'cosine').

    Attributes:
      features: output channels.
      width_divisor: unused (the block has no inner width); part of the fusion interface.
      dtype: compute dtype of the output conv.
    """

    features: int
    width_divisor: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, query: jax.Array, reference: jax.Array, train: bool = False) -> jax.Array:
        """query [N,h,w,C], reference [N,h',w',C] -> [N,h,w,features] (ReLU'd)."""
        del train  # no BatchNorm
        if query.shape[-1] != reference.shape[-1] or query.shape[0] != reference.shape[0]:
            raise ValueError(
                "cosine fusion needs query and reference of the same batch and channel width, "
                f"got query {query.shape} and reference {reference.shape}"
            )
        n, h, w, c = query.shape
        hq = query.astype(jnp.float32).reshape(n, h * w, c)
        r = reference.astype(jnp.float32).reshape(n, -1, c)
        hi = jax.lax.Precision.HIGHEST
        sim = jnp.einsum("npc,njc->npj", _unit(hq), _unit(r), precision=hi)
        weights = nn.relu(sim)
        agg = jnp.einsum("npj,njc->npc", weights, r, precision=hi)
        agg = agg / (jnp.sum(weights, -1, keepdims=True) + 1e-6)
        s_max = jnp.max(sim, -1, keepdims=True)
        x = jnp.concatenate([hq, agg, s_max], -1).reshape(n, h, w, 2 * c + 1)
        init = {"kernel_init": "he_fan_out", "bias_init": "zeros", "dtype": self.dtype}
        return nn.relu(Conv(self.features, 1, name="conv", **init)(x.astype(self.dtype)))
