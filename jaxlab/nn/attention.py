"""Multi-head self-attention with a fused, head-major qkv projection."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlab.nn.linear import dense_general


class MultiHeadSelfAttention(nn.Module):
    """timm-style ``Attention``: ``[N, T, D] -> [N, T, D]``.

    The qkv kernel is ``[D, 3, heads, head_dim]`` (the reference's ``[3D, D]`` Linear,
    whose outputs are ``[q | k | v]``, each head-major), so heads can be sharded on a
    tensor-parallel mesh axis. The output projection kernel is ``[heads, head_dim, D]``.
    """

    num_heads: int
    qkv_bias: bool = True
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        d = x.shape[-1]
        if d % self.num_heads:
            raise ValueError(f"width {d} is not divisible by num_heads={self.num_heads}")
        head_dim = d // self.num_heads
        # DenseGeneral initialises the flat [D, 3D] / [D, D] view: Xavier as in the reference.
        qkv = dense_general(
            (3, self.num_heads, head_dim),
            ("embed", None, "heads", "kv"),
            use_bias=self.qkv_bias,
            dtype=self.dtype,
            name="qkv",
        )(x)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        q = nn.with_logical_constraint(q, ("batch", "length", "heads", "kv"))
        out = jax.nn.dot_product_attention(q, k, v, mask=mask)
        return dense_general(
            d, ("heads", "kv", "embed"), axis=(-2, -1), dtype=self.dtype, name="proj"
        )(out)
