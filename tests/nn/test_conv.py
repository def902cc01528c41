"""``depthwise_conv2d`` (shifted products with a written-out VJP on CPU) equals XLA's grouped convolution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.nn.conv import depthwise_conv2d


def grouped_conv(x, w):
    return jax.lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=x.shape[-1]
    )


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_values_and_gradients_match_grouped_conv(kernel_size):
    kx, kw = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (2, 6, 5, 3))
    w = jax.random.normal(kw, (kernel_size, kernel_size, 1, 3))

    def loss(conv, x, w):  # a non-uniform cotangent, so every tap and border is checked
        return (conv(x, w) * jnp.sin(jnp.arange(x.size).reshape(x.shape))).sum()

    np.testing.assert_allclose(depthwise_conv2d(x, w), grouped_conv(x, w), rtol=1e-5, atol=1e-5)
    ours = jax.jit(jax.grad(lambda x, w: loss(depthwise_conv2d, x, w), argnums=(0, 1)))(x, w)
    theirs = jax.grad(lambda x, w: loss(grouped_conv, x, w), argnums=(0, 1))(x, w)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_bfloat16_gradients_keep_dtypes():
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 8)).astype(jnp.bfloat16)
    w = jax.random.normal(jax.random.key(1), (3, 3, 1, 8)).astype(jnp.bfloat16)
    dx, dw = jax.grad(lambda x, w: depthwise_conv2d(x, w).astype(jnp.float32).sum(), argnums=(0, 1))(x, w)
    assert dx.dtype == dw.dtype == jnp.bfloat16
    _, dw_ref = jax.grad(lambda x, w: grouped_conv(x, w).astype(jnp.float32).sum(), argnums=(0, 1))(
        x.astype(jnp.float32), w.astype(jnp.float32)
    )
    np.testing.assert_allclose(np.asarray(dw, np.float32), dw_ref, rtol=2e-2, atol=5e-2)
