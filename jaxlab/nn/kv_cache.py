"""Fixed-size key/value caches for bidirectional (diffusion) decoding.

A cache holds the keys and values of every position of a sequence of static length ``L``. A
cached forward feeds a slice of ``w`` tokens at absolute offset ``o`` and overwrites, in place,
the cache rows ``o .. o + w - 1`` that its ``write_mask`` selects; the other rows keep whatever
was stored last. Keys are stored *after* the rotary embedding (the reference stores them before
and rotates the whole cache on every call: rotation depends only on the position, so storing the
rotated key gives the same numbers and saves the work).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp


class KVCache(NamedTuple):
    """``k``, ``v``: ``[layers, batch, length, kv_heads, head_dim]`` (keys rotated)."""

    k: jax.Array
    v: jax.Array

    @property
    def length(self) -> int:
        return self.k.shape[2]


def init_kv_cache(num_layers: int, batch: int, length: int, num_kv_heads: int, head_dim: int, dtype=jnp.float32) -> KVCache:
    """An all-zero cache; a first forward with an all-True ``write_mask`` fills it."""
    shape = (num_layers, batch, length, num_kv_heads, head_dim)
    return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


def write_slice(buffer: jax.Array, new: jax.Array, offset: jax.Array | int, write_mask: jax.Array | None) -> jax.Array:
    """Writes ``new [B, w, H, hd]`` into ``buffer [B, L, H, hd]`` at rows ``offset .. offset + w - 1``.

    Only rows where ``write_mask [B or 1, w]`` is True change (all rows if it is None). ``offset``
    must satisfy ``0 <= offset <= L - w`` (XLA would silently clamp it otherwise, and the caller's
    rotary positions would no longer match the rows written).
    """
    new = new.astype(buffer.dtype)
    if write_mask is not None:
        old = jax.lax.dynamic_slice_in_dim(buffer, offset, new.shape[1], axis=1)
        new = jnp.where(write_mask[:, :, None, None], new, old)
    return jax.lax.dynamic_update_slice_in_dim(buffer, new, offset, axis=1)
