"""``depthwise_conv2d``: its CPU path (shifted products) and its GPU/TPU path (the native grouped
convolution) agree with XLA's grouped convolution, in both autodiff modes and in bf16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.nn.conv import _native, _shifted_products, depthwise_conv2d


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

    @jax.jit  # one program: op-by-op dispatch compiles each of the k*k shifted products
    def values_and_grads(x, w):
        convs = (depthwise_conv2d, grouped_conv)
        return [(conv(x, w), jax.grad(lambda x, w: loss(conv, x, w), argnums=(0, 1))(x, w)) for conv in convs]

    (out, ours), (expected, theirs) = values_and_grads(x, w)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_bfloat16_gradients_keep_dtypes():
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 8)).astype(jnp.bfloat16)
    w = jax.random.normal(jax.random.key(1), (3, 3, 1, 8)).astype(jnp.bfloat16)
    dx, dw = jax.jit(jax.grad(lambda x, w: depthwise_conv2d(x, w).astype(jnp.float32).sum(), argnums=(0, 1)))(x, w)
    assert dx.dtype == dw.dtype == jnp.bfloat16
    _, dw_ref = jax.jit(jax.grad(lambda x, w: grouped_conv(x, w).astype(jnp.float32).sum(), argnums=(0, 1)))(
        x.astype(jnp.float32), w.astype(jnp.float32)
    )
    np.testing.assert_allclose(np.asarray(dw, np.float32), dw_ref, rtol=2e-2, atol=5e-2)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
def test_native_branch_matches_cpu_branch(dtype):
    """The branch GPUs and TPUs lower to, run here on CPU against the CPU branch."""
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 4)).astype(dtype)
    w = jax.random.normal(jax.random.key(1), (5, 5, 1, 4)).astype(dtype)
    loss = lambda conv: lambda x, w: (conv(x, w).astype(jnp.float32) * jnp.cos(x.astype(jnp.float32))).sum()  # noqa: E731
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == jnp.float32 else dict(rtol=2e-2, atol=3e-2)
    native, shifted = jax.jit(lambda x, w: (_native(x, w), _shifted_products(x, w)))(x, w)
    np.testing.assert_allclose(np.asarray(native, np.float32), np.asarray(shifted, np.float32), **tol)
    grads = jax.jit(lambda x, w: [jax.grad(loss(conv), (0, 1))(x, w) for conv in (_native, _shifted_products)])
    for a, b in zip(*grads(x, w)):
        scale = float(jnp.abs(b.astype(jnp.float32)).max())
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=tol["rtol"], atol=tol["atol"] * scale)


def test_bf16_accumulates_in_float32():
    """A 5x5 bf16 conv is within bf16 output rounding of the float32 conv of the same inputs
    (accumulating the 25 products in bf16 was off by ~0.1)."""
    x = (jax.random.normal(jax.random.key(0), (2, 16, 16, 8)) * 4).astype(jnp.bfloat16)
    w = jax.random.normal(jax.random.key(1), (5, 5, 1, 8)).astype(jnp.bfloat16)
    exact = jax.jit(grouped_conv)(x.astype(jnp.float32), w.astype(jnp.float32))
    got = jax.jit(depthwise_conv2d)(x, w).astype(jnp.float32)
    np.testing.assert_allclose(got, exact, rtol=8e-3, atol=1e-2)


def test_jvp_and_hessian_through_depthwise_conv():
    x = jax.random.normal(jax.random.key(0), (1, 4, 4, 2))
    w = jax.random.normal(jax.random.key(1), (3, 3, 1, 2))
    dx = jnp.sin(x)
    f = lambda w: jnp.tanh(depthwise_conv2d(x, w)).sum()  # noqa: E731

    @jax.jit  # both platform branches are traced and differentiated (the native one too)
    def derivatives(x, dx, w):
        return jax.jvp(lambda a: depthwise_conv2d(a, w), (x,), (dx,))[1], jax.hessian(f)(w), jax.jacrev(jax.jacrev(f))(w)

    tangent, hessian, reverse_reverse = derivatives(x, dx, w)
    np.testing.assert_allclose(tangent, grouped_conv(dx, w), rtol=1e-5, atol=1e-5)  # linear in x
    np.testing.assert_allclose(hessian, reverse_reverse, rtol=1e-4, atol=1e-5)
