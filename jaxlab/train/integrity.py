"""Integrity data for checkpoints: per-array checksums and non-finite counts of a pytree.

``fingerprint(tree)`` returns, for every leaf (named by its path, e.g. ``params/blocks_0/attn/qkv/kernel``),
a 32-bit checksum of the raw bits and the number of NaN/Inf values. The checksum is

    sum_i bits[i] * (2 * i + 1)   (mod 2**32, i the row-major element index)

over the leaf's bits viewed as unsigned integers: any change of one element changes it, and so does
swapping two elements. Integer sums are exact and associative, so the value does not depend on the
mesh (a checkpoint written on 8 devices verifies on 1). It is computed by one jitted reduction on the
arrays where they live (no host copy of the state); every process gets the same replicated result.

Choice and alternatives: orbax 0.12 writes no checksums of its own (TensorStore only detects
truncated chunks in some drivers), and a cryptographic hash would need the whole array on one host.
A weighted word sum catches the damage a disk or a copy does (flipped, zeroed or overwritten bytes,
mixed-up files); it is not a defence against deliberate tampering.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

_MULTIPLIER = np.uint32(2)


def leaf_path(path) -> str:
    """``(GetAttrKey('params'), DictKey('w'), SequenceKey(0))`` -> ``"params/w/0"`` (also for orbax metadata trees)."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def flatten(tree) -> dict[str, object]:
    """``{leaf_path: leaf}`` for the non-None leaves of ``tree``."""
    return {leaf_path(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0] if leaf is not None}


def _as_uint32(x: jax.Array) -> jax.Array:
    """The bits of ``x`` as uint32 (16/8-bit dtypes widened, bools as 0/1)."""
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    size = x.dtype.itemsize
    if size == 4:
        return jax.lax.bitcast_convert_type(x, jnp.uint32)
    if size in (1, 2):
        unsigned = {1: jnp.uint8, 2: jnp.uint16}[size]
        return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)
    if size == 8:  # two words per element
        return jax.lax.bitcast_convert_type(x, jnp.uint32)
    raise TypeError(f"cannot checksum dtype {x.dtype}")


def _linear_index(shape) -> jax.Array:
    """Row-major element index (uint32, wrapping) built from per-axis iotas, so it shards with the array."""
    index = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(len(shape))):
        index = index + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * np.uint32(stride % 2**32)
        stride *= shape[axis]
    return index


def _leaf_fingerprint(x) -> tuple[jax.Array, jax.Array]:
    bits = _as_uint32(x)
    weights = _linear_index(bits.shape) * _MULTIPLIER + np.uint32(1)
    checksum = jnp.sum(bits * weights, dtype=jnp.uint32)
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.inexact):
        nonfinite = jnp.sum(~jnp.isfinite(x), dtype=jnp.int32)
    else:
        nonfinite = jnp.zeros((), jnp.int32)
    return checksum, nonfinite


@jax.jit
def _fingerprints(leaves: dict):
    return {k: _leaf_fingerprint(v) for k, v in leaves.items()}


def fingerprint(tree) -> dict[str, dict[str, int]]:
    """``{leaf_path: {"checksum": int, "nonfinite": int}}`` for every array leaf of ``tree``."""
    leaves = {k: v for k, v in flatten(tree).items() if math.prod(np.shape(v)) > 0}
    values = jax.device_get(_fingerprints(leaves))
    return {k: {"checksum": int(c), "nonfinite": int(n)} for k, (c, n) in values.items()}


def nonfinite_leaves(report: dict[str, dict[str, int]]) -> dict[str, int]:
    """``{leaf_path: count}`` of the leaves that hold NaN/Inf values."""
    return {k: v["nonfinite"] for k, v in report.items() if v["nonfinite"]}


def describe_nonfinite(bad: dict[str, int], limit: int = 3) -> str:
    """``"params/w (3 values), ... and 2 more arrays"``."""
    names = [f"{k} ({n} value{'s' if n != 1 else ''})" for k, n in list(bad.items())[:limit]]
    more = f" and {len(bad) - limit} more array(s)" if len(bad) > limit else ""
    return ", ".join(names) + more


def mismatches(saved: dict[str, int], report: dict[str, dict[str, int]], prefix: str = "") -> list[str]:
    """Leaf paths (under ``prefix``) whose checksum differs from ``saved`` ``{path: checksum}``, or that are missing."""
    bad = []
    for path, checksum in saved.items():
        if not path.startswith(prefix):
            continue
        got = report.get(path)
        if got is None or got["checksum"] != int(checksum):
            bad.append(path)
    return bad


def nonfinite_host(tree) -> dict[str, int]:
    """``{leaf_path: count}`` of NaN/Inf values in a host (numpy) pytree, e.g. converted parameters."""
    bad = {}
    for path, leaf in flatten(tree).items():
        array = np.asarray(leaf)
        if np.issubdtype(array.dtype, np.inexact):
            count = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
            if count:
                bad[path] = count
    return bad
