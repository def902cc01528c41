"""Adaptive layer norm (adaLN) conditioning."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlab.nn.linear import dense, zeros


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """``x * (1 + scale) + shift`` with ``[N, D]`` shift/scale broadcast over the tokens of ``x [N, T, D]``."""
    return x * (1 + scale[:, None]) + shift[:, None]


def layer_norm_no_affine(dtype=jnp.float32, epsilon: float = 1e-6, name: str | None = None) -> nn.LayerNorm:
    """LayerNorm without scale/bias (PyTorch ``elementwise_affine=False``); stats in float32."""
    return nn.LayerNorm(epsilon=epsilon, use_scale=False, use_bias=False, dtype=dtype, name=name)


class AdaLNModulation(nn.Module):
    """``c [N, D] -> num_chunks`` tensors ``[N, D]``: SiLU, then a zero-initialised Linear, then chunked.

    Chunks are contiguous slices of the Linear output in order (e.g. shift, scale, gate).
    """

    num_chunks: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, c: jax.Array) -> tuple[jax.Array, ...]:
        d = c.shape[-1]
        m = dense(self.num_chunks * d, ("embed", "mlp"), kernel_init=zeros, dtype=self.dtype, name="linear")(nn.silu(c))
        return tuple(jnp.split(m, self.num_chunks, axis=-1))
