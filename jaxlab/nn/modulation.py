"""Adaptive layer norm (adaLN) conditioning."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlab.nn.conv import conv2d
from jaxlab.nn.linear import dense, logical_init, zeros


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """``x * (1 + scale) + shift``: ``[N, D]`` shift/scale broadcast over the middle axes of ``x``.

    ``x`` is ``[N, T, D]`` (tokens) or ``[N, H, W, D]`` (feature maps).
    """
    middle = (1,) * (x.ndim - 2)
    n, d = shift.shape
    return x * (1 + scale.reshape(n, *middle, d)) + shift.reshape(n, *middle, d)


def layer_norm_no_affine(dtype=jnp.float32, epsilon: float = 1e-6, name: str | None = None) -> nn.LayerNorm:
    """LayerNorm without scale/bias (PyTorch ``elementwise_affine=False``); stats in float32."""
    return nn.LayerNorm(epsilon=epsilon, use_scale=False, use_bias=False, dtype=dtype, name=name)


def group_count(channels: int, num_groups: int = 32, min_channels_per_group: int = 4) -> int:
    """``min(num_groups, channels // min_channels_per_group)``: the EDM / DiC group rule."""
    return min(num_groups, channels // min_channels_per_group)


def group_norm(
    num_groups: int, epsilon: float, dtype=jnp.float32, name: str | None = None, axis_name: str | None = "embed"
) -> nn.GroupNorm:
    """``torch.nn.GroupNorm`` numerics as ``flax.linen.GroupNorm``: on ``[N, ..., C]``, groups are
    contiguous channel blocks (NCHW weights carry over unchanged), statistics over all non-batch
    axes of each group in float32 with a two-pass (biased) variance (``use_fast_variance=False``),
    the result in ``dtype``. ``scale``/``bias`` are ``[C]`` float32 named ``axis_name``."""
    return nn.GroupNorm(
        num_groups=num_groups, epsilon=epsilon, dtype=dtype, use_fast_variance=False,
        scale_init=logical_init(nn.initializers.ones_init(), (axis_name,)),
        bias_init=logical_init(nn.initializers.zeros_init(), (axis_name,)), name=name,
    )


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


class ConvFinalLayer(nn.Module):
    """The final layer of the convolutional backbones (U-DiT, DiC): ``[N, H, W, D], [N, D] -> [N, H, W, out]``.

    LayerNorm over channels (no affine, eps 1e-6), adaLN (shift, scale), zero-initialised 3x3 conv.
    """

    out_channels: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_NHWD: jax.Array, c_ND: jax.Array) -> jax.Array:
        shift, scale = AdaLNModulation(2, dtype=self.dtype, name="adaLN_modulation")(c_ND)
        h = modulate(layer_norm_no_affine(self.dtype, name="norm_final")(x_NHWD), shift, scale)
        return conv2d(self.out_channels, ("embed", None), kernel_init=zeros, dtype=self.dtype, name="out_proj")(h)
