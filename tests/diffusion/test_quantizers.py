"""The codebook-free quantisers: values, straight-through gradients, code indices."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.diffusion.quantizers import binary_indices, binary_quantize, fsq_bound, fsq_indices, fsq_quantize


def test_binary_values_and_identity_gradient():
    z = jax.random.normal(jax.random.PRNGKey(0), (5, 6)).at[0, 0].set(0.0)
    q = binary_quantize(z)
    np.testing.assert_array_equal(q, np.where(np.asarray(z) >= 0, 1.0, -1.0))
    w = jax.random.normal(jax.random.PRNGKey(1), z.shape)
    grad = jax.grad(lambda z: jnp.sum(w * binary_quantize(z)))(z)
    np.testing.assert_allclose(grad, w)  # straight through: d q / d z = I


def test_binary_indices_are_a_bijection():
    codes = jnp.asarray(list(itertools.product([-1.0, 1.0], repeat=4)))
    idx = np.asarray(binary_indices(codes))
    assert sorted(idx.tolist()) == list(range(16))
    with pytest.raises(ValueError, match="D <= 30"):
        binary_indices(jnp.ones((2, 31)))


@pytest.mark.parametrize("levels", [(4, 5, 2), (8, 5, 5, 5)])
def test_fsq_levels_gradient_and_indices(levels):
    d = len(levels)
    z = jnp.linspace(-6.0, 6.0, 4001)[:, None] * jnp.ones((1, d))
    q = np.asarray(fsq_quantize(z, levels))
    half_width = np.asarray(levels) // 2
    for i, n in enumerate(levels):
        values = np.unique(q[:, i])
        assert len(values) == n, (i, values)  # every level is reached, no more
        np.testing.assert_allclose(values * half_width[i], np.round(values * half_width[i]), atol=1e-6)
        assert values.min() >= -1.0 and values.max() <= 1.0
    # Straight-through round: the gradient is the bound's, divided by the half width.
    x = jax.random.normal(jax.random.PRNGKey(2), (7, d))
    w = jax.random.normal(jax.random.PRNGKey(3), (7, d))
    grad = jax.grad(lambda x: jnp.sum(w * fsq_quantize(x, levels)))(x)
    expected = jax.grad(lambda x: jnp.sum(w * fsq_bound(x, levels) / half_width))(x)
    np.testing.assert_allclose(grad, expected, rtol=1e-6)
    assert np.all(np.abs(np.asarray(grad)) > 0)
    # Indices: every combination of the levels reached above <-> [0, prod(levels)), one to one.
    codes = jnp.asarray(list(itertools.product(*[np.unique(q[:, i]) for i in range(d)])), jnp.float32)
    idx = np.asarray(fsq_indices(codes, levels))
    assert len(codes) == int(np.prod(levels))
    assert sorted(idx.tolist()) == list(range(int(np.prod(levels))))


def test_fsq_bad_levels():
    with pytest.raises(ValueError, match="one level count per channel"):
        fsq_quantize(jnp.zeros((2, 3)), (5, 5))
    with pytest.raises(ValueError, match=">= 2"):
        fsq_quantize(jnp.zeros((2, 2)), (5, 1))
