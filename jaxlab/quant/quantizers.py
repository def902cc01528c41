"""Uniform integer quantisers, the MSE weight-range search, int4 packing and the int8 matmul.

Conventions (one for weights and activations): a value ``x`` maps to the integer
``q = clip(round(x / step) + zero_point, qmin, qmax)`` with ``qmin = -2**(bits-1)``,
``qmax = 2**(bits-1) - 1`` (signed, so an 8-bit value always fits an int8 and a 4-bit one an
int4 nibble), and back to ``step * (q - zero_point)``. Symmetric quantisers have
``zero_point = 0`` and use ``[-qmax, qmax]`` (the grid is symmetric; ``qmin`` is unused);
asymmetric ones spread ``[lo, hi]`` over all ``2**bits`` levels.

Rounding is round-half-to-even (``jnp.round``) in both execution modes, so the fake-quant and
the integer paths produce the same integers by construction (tests/quant/test_runtime.py).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

MIN_BITS, MAX_BITS = 2, 8
_TINY = 1e-8  # smallest step: a constant (all-equal) tensor still quantises without dividing by zero


def check_bits(bits: int, what: str) -> int:
    """``bits`` if it is an int in [2, 8] (int8 containers), else a ValueError naming ``what``."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(
            f"{what} bit width {bits!r} is out of range: use an integer in [{MIN_BITS}, {MAX_BITS}] "
            f"(8 = int8, 4 = packed int4); other widths need another integer container"
        )
    return int(bits)


def int_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """``(qmin, qmax)`` of the signed grid."""
    qmax = 2 ** (bits - 1) - 1
    return (-qmax if symmetric else -qmax - 1), qmax


def range_to_params(lo, hi, bits: int, symmetric: bool):
    """``(step, zero_point)`` (float32, int32 arrays of ``lo``'s shape) covering ``[lo, hi]``.

    The range is widened to contain 0 (so an exact zero stays exact, e.g. padding and the
    zero-initialised adaLN outputs).
    """
    lo = jnp.minimum(jnp.asarray(lo, jnp.float32), 0.0)
    hi = jnp.maximum(jnp.asarray(hi, jnp.float32), 0.0)
    qmin, qmax = int_range(bits, symmetric)
    if symmetric:
        step = jnp.maximum(jnp.maximum(-lo, hi) / qmax, _TINY)
        return step, jnp.zeros(step.shape, jnp.int32)
    step = jnp.maximum((hi - lo) / (qmax - qmin), _TINY)
    zero_point = jnp.clip(qmin - jnp.round(lo / step), qmin, qmax).astype(jnp.int32)
    return step, zero_point


def quantize(x, step, zero_point, bits: int, symmetric: bool) -> jax.Array:
    """Integers (int32 holding values in the grid) of ``x`` for broadcastable ``step``/``zero_point``."""
    qmin, qmax = int_range(bits, symmetric)
    return jnp.clip(jnp.round(x / step) + zero_point, qmin, qmax).astype(jnp.int32)


def dequantize(q, step, zero_point) -> jax.Array:
    return (q - zero_point).astype(jnp.float32) * step


def fake_quant(x, step, zero_point, bits: int, symmetric: bool) -> jax.Array:
    """``dequantize(quantize(x))`` in float32: the simulated quantiser."""
    return dequantize(quantize(x, step, zero_point, bits, symmetric), step, zero_point)


def weight_params(w_IO, bits: int, symmetric: bool, search: str = "mse", grid: int = 40, min_ratio: float = 0.3):
    """Per-output-channel ``(step [O], zero_point [O])`` for a kernel ``w_IO [in, out]``.

    ``search="minmax"``: the channel's own [min, max]. ``search="mse"``: the range
    ``[r * min, r * max]`` with ``r`` on a ``grid``-point linspace in ``[min_ratio, 1]`` that
    minimises the channel's squared rounding + clipping error (PTQ4DiT's ``scale_method='mse'``
    does a grid search of this kind; its exact grid, and its L_p norm 2.4, differ: choice
    documented in docs/htg.md).
    """
    if search not in ("mse", "minmax"):
        raise ValueError(f"unknown weight range search {search!r}; use 'mse' or 'minmax'")
    return _weight_params(jnp.asarray(w_IO, jnp.float32), bits, symmetric, search, grid, min_ratio)


@functools.partial(jax.jit, static_argnums=range(1, 6))
def _weight_params(w, bits, symmetric, search, grid, min_ratio):
    lo, hi = w.min(axis=0), w.max(axis=0)
    if search == "minmax":
        return range_to_params(lo, hi, bits, symmetric)
    ratios = jnp.linspace(min_ratio, 1.0, grid)

    def error(r):
        step, zp = range_to_params(lo * r, hi * r, bits, symmetric)
        return ((fake_quant(w, step, zp, bits, symmetric) - w) ** 2).sum(axis=0)

    errors = jax.lax.map(error, ratios)  # [grid, O]
    best = ratios[jnp.argmin(errors, axis=0)]
    return range_to_params(lo * best, hi * best, bits, symmetric)


def int_matmul(qx, qw_IO, zx, zw_O) -> jax.Array:
    """``sum_i (qx[..., i] - zx) (qw[i, o] - zw[o])`` exactly, as int32.

    ``qx [..., I]`` and ``qw [I, O]`` hold int8-range values; the product is one
    ``int8 x int8 -> int32`` ``dot_general`` plus int32 zero-point corrections (free when both
    quantisers are symmetric). ``zx`` is a scalar, ``zw`` per output channel.
    """
    qx8, qw8 = qx.astype(jnp.int8), qw_IO.astype(jnp.int8)
    acc = jax.lax.dot_general(qx8, qw8, (((qx.ndim - 1,), (0,)), ((), ())), preferred_element_type=jnp.int32)
    k = qx.shape[-1]
    zx = jnp.asarray(zx, jnp.int32)
    zw = jnp.asarray(zw_O, jnp.int32)
    acc = acc - zx * qw_IO.astype(jnp.int32).sum(axis=0)
    acc = acc - qx.astype(jnp.int32).sum(axis=-1, keepdims=True) * zw
    return acc + k * zx * zw


def pack_int4(q: np.ndarray) -> np.ndarray:
    """Two signed 4-bit values per byte (uint8), along the flattened array; odd lengths padded."""
    flat = np.asarray(q, np.int64).reshape(-1)
    if flat.size and (flat.min() < -8 or flat.max() > 7):
        raise ValueError(f"values in [{flat.min()}, {flat.max()}] do not fit 4 bits ([-8, 7])")
    if flat.size % 2:
        flat = np.concatenate([flat, [0]])
    nibbles = (flat & 0xF).astype(np.uint8)
    return nibbles[0::2] | (nibbles[1::2] << 4)


def unpack_int4(packed: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of ``pack_int4``: int8 array of ``shape``."""
    packed = np.asarray(packed, np.uint8)
    nibbles = np.stack([packed & 0xF, packed >> 4], axis=-1).reshape(-1).astype(np.int16)
    signed = np.where(nibbles > 7, nibbles - 16, nibbles).astype(np.int8)
    return signed[: int(np.prod(shape))].reshape(shape)
