"""``dot_product_attention`` computes what ``jax.nn.dot_product_attention`` computes, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.nn import dot_product_attention


def _qkv(kv_heads: int, dtype=jnp.float32):
    kq, kk, kv = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(kq, (2, 5, 4, 8))
    k = jax.random.normal(kk, (2, 7, kv_heads, 8))
    v = jax.random.normal(kv, (2, 7, kv_heads, 8))
    return q.astype(dtype), k.astype(dtype), v.astype(dtype)


CASES = {
    "plain": dict(kv_heads=4),
    "scale": dict(kv_heads=4, scale=1.0),
    "grouped-query": dict(kv_heads=2),
    "key mask": dict(kv_heads=4, mask=jnp.arange(7)[None, None, None, :] < 4),
    "per-query mask, a row fully hidden": dict(
        kv_heads=1, mask=jnp.tril(jnp.ones((5, 7), bool), k=-1)[None, None]  # query 0 sees no key
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_jax(case):
    kwargs = dict(CASES[case])
    q, k, v = _qkv(kwargs.pop("kv_heads"))

    def loss(fn, q, k, v):
        return (fn(q, k, v, **kwargs) * jnp.cos(jnp.arange(8.0))).sum()

    np.testing.assert_allclose(
        dot_product_attention(q, k, v, **kwargs), jax.nn.dot_product_attention(q, k, v, **kwargs), atol=1e-5, rtol=1e-5
    )
    ours = jax.grad(loss, argnums=(1, 2, 3))(dot_product_attention, q, k, v)
    theirs = jax.grad(loss, argnums=(1, 2, 3))(jax.nn.dot_product_attention, q, k, v)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_bfloat16_stays_bfloat16_and_close():
    q, k, v = _qkv(4, jnp.bfloat16)
    out = dot_product_attention(q, k, v)
    assert out.dtype == jnp.bfloat16
    expected = jax.nn.dot_product_attention(*(a.astype(jnp.float32) for a in (q, k, v)))
    np.testing.assert_allclose(np.asarray(out, np.float32), expected, atol=3e-2, rtol=3e-2)


def test_heads_that_do_not_share_evenly_are_an_error():
    q, k, v = _qkv(3)
    with pytest.raises(ValueError, match="cannot share"):
        dot_product_attention(q, k, v)


def test_jvp_and_hessian_through_attention():
    q, k, v = _qkv(2)
    f = lambda q: jnp.tanh(dot_product_attention(q, k, v, is_causal=True)).sum()  # noqa: E731
    g = lambda q: jnp.tanh(jax.nn.dot_product_attention(q, k, v, is_causal=True)).sum()  # noqa: E731
    dq = jnp.cos(q)
    np.testing.assert_allclose(jax.jvp(f, (q,), (dq,))[1], jax.jvp(g, (q,), (dq,))[1], rtol=1e-4, atol=1e-5)
    small = q[:1, :2, :1]
    h = lambda s: f(q.at[:1, :2, :1].set(s))  # noqa: E731
    np.testing.assert_allclose(jax.hessian(h)(small), jax.jacrev(jax.jacrev(h))(small), rtol=1e-4, atol=1e-5)


def test_jvp_at_kernel_sizes_and_hessian_with_the_xla_path():
    """Where a Pallas kernel applies (128 tokens) forward mode still works on CPU; second
    derivatives need ``implementation="xla"`` there (the kernels' VJPs are first-order only)."""
    q = jax.random.normal(jax.random.key(0), (1, 128, 1, 8))
    f = lambda q, impl: jnp.tanh(dot_product_attention(q, q, q, is_causal=True, implementation=impl)).sum()  # noqa: E731
    np.testing.assert_allclose(jax.jvp(lambda a: f(a, None), (q,), (jnp.cos(q),))[1],
                               jax.jvp(lambda a: f(a, "xla"), (q,), (jnp.cos(q),))[1], rtol=1e-5)
    h = lambda s: f(q.at[0, 0, 0, :2].set(s), "xla")  # noqa: E731
    assert np.isfinite(jax.hessian(h)(jnp.ones(2))).all()
