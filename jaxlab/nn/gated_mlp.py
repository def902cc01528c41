"""Gated (SwiGLU-style) transformer MLP."""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlab.nn.linear import Initializer, dense


class GatedMlp(nn.Module):
    """``down(act(gate(x)) * up(x))``: ``[..., D] -> [..., D]``.

    Kernels: ``gate``/``up`` ``[D, hidden]`` (axes ``embed, mlp``), ``down`` ``[hidden, D]``.
    LLaDA / Llama use ``act = silu``; LLaDA names them ``ff_proj`` (gate), ``up_proj``, ``ff_out``.
    """

    hidden_features: int
    activation: Callable[[jax.Array], jax.Array] = nn.silu
    use_bias: bool = False
    dtype: jnp.dtype = jnp.float32
    kernel_init: Initializer = nn.initializers.normal(0.02)
    out_kernel_init: Initializer = nn.initializers.normal(0.02)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        kw = dict(use_bias=self.use_bias, dtype=self.dtype, kernel_init=self.kernel_init)
        gate = dense(self.hidden_features, ("embed", "mlp"), name="gate", **kw)(x)
        up = dense(self.hidden_features, ("embed", "mlp"), name="up", **kw)(x)
        h = self.activation(gate) * up
        h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
        return dense(
            d, ("mlp", "embed"), use_bias=self.use_bias, dtype=self.dtype, kernel_init=self.out_kernel_init, name="down"
        )(h)
