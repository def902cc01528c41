"""Dense layers: plain ``lax.dot_general`` products, so forward-mode autodiff works through them and
remat policies see their dots (the same program on every platform)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax._src.ad_checkpoint import saved_residuals

from jaxlab.nn.linear import dense, dense_general


def _layer_and_params():
    x = jax.random.normal(jax.random.key(1), (2, 5, 3, 4))
    layer = dense_general(6, ("heads", "kv", "embed"), axis=(-2, -1))
    return layer, nn.unbox(layer.init(jax.random.key(0), x)), x


def test_jvp_and_hessian_through_dense():
    layer, params, x = _layer_and_params()
    tangent = jnp.cos(x)
    out, jvp_out = jax.jvp(lambda a: layer.apply(params, a), (x,), (tangent,))
    expected = layer.apply(params, tangent) - layer.apply(params, jnp.zeros_like(x))  # affine in x
    np.testing.assert_allclose(jvp_out, expected, rtol=1e-5, atol=1e-5)

    mlp = dense(3, ("embed", "mlp"))
    p = nn.unbox(mlp.init(jax.random.key(2), x[0, 0, 0]))
    f = lambda v: jnp.tanh(mlp.apply(p, v)).sum()  # noqa: E731
    hess, reverse_reverse = jax.jit(lambda v: (jax.hessian(f)(v), jax.jacrev(jax.jacrev(f))(v)))(x[0, 0, 0])
    np.testing.assert_allclose(hess, reverse_reverse, rtol=1e-5, atol=1e-6)
    assert np.abs(hess).max() > 0


def test_remat_policy_saves_the_dense_dots():
    layer, params, x = _layer_and_params()

    def f(p):
        return jnp.sin(layer.apply(p, x)).sum()

    saved = saved_residuals(jax.checkpoint(f, policy=jax.checkpoint_policies.dots_saveable), params)
    assert any("dot_general" in str(why) for _, why in saved), saved
    saved_none = saved_residuals(jax.checkpoint(f, policy=jax.checkpoint_policies.nothing_saveable), params)
    assert not any("dot_general" in str(why) for _, why in saved_none)
