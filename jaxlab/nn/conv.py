"""2-D convolutions with logical axis names, and pixel (un)shuffle on NHWC images.

Channel order: ``pixel_unshuffle`` / ``pixel_shuffle`` use PyTorch's order (output channel
``c * r * r + dy * r + dx``), so convolution weights converted from a PyTorch model that uses
``nn.PixelShuffle`` / ``nn.PixelUnshuffle`` need only the usual OIHW -> HWIO transpose.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlab.nn.linear import Initializer, logical_init, xavier_uniform, zeros


def conv2d(
    features: int,
    axes: tuple[str | None, str | None],
    *,
    kernel_size: int = 3,
    groups: int = 1,
    dtype=jnp.float32,
    use_bias: bool = True,
    kernel_init: Initializer = xavier_uniform(),
    bias_init: Initializer = zeros,
    name: str | None = None,
) -> nn.Module:
    """A stride-1 convolution on NHWC with PyTorch's ``padding=kernel_size // 2`` (odd kernels).

    The kernel is HWIO ``[k, k, in / groups, out]``; ``axes`` names its (in, out) dims, the
    spatial dims are unnamed. The bias takes the output name. ``groups`` is PyTorch's
    ``groups``; ``groups == features`` (> 1) is a depthwise conv (``in == out == groups``),
    computed by ``DepthwiseConv2D``. ``xavier_uniform`` on an HWIO kernel has PyTorch's fans
    (``in/groups * k * k``, ``out * k * k``).
    """
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size={kernel_size} must be odd for 'same' padding")
    if groups > 1 and groups == features:
        return DepthwiseConv2D(
            features,
            kernel_size,
            use_bias=use_bias,
            dtype=dtype,
            kernel_init=logical_init(kernel_init, (None, None, *axes)),
            bias_init=logical_init(bias_init, axes[-1:]),
            name=name,
        )
    return nn.Conv(
        features,
        (kernel_size, kernel_size),
        padding=kernel_size // 2,
        feature_group_count=groups,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=logical_init(kernel_init, (None, None, *axes)),
        bias_init=logical_init(bias_init, axes[-1:]),
        name=name,
    )


class DepthwiseConv2D(nn.Module):
    """Depthwise ``k x k`` conv, stride 1, 'same' padding: ``[N, H, W, C] -> [N, H, W, C]``.

    Parameters as ``nn.Conv(C, (k, k), feature_group_count=C)``: ``kernel [k, k, 1, C]``, ``bias [C]``.
    """

    features: int
    kernel_size: int
    use_bias: bool = True
    dtype: jnp.dtype = jnp.float32
    kernel_init: Initializer = xavier_uniform()
    bias_init: Initializer = zeros

    @nn.compact
    def __call__(self, x_NHWC: jax.Array) -> jax.Array:
        if x_NHWC.shape[-1] != self.features:
            raise ValueError(f"depthwise conv with {self.features} channels got an input of {x_NHWC.shape[-1]}")
        k = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (k, k, 1, self.features), jnp.float32)
        y = depthwise_conv2d(x_NHWC.astype(self.dtype), kernel.astype(self.dtype))
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,), jnp.float32).astype(self.dtype)
        return y


def depthwise_conv2d(x_NHWC: jax.Array, kernel: jax.Array) -> jax.Array:
    """``y[n, h, w, c] = sum_ij x[n, h + i - p, w + j - p, c] * kernel[i, j, 0, c]`` (zero padding p = k // 2).

    XLA:CPU runs grouped convolutions 20-40x slower than ``_shifted_products`` (which it fuses
    into one loop); GPUs and TPUs keep their native depthwise convolution. The choice is made
    when the program is lowered (``jax.lax.platform_dependent``). Both accumulate in float32.
    """
    return jax.lax.platform_dependent(x_NHWC, kernel, cpu=_shifted_products, default=_native)


def _native(x: jax.Array, w: jax.Array) -> jax.Array:
    """XLA's grouped convolution (``feature_group_count = C``), float32 accumulation."""
    return jax.lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=x.shape[-1],
        preferred_element_type=jnp.float32,
    ).astype(x.dtype)


def _shifted_products(x: jax.Array, w: jax.Array) -> jax.Array:
    """The depthwise conv as k*k shifted products, accumulated in float32, in ``x.dtype``.

    Plain autodiff (no custom VJP), so forward mode (``jax.jvp``, ``jax.hessian``) works and remat
    sees the same program as elsewhere. A custom VJP (input gradient = the same sum with the
    flipped kernel) ran the 3x3 backward ~1.2-2x faster on XLA:CPU but broke forward mode; JAX
    has no public custom transpose that would give both.
    """
    k = w.shape[0]
    p, (h, wd) = k // 2, x.shape[1:3]
    xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    w32 = w.astype(jnp.float32)
    total = sum(xp[:, i : i + h, j : j + wd, :].astype(jnp.float32) * w32[i, j, 0] for i in range(k) for j in range(k))
    return total.astype(x.dtype)


def pixel_unshuffle(x: jax.Array, factor: int) -> jax.Array:
    """Space-to-depth, as ``torch.nn.PixelUnshuffle`` on NHWC.

    ``[N, H, W, C] -> [N, H/r, W/r, C*r*r]``; output channel ``c*r*r + dy*r + dx`` holds input
    channel ``c`` at offset ``(dy, dx)`` of each ``r x r`` cell.
    """
    n, h, w, c = x.shape
    r = factor
    if h % r or w % r:
        raise ValueError(f"pixel_unshuffle: spatial size {h}x{w} is not divisible by factor {r}")
    x = x.reshape(n, h // r, r, w // r, r, c)  # [N, H/r, dy, W/r, dx, C]
    x = x.transpose(0, 1, 3, 5, 2, 4)  # [N, H/r, W/r, C, dy, dx]
    return x.reshape(n, h // r, w // r, c * r * r)


def pixel_shuffle(x: jax.Array, factor: int) -> jax.Array:
    """Depth-to-space, as ``torch.nn.PixelShuffle`` on NHWC; the inverse of ``pixel_unshuffle``.

    ``[N, H, W, C*r*r] -> [N, H*r, W*r, C]``.
    """
    n, h, w, crr = x.shape
    r = factor
    if crr % (r * r):
        raise ValueError(f"pixel_shuffle: {crr} channels are not divisible by factor**2 = {r * r}")
    c = crr // (r * r)
    x = x.reshape(n, h, w, c, r, r)  # [N, H, W, C, dy, dx]
    x = x.transpose(0, 1, 4, 2, 5, 3)  # [N, H, dy, W, dx, C]
    return x.reshape(n, h * r, w * r, c)
