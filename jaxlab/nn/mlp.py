"""Transformer MLP."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlab.nn.linear import dense


class Mlp(nn.Module):
    """fc1 -> GELU (tanh approximation) -> fc2, as timm's ``Mlp`` with ``approximate="tanh"``.

    ``[..., D] -> [..., out_features or D]``.
    """

    hidden_features: int
    out_features: int | None = None
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        out = self.out_features or x.shape[-1]
        h = dense(self.hidden_features, ("embed", "mlp"), dtype=self.dtype, name="fc1")(x)
        h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
        h = jax.nn.gelu(h, approximate=True)
        return dense(out, ("mlp", "embed"), dtype=self.dtype, name="fc2")(h)
