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

    @jax.jit  # one program per case: op-by-op dispatch of the gradients compiles several times longer
    def outputs_and_grads(q, k, v):
        fns = (dot_product_attention, jax.nn.dot_product_attention)
        return [(fn(q, k, v, **kwargs), jax.grad(loss, argnums=(1, 2, 3))(fn, q, k, v)) for fn in fns]

    (out, ours), (expected, theirs) = outputs_and_grads(q, k, v)
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)
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
    h = lambda s: f(q.at[:1, :2, :1].set(s))  # noqa: E731

    @jax.jit
    def derivatives(q, dq, small):
        return jax.jvp(f, (q,), (dq,))[1], jax.jvp(g, (q,), (dq,))[1], jax.hessian(h)(small), jax.jacrev(jax.jacrev(h))(small)

    jvp_ours, jvp_theirs, hessian, reverse_reverse = derivatives(q, jnp.cos(q), q[:1, :2, :1])
    np.testing.assert_allclose(jvp_ours, jvp_theirs, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(hessian, reverse_reverse, rtol=1e-4, atol=1e-5)


def test_forward_mode_at_kernel_sizes_runs_the_xla_path_and_reverse_mode_keeps_the_kernel():
    """At 128 tokens a Pallas kernel applies; its VJP is first-order only, so under forward mode
    (jvp, hessian) the XLA path runs, while reverse mode keeps the kernel (lowered for TPU)."""
    q = jax.random.normal(jax.random.key(0), (1, 128, 1, 8))
    f = lambda q, fn: jnp.tanh(fn(q, q, q, is_causal=True)).sum()  # noqa: E731
    h = lambda s, fn: f(q.at[0, 0, 0, :2].set(s), fn)  # noqa: E731
    ours, theirs = dot_product_attention, jax.nn.dot_product_attention

    @jax.jit
    def derivatives(q, s):
        return [(jax.hessian(h)(s, fn), jax.jvp(lambda a: f(a, fn), (q,), (jnp.cos(q),))[1]) for fn in (ours, theirs)]

    (hessian, jvp), (expected_hessian, expected_jvp) = derivatives(q, jnp.ones(2))
    np.testing.assert_allclose(hessian, expected_hessian, rtol=1e-4)
    np.testing.assert_allclose(jvp, expected_jvp, rtol=1e-5)

    def lowered_for_tpu(fn, *args):
        return jax.jit(fn).trace(*args).lower(lowering_platforms=("tpu",)).as_text()

    assert "tpu_custom_call" in lowered_for_tpu(jax.grad(lambda a: f(a, ours)), q)
    assert "tpu_custom_call" not in lowered_for_tpu(jax.hessian(lambda s: h(s, ours)), jnp.ones(2))
