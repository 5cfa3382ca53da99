"""Position-sensitive axial self-attention (Wang et al. 2020, Axial-DeepLab), one axis per layer.

For one line x_0..x_{L-1} [L, Cin] along `axis` (every column for 'height', every row for
'width'), per head g with q_i, k_i [gp/2] and v_i [gp] (gp = features / heads):

    qkv = BN_qkv(x W)                         W [Cin, 2*features], no bias
    s_ij = BN(q_i.k_j) + BN(q_i.rq[i-j]) + BN(k_j.rk[j-i])      (one BN over 3*heads channels)
    a_ij = softmax_j(s_ij)
    y_i  = BN(sum_j a_ij v_j) + BN(sum_j a_ij rv[i-j])          (one BN over 2*features channels)

rq, rk, rv are the rows [0, gp/2), [gp/2, gp), [gp, 2gp) of one table `relative`
[2*gp, 2L-1] shared by the heads, column (offset + L - 1): the query and value embeddings are
read at query-minus-key, the key embedding at key-minus-query. The span is global (the whole
axis), so the table's shape fixes L: parameters are tied to the input size they were created at.

Channel layouts follow the reference (github.com/csrhddlam/axial-deeplab, lib/models/axialnet.py,
AxialAttention) so its weights map one to one: qkv channel g*2gp + d with d = [q | k | v];
bn_similarity channel term*heads + g, terms (qk, qr, kr); bn_output channel 2*(g*gp + c) + t,
t = 0 for a.v and 1 for a.rv. Submodule names are the reference's torch keys (qkv_transform,
bn_qkv, bn_similarity, bn_output, relative); qkv_transform/kernel is the Conv1d weight (O, I, 1)
squeezed and transposed to (I, O).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rnn_vos_jax.models.layers import BatchNorm

AXES = ("height", "width")


class AxialAttention(nn.Module):
    """Multi-head self-attention along one spatial axis, with relative position terms.

    Attributes:
      features: output channels (the reference's out_planes); also the q/k/v width.
      heads: attention heads (the reference's groups); features // heads must be even.
      span: the attended axis length, or None for the input's; a given span must equal it
        (the attention is global along the axis).
      axis: 'height' (attend within each column) or 'width' (within each row).
      stride: s > 1 average-pools the output s x s (both axes, as the reference).
      dtype: compute dtype; similarities, their BatchNorm and the softmax stay float32.
      precision: lax precision of the products.
    """

    features: int
    heads: int = 8
    span: int | None = None
    axis: str = "height"
    stride: int = 1
    dtype: Any = jnp.float32
    precision: Any = None

    def group_planes(self) -> int:
        """Channels per head (q/k get half each, v all); raises unless a positive even split."""
        gp, rem = divmod(self.features, self.heads)
        if rem or gp < 2 or gp % 2:
            raise ValueError(
                f"AxialAttention needs features / heads even and >= 2 (q/k take half of each "
                f"head), got features={self.features}, heads={self.heads}"
            )
        return gp

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """x [N,H,W,Cin] -> [N,H/stride,W/stride,features] (not ReLU'd)."""
        if self.axis not in AXES:
            raise ValueError(f"axis must be one of {AXES}, got {self.axis!r}")
        gp, g = self.group_planes(), self.heads
        # Attend along axis 1; the other spatial axis joins the batch.
        if self.axis == "width":
            x = jnp.swapaxes(x, 1, 2)
        n, length, other, _ = x.shape
        if self.span is not None and self.span != length:
            raise ValueError(
                f"span={self.span} must equal the {self.axis} of the input (global axial "
                f"attention), got {length} from input shape {x.shape}"
            )
        init = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
        qkv = nn.Dense(
            2 * self.features,
            use_bias=False,
            kernel_init=init,
            dtype=self.dtype,
            precision=self.precision,
            name="qkv_transform",
        )(x.astype(self.dtype))
        qkv = BatchNorm(dtype=self.dtype, name="bn_qkv")(qkv, train)
        qkv = qkv.reshape(n, length, other, g, 2 * gp)
        q, k, v = jnp.split(qkv, [gp // 2, gp], axis=-1)

        table_shape = (2 * gp, 2 * length - 1)
        if self.has_variable("params", "relative"):
            have = self.get_variable("params", "relative").shape
            if have != table_shape:
                raise ValueError(
                    f"relative table {have} was made for {self.axis} {(have[1] + 1) // 2}, the "
                    f"input has {length}: axial parameters are tied to their training resolution"
                )
        relative = self.param(
            "relative", nn.initializers.normal(np.sqrt(1.0 / gp)), table_shape, jnp.float32
        )
        # emb[:, i, j] = relative[:, i - j + L - 1] (i the query, j the key position).
        offsets = np.arange(length)[:, None] - np.arange(length)[None, :] + length - 1
        emb = relative.astype(self.dtype)[:, offsets]
        q_emb, k_emb, v_emb = jnp.split(emb, [gp // 2, gp], axis=0)

        f32 = {"precision": self.precision, "preferred_element_type": jnp.float32}
        qk = jnp.einsum("niogc,njogc->noijg", q, k, **f32)
        qr = jnp.einsum("niogc,cij->noijg", q, q_emb, **f32)
        # Key at j against offset j - i: emb[:, j, i].
        kr = jnp.einsum("njogc,cji->noijg", k, k_emb, **f32)
        sim = BatchNorm(dtype=jnp.float32, name="bn_similarity")(
            jnp.concatenate([qk, qr, kr], axis=-1), train
        )
        sim = sim.reshape(*sim.shape[:-1], 3, g).sum(axis=-2)
        attn = jax.nn.softmax(sim, axis=3).astype(self.dtype)

        sv = jnp.einsum("noijg,njogc->niogc", attn, v, **f32)
        sve = jnp.einsum("noijg,cij->niogc", attn, v_emb, **f32)
        out = jnp.stack([sv, sve], axis=-1).astype(self.dtype)
        out = out.reshape(n, length, other, 2 * self.features)
        out = BatchNorm(dtype=self.dtype, name="bn_output")(out, train)
        out = out.reshape(n, length, other, self.features, 2).sum(axis=-1)

        if self.axis == "width":
            out = jnp.swapaxes(out, 1, 2)
        if self.stride > 1:
            s = (self.stride, self.stride)
            out = nn.avg_pool(out, s, strides=s, padding="VALID")
        return out
