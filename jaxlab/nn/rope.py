"""1-D rotary position embedding, half-split (GPT-NeoX / Llama / LLaDA) layout.

Feature ``j`` of a head is paired with feature ``j + head_dim/2`` (not with its neighbour, as in
the interleaved layout of ``rope2d``). With ``inv_freq[j] = theta^(-2j/head_dim)`` the angle of
position ``p`` is ``p * inv_freq[j]``, repeated for both halves.
"""

import jax
import jax.numpy as jnp


def rope_sin_cos(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """``(sin, cos)``, each ``[..., head_dim]`` float32, for integer ``positions [...]``.

    Built in float32 like the reference's table: ``inv_freq = 1 / theta^(arange(0, hd, 2)/hd)``,
    ``angles = pos * inv_freq``, ``emb = [angles | angles]``.
    """
    if head_dim % 2:
        raise ValueError(f"rotary embeddings need an even head_dim, got {head_dim}")
    exponents = jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim
    inv_freq = 1.0 / jnp.power(jnp.float32(theta), exponents)
    angles = positions.astype(jnp.float32)[..., None] * inv_freq
    emb = jnp.concatenate([angles, angles], axis=-1)
    return jnp.sin(emb), jnp.cos(emb)


def rotate_half(x: jax.Array) -> jax.Array:
    """``[x1 | x2] -> [-x2 | x1]`` over the last axis."""
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-x2, x1], axis=-1)


def apply_rope(x: jax.Array, sin: jax.Array, cos: jax.Array) -> jax.Array:
    """Rotates ``x [B, T, heads, head_dim]`` by per-position ``sin/cos [B or 1, T, head_dim]``.

    Computed in float32 (the reference's ``rope_full_precision``); returns ``x.dtype``.
    """
    x32 = x.astype(jnp.float32)
    sin, cos = sin[:, :, None, :], cos[:, :, None, :]
    return (x32 * cos + rotate_half(x32) * sin).astype(x.dtype)
