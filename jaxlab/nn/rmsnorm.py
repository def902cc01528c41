"""RMSNorm with a learned scale (Llama / OLMo / LLaDA ``RMSLayerNorm``)."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlab.nn.linear import logical_init


class RMSNorm(nn.Module):
    """``y = scale * x / sqrt(mean(x^2) + eps)`` over the last axis; ``[..., D] -> [..., D]``.

    The statistics are computed in float32 whatever the input dtype; the normalised value is cast
    back to the input dtype before the (float32-stored) ``scale [D]`` is applied, as the
    reference does. The output dtype is ``dtype``.
    """

    eps: float = 1e-5
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", logical_init(nn.initializers.ones_init(), ("embed",)), (x.shape[-1],), jnp.float32)
        x32 = x.astype(jnp.float32)
        variance = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        normed = (x32 * jax.lax.rsqrt(variance + self.eps)).astype(x.dtype)
        return scale.astype(self.dtype) * normed.astype(self.dtype)
