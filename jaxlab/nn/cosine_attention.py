"""Cosine attention (Swin Transformer V2 style) with a learnable, clamped per-head temperature."""

import math

import jax
import jax.numpy as jnp

from jaxlab.nn.attention import dot_product_attention

LOGIT_SCALE_INIT = math.log(10.0)  # exp(init) = 10


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """``x / max(||x||, eps)`` over the last axis, as ``torch.nn.functional.normalize``; float32 math."""
    x32 = x.astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(x32 * x32, axis=-1, keepdims=True))
    return (x32 / jnp.maximum(norm, eps)).astype(x.dtype)


def cosine_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    logit_scale: jax.Array,
    *,
    max_logit_scale: float = math.log(100.0),
    eps: float = 1e-12,
) -> jax.Array:
    """``softmax(cos(q, k) * exp(min(logit_scale, max_logit_scale))) @ v`` per head.

    Args:
      q, k, v: ``[B, T, heads, head_dim]``.
      logit_scale: ``[heads]`` log-temperatures (float32 parameter).
      max_logit_scale: clamp applied before ``exp`` (SwinV2: ``log(100)``).
      eps: norm floor of the L2 normalisation.

    Returns:
      ``[B, T, heads, head_dim]`` in ``q.dtype``.
    """
    scale = jnp.exp(jnp.minimum(logit_scale.astype(jnp.float32), max_logit_scale))  # [heads]
    qn = (l2_normalize(q, eps).astype(jnp.float32) * scale[:, None]).astype(q.dtype)
    kn = l2_normalize(k, eps)
    return dot_product_attention(qn, kn, v, scale=1.0)
