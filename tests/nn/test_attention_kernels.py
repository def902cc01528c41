"""The accelerator attention kernels agree with the XLA path, and each platform lowers to its kernel.

The Pallas kernels run here in interpret mode (TPU: ``force_tpu_interpret_mode``; GPU:
``interpret=True``), at the smallest sizes their blocks allow (128 queries/keys).
"""

import logging
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import tpu as pltpu

from jaxlab.nn import attention_kernels as kernels
from jaxlab.nn import dot_product_attention
from jaxlab.nn.attention import _with_key_padding, xla_attention


T = 128
H = 32


def _qkv(dtype, kv_heads=2, heads=2, batch=2, seed=0):
    kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
    q = jax.random.normal(kq, (batch, T, heads, H))
    k = jax.random.normal(kk, (batch, T, kv_heads, H))
    v = jax.random.normal(kv, (batch, T, kv_heads, H))
    return tuple(a.astype(dtype) for a in (q, k, v))


def _value_and_grads(fn, q, k, v):
    weights = jnp.cos(jnp.arange(H, dtype=jnp.float32))

    def loss(q, k, v):
        return (fn(q, k, v).astype(jnp.float32) * weights).sum()

    out = jax.jit(fn)(q, k, v)
    return out, jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)


def _assert_agree(kernel_fn, reference_fn, q, k, v, tol):
    out, grads = _value_and_grads(kernel_fn, q, k, v)
    ref_out, ref_grads = _value_and_grads(reference_fn, q, k, v)
    assert out.dtype == q.dtype
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref_out, np.float32), atol=tol, rtol=tol)
    for name, a, b in zip("qkv", grads, ref_grads):
        scale = float(jnp.abs(b.astype(jnp.float32)).max())
        np.testing.assert_allclose(
            np.asarray(a, np.float32), np.asarray(b, np.float32), atol=tol * scale, rtol=tol, err_msg=f"d{name}"
        )


KEY_PADDING = np.arange(T)[None, :] < np.array([[T - 37], [0]])  # example 1: every key hidden

TPU_CASES = {
    "f32 plain": dict(dtype=jnp.float32, batch=1),
    "f32 causal, grouped-query": dict(dtype=jnp.float32, is_causal=True, kv_heads=1),
    "f32 key padding": dict(dtype=jnp.float32, kv_valid=KEY_PADDING),
    "bf16 causal": dict(dtype=jnp.bfloat16, is_causal=True),
}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c == "f32 plain" else c for c in sorted(TPU_CASES)])
def test_tpu_flash_kernel_matches_xla(case):
    opts = dict(TPU_CASES[case])
    dtype, is_causal, kv_valid = opts.pop("dtype"), opts.pop("is_causal", False), opts.pop("kv_valid", None)
    q, k, v = _qkv(dtype, **opts)
    scale = 0.3
    mask = None if kv_valid is None else jnp.asarray(kv_valid)[:, None, None, :]
    valid = None if kv_valid is None else jnp.asarray(kv_valid)

    def kernel(q, k, v):  # the TPU branch of dot_product_attention
        tpu = partial(kernels.tpu_flash_attention, scale=scale, is_causal=is_causal)
        return _with_key_padding(tpu, q, k, v, valid)

    def reference(q, k, v):
        return xla_attention(q, k, v, mask=mask, scale=scale, is_causal=is_causal)

    with pltpu.force_tpu_interpret_mode():
        _assert_agree(kernel, reference, q, k, v, 2e-5 if dtype == jnp.float32 else 2e-2)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
def test_gpu_flash_kernel_matches_xla(dtype):
    q, k, v = _qkv(dtype, kv_heads=1)
    scale = 0.3

    def kernel(q, k, v):
        return kernels.gpu_flash_attention(q, k, v, None, scale=scale, is_causal=True, interpret=True)

    def reference(q, k, v):
        return xla_attention(q, k, v, scale=scale, is_causal=True)

    _assert_agree(kernel, reference, q, k, v, 2e-5 if dtype == jnp.float32 else 2e-2)


def _lowered(fn, platform, *args):
    return jax.jit(fn).trace(*args).lower(lowering_platforms=(platform,)).as_text()


def test_each_platform_lowers_to_its_kernel():
    q, k, v = _qkv(jnp.bfloat16)

    def step(q, k, v):
        return jax.grad(lambda q, k, v: dot_product_attention(q, k, v, is_causal=True).astype(jnp.float32).sum(),
                        argnums=(0, 1, 2))(q, k, v)

    tpu, cuda, cpu = (_lowered(step, p, q, k, v) for p in ("tpu", "cuda", "cpu"))
    assert tpu.count("tpu_custom_call") == 3 and "triton" not in tpu  # forward, dq, dkv kernels
    assert cuda.count("__gpu$xla.gpu.triton") >= 2 and "tpu_custom_call" not in cuda
    assert "tpu_custom_call" not in cpu and "triton" not in cpu


def test_key_padding_mask_lowers_to_tpu_kernel_and_falls_back_on_gpu(caplog):
    q, k, v = _qkv(jnp.float32)
    mask = jnp.asarray(KEY_PADDING)[:, None, None, :]
    kernels.log_fallback.cache_clear()
    with caplog.at_level(logging.DEBUG, logger=kernels.__name__):
        fn = lambda q, k, v: dot_product_attention(q, k, v, mask=mask)  # noqa: E731
        assert "tpu_custom_call" in _lowered(fn, "tpu", q, k, v)
        assert "triton" not in _lowered(fn, "cuda", q, k, v)
    assert any("GPU flash attention not used" in r.message for r in caplog.records)


def test_unsupported_shapes_fall_back_with_one_log_line(caplog):
    q, k, v = (a[:, :40] for a in _qkv(jnp.float32))  # 40 is no multiple of the 128-key block
    kernels.log_fallback.cache_clear()
    with caplog.at_level(logging.DEBUG, logger=kernels.__name__):
        for _ in range(3):
            text = _lowered(lambda q, k, v: dot_product_attention(q, k, v), "tpu", q, k, v)
    assert "tpu_custom_call" not in text
    lines = [r.message for r in caplog.records if "TPU flash attention not used" in r.message]
    assert len(lines) == 1 and "multiples of 128" in lines[0]


def test_bf16_weights_and_normaliser_agree():
    """The output is an exact convex combination: values of 1 give exactly 1 (the weights cast for
    the product are the ones summed in the denominator)."""
    q, k, _ = _qkv(jnp.bfloat16, kv_heads=2)
    q = q.astype(jnp.float32) * 3
    v = jnp.ones_like(k)
    out = dot_product_attention(q, k, v, implementation="xla")
    # float32 summation order only: up to 1.1e-6 measured on an H200 (XLA:GPU sums in another order
    # than XLA:CPU); a denominator of the unrounded float32 weights would be off by up to 1.2e-3
    np.testing.assert_allclose(out, 1.0, atol=1e-5, rtol=0)


def test_bf16_queries_are_not_rounded_after_scaling():
    """Softmax weights (one-hot values read them out) follow the float32 logits of the bf16 inputs."""
    s = 64
    q = (jax.random.normal(jax.random.key(1), (1, 4, 1, s)) * 4).astype(jnp.bfloat16)
    k = (jax.random.normal(jax.random.key(2), (1, s, 1, s))).astype(jnp.bfloat16)
    v = jnp.eye(s, dtype=jnp.float32)[None, :, None, :]  # output row t = the weights of query t
    scale = 0.1234
    out = dot_product_attention(q, k, v, scale=scale).astype(jnp.float32)
    logits = np.einsum("bqnh,bknh->bnqk", np.asarray(q, np.float64), np.asarray(k, np.float64)) * scale
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    expected = (expected / expected.sum(-1, keepdims=True)).transpose(0, 2, 1, 3)
    # bf16 output rounding only (scaling bf16 q before the product is off by up to ~2.3% here)
    np.testing.assert_allclose(out, expected, atol=1e-3, rtol=5e-3)


def test_causal_mask_matches_jax():
    q, k, v = (a[:, :9] for a in _qkv(jnp.float32, kv_heads=1))
    np.testing.assert_allclose(
        dot_product_attention(q, k[:, :7], v[:, :7], is_causal=True),
        jax.nn.dot_product_attention(q, k[:, :7], v[:, :7], is_causal=True), atol=1e-5, rtol=1e-5,
    )
