"""``weight_dot_general`` (the Dense layers' product): its CPU form's product and gradients equal ``lax.dot_general``'s."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.nn.linear import _cpu_weight_dot_general, dense, dense_general, weight_dot_general

PLAIN = ((), ())
CASES = {
    # x [.., K] @ kernel [K, N] with x smaller than the output (kernel grad contracts x first) ...
    "dense, x smaller": ((4, 5, 6), (6, 7), (((2,), (0,)), PLAIN)),
    # ... and larger than it (the grad is formed transposed, then transposed back)
    "dense, x larger": ((4, 5, 12), (12, 3), (((2,), (0,)), PLAIN)),
    "two contracted dims": ((4, 5, 3, 4), (3, 4, 2), (((2, 3), (0, 1)), PLAIN)),
    "contracted dims out of order": ((4, 5, 3, 4), (4, 3, 7), (((3, 2), (0, 1)), PLAIN)),
    "contracted dims out of order, x larger": ((4, 5, 3, 4), (4, 3, 2), (((3, 2), (0, 1)), PLAIN)),
    "several output dims": ((8, 6), (6, 2, 3), (((1,), (0,)), PLAIN)),
    "batch dims (autodiff's rule)": ((2, 8, 6), (2, 6, 3), (((2,), (1,)), ((0,), (0,)))),
}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_lax_dot_general(case, dtype):
    x_shape, k_shape, dims = CASES[case]
    kx, kk, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, x_shape).astype(dtype)
    kernel = jax.random.normal(kk, k_shape).astype(dtype)
    expected, vjp = jax.vjp(lambda a, b: jax.lax.dot_general(a, b, dims), x, kernel)
    got, our_vjp = jax.vjp(lambda a, b: _cpu_weight_dot_general(a, b, dims, None, None), x, kernel)
    g = jax.random.normal(kg, expected.shape).astype(dtype)
    tol = dict(rtol=2e-2, atol=5e-2) if dtype == jnp.bfloat16 else dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(expected, np.float32))
    for ours, theirs in zip(jax.jit(our_vjp)(g), vjp(g)):
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
        np.testing.assert_allclose(np.asarray(ours, np.float32), np.asarray(theirs, np.float32), **tol)


def test_dense_layers_use_it_with_unchanged_params():
    x = jax.random.normal(jax.random.key(1), (2, 5, 3, 4))
    layers = [dense(7, ("embed", "mlp")), dense_general(6, ("heads", "kv", "embed"), axis=(-2, -1))]
    for layer in layers:
        assert layer.dot_general is weight_dot_general
        params = nn.unbox(layer.init(jax.random.key(0), x))
        reference = layer.clone(dot_general=None)

        def loss(p, m):
            return (m.apply(p, x) ** 2).sum()

        for ours, theirs in zip(jax.tree.leaves(jax.grad(loss)(params, layer)), jax.tree.leaves(jax.grad(loss)(params, reference))):
            np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
