"""2-D rotary position embedding with x/y frequencies interleaved (U-DiT's ``rope2d``).

A head's ``head_dim`` features are read as ``head_dim/2`` complex numbers (feature ``2m`` real,
``2m+1`` imaginary). With ``f_j = theta^(-4j/head_dim)``, ``j < head_dim/4``, pair ``2j`` is
rotated by ``col * f_j`` and pair ``2j+1`` by ``row * f_j``.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np


def flat_grid_positions(num_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, cols)`` of row-major tokens on a square grid of side ``int(sqrt(num_tokens))``.

    This is how the reference derives positions from a token count alone (token ``n`` sits at
    column ``n % S``, row ``n // S``); it is the true 2-D position only for square grids.
    """
    side = int(num_tokens**0.5)
    n = np.arange(num_tokens)
    return n // side, n % side


def rope_2d_angles(head_dim: int, rows: np.ndarray, cols: np.ndarray, theta: float = 10000.0) -> np.ndarray:
    """Rotation angles ``[T, head_dim/2]`` (radians, float64) for tokens at ``(rows, cols)``."""
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs head_dim divisible by 4, got {head_dim}; change hidden_size or num_heads")
    freqs = 1.0 / theta ** (np.arange(0, head_dim, 4, dtype=np.float64) / head_dim)  # [dh/4]
    col_angles = np.asarray(cols, np.float64)[:, None] * freqs  # [T, dh/4]
    row_angles = np.asarray(rows, np.float64)[:, None] * freqs
    return np.stack([col_angles, row_angles], axis=-1).reshape(col_angles.shape[0], head_dim // 2)


@functools.lru_cache(maxsize=64)
def rope_2d_table(head_dim: int, num_tokens: int, theta: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
    """Read-only float32 ``(cos, sin)``, each ``[num_tokens, head_dim/2]``, for ``flat_grid_positions``."""
    rows, cols = flat_grid_positions(num_tokens)
    angles = rope_2d_angles(head_dim, rows, cols, theta)
    cos, sin = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
    cos.flags.writeable = sin.flags.writeable = False
    return cos, sin


def apply_rope_interleaved(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotates adjacent feature pairs of ``x [..., T, heads, head_dim]`` by ``[T, head_dim/2]`` angles.

    Computed in float32 (as the reference does, whatever the model dtype); returns ``x.dtype``.
    """
    *lead, t, h, d = x.shape
    pairs = x.astype(jnp.float32).reshape(*lead, t, h, d // 2, 2)
    re, im = pairs[..., 0], pairs[..., 1]
    cos, sin = jnp.asarray(cos)[:, None], jnp.asarray(sin)[:, None]  # [T, 1, d/2]
    out = jnp.stack([re * cos - im * sin, re * sin + im * cos], axis=-1)
    return out.reshape(x.shape).astype(x.dtype)
