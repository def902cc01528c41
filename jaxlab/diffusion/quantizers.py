"""Discrete bottlenecks without auxiliary losses, for QAC's condition code (issue 20).

QAC's abstract says its quantised encoder needs "no extra regularization terms"; the quantiser
itself is not known (docs/qac.md). Two codebook-free quantisers fit that statement (a VQ codebook
would need commitment/codebook losses or EMA updates); both pass gradients straight through:

- ``binary_quantize`` (LFQ-style, Yu et al. 2023 without its entropy loss): each channel -> +-1.
  Forward ``sign(z)`` (0 -> +1); backward the identity.
- ``fsq_quantize`` (Mentzer et al. 2023, "Finite Scalar Quantization"): channel ``i`` is bounded to
  ``levels[i]`` values by ``tanh`` and rounded; backward the derivative of the bound (round is
  straight-through). Outputs lie in [-1, 1].

``*_indices`` turn a code ``[..., D]`` into integer indices (one per position) for a code prior.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def _straight_through(z: jax.Array, q: jax.Array) -> jax.Array:
    """``q`` in the forward pass, the gradient of ``z`` in the backward pass."""
    return z + jax.lax.stop_gradient(q - z)


def binary_quantize(z: jax.Array) -> jax.Array:
    """``[..., D]`` -> ``[..., D]`` in {-1, +1} (``sign``, 0 -> +1), identity gradient."""
    return _straight_through(z, jnp.where(z >= 0, 1.0, -1.0).astype(z.dtype))


def binary_indices(code: jax.Array) -> jax.Array:
    """``[..., D]`` of +-1 -> ``[...]`` int32 in ``[0, 2^D)`` (bit ``i`` set where ``code[..., i] > 0``)."""
    d = code.shape[-1]
    if d > 30:
        raise ValueError(f"binary_indices packs D <= 30 bits into int32, got D={d}: index fewer channels at a time")
    bits = (code > 0).astype(jnp.int32)
    return jnp.sum(bits << _last_axis(jnp.arange(d, dtype=jnp.int32), bits.ndim), axis=-1)


def _last_axis(v: jax.Array, ndim: int) -> jax.Array:
    """``[D]`` -> ``[1, ..., 1, D]`` of rank ``ndim`` (explicit broadcasting against ``[..., D]``)."""
    return v.reshape((1,) * (ndim - 1) + v.shape)


def _check_levels(levels: Sequence[int], d: int) -> np.ndarray:
    levels = np.asarray(levels, np.int64)
    if levels.ndim != 1 or levels.shape[0] != d:
        raise ValueError(f"FSQ needs one level count per channel: got levels={levels.tolist()} for D={d} channels")
    if (levels < 2).any():
        raise ValueError(f"FSQ levels must be >= 2 per channel, got {levels.tolist()}")
    return levels


def fsq_bound(z: jax.Array, levels: Sequence[int]) -> jax.Array:
    """FSQ's ``tanh`` bound: channel ``i`` to ``(-(L_i - 1)/2, (L_i - 1)/2)``, shifted by 1/2 for even ``L_i``."""
    levels = _check_levels(levels, z.shape[-1])
    eps = 1e-3
    half_l = _last_axis(jnp.asarray((levels - 1) * (1 + eps) / 2, jnp.float32), z.ndim)
    offset = _last_axis(jnp.asarray(np.where(levels % 2 == 0, 0.5, 0.0), jnp.float32), z.ndim)
    shift = jnp.arctanh(offset / half_l)
    return (jnp.tanh(z.astype(jnp.float32) + shift) * half_l - offset).astype(z.dtype)


def fsq_quantize(z: jax.Array, levels: Sequence[int]) -> jax.Array:
    """``[..., D]`` -> ``[..., D]`` on ``levels[i]`` evenly spaced values in [-1, 1]; straight-through round."""
    bounded = fsq_bound(z, levels)
    half_width = _last_axis(jnp.asarray(np.asarray(levels) // 2, z.dtype), z.ndim)
    return _straight_through(bounded, jnp.round(bounded)) / half_width


def fsq_indices(code: jax.Array, levels: Sequence[int]) -> jax.Array:
    """``[..., D]`` FSQ code -> ``[...]`` int32 in ``[0, prod(levels))`` (mixed radix, channel 0 lowest)."""
    levels = _check_levels(levels, code.shape[-1])
    if np.prod(levels.astype(np.float64)) > 2**31 - 1:
        raise ValueError(f"prod(levels)={int(np.prod(levels))} does not fit int32 indices: use fewer levels")
    half_width = _last_axis(jnp.asarray(levels // 2, code.dtype), code.ndim)
    digits = jnp.round(code * half_width + half_width).astype(jnp.int32)
    basis = np.concatenate([[1], np.cumprod(levels[:-1])]).astype(np.int32)
    return jnp.sum(digits * _last_axis(jnp.asarray(basis), code.ndim), axis=-1)


def binary_from_indices(indices: jax.Array, d: int) -> jax.Array:
    """Inverse of ``binary_indices``: ``[...]`` int in ``[0, 2^d)`` -> ``[..., d]`` float32 of +-1."""
    idx = jnp.asarray(indices, jnp.int32)[..., None]
    bits = (idx >> _last_axis(jnp.arange(d, dtype=jnp.int32), idx.ndim)) & 1
    return jnp.where(bits > 0, 1.0, -1.0).astype(jnp.float32)


def fsq_from_indices(indices: jax.Array, levels: Sequence[int]) -> jax.Array:
    """Inverse of ``fsq_indices``: ``[...]`` int in ``[0, prod(levels))`` -> ``[..., D]`` FSQ code in [-1, 1]."""
    levels = _check_levels(levels, len(levels))
    basis = np.concatenate([[1], np.cumprod(levels[:-1])]).astype(np.int32)
    idx = jnp.asarray(indices, jnp.int32)[..., None]
    digits = (idx // _last_axis(jnp.asarray(basis), idx.ndim)) % _last_axis(jnp.asarray(levels.astype(np.int32)), idx.ndim)
    half_width = _last_axis(jnp.asarray(levels // 2, jnp.int32), idx.ndim)
    return ((digits - half_width) / half_width.astype(jnp.float32)).astype(jnp.float32)
