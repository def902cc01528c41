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
) -> nn.Conv:
    """A stride-1 ``nn.Conv`` on NHWC with PyTorch's ``padding=kernel_size // 2`` (odd kernels).

    The kernel is HWIO ``[k, k, in / groups, out]``; ``axes`` names its (in, out) dims, the
    spatial dims are unnamed. The bias takes the output name. ``groups`` is PyTorch's
    ``groups`` (``groups == in == out``: depthwise). ``xavier_uniform`` on an HWIO kernel has
    PyTorch's fans (``in/groups * k * k``, ``out * k * k``).
    """
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size={kernel_size} must be odd for 'same' padding")
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
