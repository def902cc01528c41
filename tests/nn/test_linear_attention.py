"""DiJiang's decayed linear attention: parallel == chunked == recurrent, and the factorised form's overflow."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.nn import linear_attention as la
from jaxlab.nn.linear_attention import dct_matrix, decayed_attention_step, dijiang_projection, retnet_log_decay

# Each form jitted whole (one program per shape): op-by-op dispatch compiles each primitive separately.
decayed_attention_parallel = jax.jit(la.decayed_attention_parallel)
decayed_attention_chunked = jax.jit(la.decayed_attention_chunked, static_argnames=("chunk",))
decayed_attention_factorised = jax.jit(la.decayed_attention_factorised, static_argnames=("dtype",))
dijiang_features = jax.jit(la.dijiang_features)


@pytest.fixture(autouse=True)
def _strict_ranks():
    """The kernels never broadcast by rank promotion (scoped to this module's tests)."""
    with jax.numpy_rank_promotion("raise"):
        yield


def _inputs(t, b=2, n=3, h=8, seed=0):
    kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
    proj = jnp.asarray(dijiang_projection(np.random.default_rng(seed), h))
    q = jax.random.normal(kq, (b, t, n, h))
    k = jax.random.normal(kk, (b, t, n, h))
    v = jax.random.normal(kv, (b, t, n, h))
    a, bb = (jnp.asarray(x) for x in retnet_log_decay(n, t))
    return dijiang_features(q, proj), dijiang_features(k, proj), v, a, bb


def test_dct_matrix_is_orthonormal_dct2():
    c = dct_matrix(8)
    np.testing.assert_allclose(c @ c.T, np.eye(8), atol=1e-12)
    k, n = 3, 5
    np.testing.assert_allclose(c[k, n], np.sqrt(2 / 8) * np.cos(np.pi * k * (2 * n + 1) / 16))


def test_retnet_decay_matches_gamma_powers():
    log_d1, log_d2 = retnet_log_decay(4, 10)
    gamma = 1 - np.exp(np.linspace(np.log(1 / 32), np.log(1 / 512), 4))
    np.testing.assert_allclose(np.exp(log_d1), gamma[:, None] ** np.arange(10), rtol=1e-6)
    np.testing.assert_allclose(np.exp(log_d2), gamma[:, None] ** -np.arange(10.0), rtol=1e-5)


@pytest.mark.parametrize("t,chunk", [(37, 8), (64, 64), (50, 1), (5, 16)])
def test_chunked_equals_parallel(t, chunk):
    qf, kf, v, a, b = _inputs(t)
    ref = decayed_attention_parallel(qf, kf, v, a, b)
    out, _ = decayed_attention_chunked(qf, kf, v, a, b, chunk=chunk)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_chunked_with_arbitrary_trained_decay_tables():
    """Trained D1/D2 are no longer gamma powers: the forms must agree for any tables."""
    qf, kf, v, a, b = _inputs(40)
    noise = jax.random.normal(jax.random.key(7), (2,) + a.shape) * 0.1
    a, b = a + noise[0], b + noise[1]
    ref = decayed_attention_parallel(qf, kf, v, a, b)
    out, _ = decayed_attention_chunked(qf, kf, v, a, b, chunk=16)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_recurrent_steps_and_split_prefill_equal_parallel():
    t = 33
    qf, kf, v, a, b = _inputs(t)
    ref = decayed_attention_parallel(qf, kf, v, a, b)
    # A chunked prefill of the first 20 tokens, then one recurrent step per token.
    out, state = decayed_attention_chunked(qf[:, :20], kf[:, :20], v[:, :20], a[:, :20], b[:, :20], chunk=8)
    outs = [out]
    step = jax.jit(decayed_attention_step)
    for n in range(20, t):
        o, state = step(state, qf[:, n], kf[:, n], v[:, n], a[:, n], b[:, n], b[:, n - 1])
        outs.append(o[:, None])
    np.testing.assert_allclose(jnp.concatenate(outs, axis=1), ref, rtol=1e-5, atol=1e-6)
    # A chunked continuation from a state equals the parallel form too.
    out2, _ = decayed_attention_chunked(qf[:, 20:], kf[:, 20:], v[:, 20:], a[:, 20:], b[:, 20:], chunk=4,
                                        state=decayed_attention_chunked(qf[:, :20], kf[:, :20], v[:, :20], a[:, :20],
                                                                        b[:, :20], chunk=8)[1], log_d2_prev_N=b[:, 19])
    np.testing.assert_allclose(out2, ref[:, 20:], rtol=1e-5, atol=1e-6)


def test_factorised_form_overflows_where_the_chunked_form_does_not():
    """gamma^-n overflows float16 from ~350 tokens and float32 (= bfloat16's range) from ~2,800."""
    for dtype, t, ok in ((jnp.float16, 400, 340), (jnp.float32, 3000, 2780)):
        qf, kf, v, a, b = _inputs(t, b=1, n=1, h=4)  # one head: gamma = 1 - 1/32, the fastest decay
        out = np.asarray(decayed_attention_factorised(qf, kf, v, jnp.exp(a), jnp.exp(b), dtype=dtype), np.float32)
        assert np.isfinite(out[:, :ok]).all(), dtype  # early positions are fine ...
        assert not np.isfinite(out[:, ok:]).all(), dtype  # ... later ones overflow
        chunked, state = decayed_attention_chunked(qf, kf, v, a, b, chunk=64)
        assert np.isfinite(chunked).all() and np.isfinite(state).all()


def test_document_masks_agree_and_isolate_documents():
    t = 45
    qf, kf, v, a, b = _inputs(t)
    seg = jnp.asarray(np.stack([np.repeat([0, 1, 2], [10, 20, 15]), np.repeat([0, 1], [33, 12])]))
    ref = decayed_attention_parallel(qf, kf, v, a, b, segment_ids=seg)
    out, _ = decayed_attention_chunked(qf, kf, v, a, b, chunk=8, segment_ids=seg)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    fact = decayed_attention_factorised(qf, kf, v, jnp.exp(a), jnp.exp(b), segment_ids=seg)
    np.testing.assert_allclose(fact, ref, rtol=1e-4, atol=1e-5)
    # Row 0's second document equals a fresh run on it alone (with its own decay rows).
    alone = decayed_attention_parallel(qf[:1, 10:30], kf[:1, 10:30], v[:1, 10:30], a[:, 10:30], b[:, 10:30])
    np.testing.assert_allclose(out[:1, 10:30], alone, rtol=1e-5, atol=1e-6)
