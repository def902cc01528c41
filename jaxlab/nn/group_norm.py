"""Group normalisation over channels-last feature maps, with PyTorch's numerics."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlab.nn.linear import logical_init

ones = nn.initializers.ones_init()
zeros = nn.initializers.zeros_init()


def group_count(channels: int, num_groups: int = 32, min_channels_per_group: int = 4) -> int:
    """``min(num_groups, channels // min_channels_per_group)``: the EDM / DiC group rule."""
    return min(num_groups, channels // min_channels_per_group)


class GroupNorm(nn.Module):
    """``torch.nn.functional.group_norm`` with affine ``scale``/``bias`` on ``[N, ..., C]``.

    Groups are contiguous channel blocks (channel ``c`` is in group ``c // (C / G)``), as in
    PyTorch, so NCHW weights carry over unchanged. Statistics are taken over all non-batch
    axes of each group in float32 with a two-pass (biased) variance; the result is cast to
    ``dtype``. ``scale``/``bias`` are ``[C]`` float32 named ``axis_name``.
    """

    num_groups: int
    epsilon: float = 1e-5
    dtype: jnp.dtype = jnp.float32
    axis_name: str | None = "embed"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        g = self.num_groups
        if g < 1 or c % g:
            raise ValueError(f"GroupNorm: {c} channels cannot be split into num_groups={g} equal groups")
        scale = self.param("scale", logical_init(ones, (self.axis_name,)), (c,), jnp.float32)
        bias = self.param("bias", logical_init(zeros, (self.axis_name,)), (c,), jnp.float32)
        x_grouped = x.astype(jnp.float32).reshape(*x.shape[:-1], g, c // g)
        reduce = tuple(range(1, x.ndim - 1)) + (x.ndim,)  # spatial axes + channels within a group
        mean = jnp.mean(x_grouped, axis=reduce, keepdims=True)
        centered = x_grouped - mean
        var = jnp.mean(jnp.square(centered), axis=reduce, keepdims=True)
        y = (centered * jax.lax.rsqrt(var + self.epsilon)).reshape(x.shape)
        return (y * scale + bias).astype(self.dtype)
