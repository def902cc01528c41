"""Multi-head (grouped-query) self-attention with rotary positions and an optional KV cache."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlab.nn.attention import dot_product_attention
from jaxlab.nn.kv_cache import write_slice
from jaxlab.nn.linear import Initializer, dense_general
from jaxlab.nn.rope import apply_rope, rope_sin_cos


class RotaryAttention(nn.Module):
    """Llama-style attention: separate q/k/v projections, half-split RoPE, no causal mask.

    Kernels: ``q_proj [D, heads, hd]``, ``k_proj``/``v_proj [D, kv_heads, hd]``,
    ``attn_out [heads, hd, D]``. Query head ``n`` reads key/value head ``n // (heads / kv_heads)``
    (``repeat_interleave`` grouping). Scores are scaled by ``1/sqrt(hd)``.
    """

    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float = 10000.0
    use_bias: bool = False
    dtype: jnp.dtype = jnp.float32
    kernel_init: Initializer = nn.initializers.normal(0.02)
    out_kernel_init: Initializer = nn.initializers.normal(0.02)

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        positions: jax.Array,
        mask: jax.Array | None = None,
        cache: tuple[jax.Array, jax.Array] | None = None,
        offset: jax.Array | int = 0,
        write_mask: jax.Array | None = None,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
        """``x [B, T, D]`` at absolute ``positions [B or 1, T]`` -> ``([B, T, D], new cache)``.

        Without ``cache`` the T tokens attend to each other. With ``cache = (k, v)``, each
        ``[B, L, kv_heads, hd]``, the T tokens sit at rows ``offset .. offset + T - 1`` (their
        ``positions`` must be those rows): their keys/values are written there (where
        ``write_mask [B or 1, T]``), then the queries attend over all L cached rows.
        ``mask`` (bool, broadcastable to ``[B, heads, T, keys]``) hides keys where False.
        """
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
        d = x.shape[-1]
        kw = dict(use_bias=self.use_bias, dtype=self.dtype, kernel_init=self.kernel_init)
        q = dense_general((self.num_heads, self.head_dim), ("embed", "heads", "kv"), name="q_proj", **kw)(x)
        k = dense_general((self.num_kv_heads, self.head_dim), ("embed", "heads", "kv"), name="k_proj", **kw)(x)
        v = dense_general((self.num_kv_heads, self.head_dim), ("embed", "heads", "kv"), name="v_proj", **kw)(x)
        sin, cos = rope_sin_cos(positions, self.head_dim, self.rope_theta)
        q, k = apply_rope(q, sin, cos), apply_rope(k, sin, cos)
        q = nn.with_logical_constraint(q, ("batch", "length", "heads", "kv"))
        new_cache = None
        if cache is not None:
            k = write_slice(cache[0], k, offset, write_mask)
            v = write_slice(cache[1], v, offset, write_mask)
            new_cache = (k, v)
        out = dot_product_attention(q, k.astype(q.dtype), v.astype(q.dtype), mask=mask)
        out = dense_general(
            d, ("heads", "kv", "embed"), axis=(-2, -1), use_bias=self.use_bias, dtype=self.dtype,
            kernel_init=self.out_kernel_init, name="attn_out",
        )(out)
        return out, new_cache
