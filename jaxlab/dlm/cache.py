"""Model calls for the decoders: full forwards and cached forwards over a dynamic window, in jit.

A cached forward recomputes positions ``[start, stop)`` (dynamic scalars) against a fixed-size
``KVCache`` (``jaxlab.nn.kv_cache``): it feeds a slice of static width ``w`` (the smallest of a few
*bucket* widths that holds ``stop - start``) starting at ``offset = min(start, L - w)``, writes the
new keys/values only for ``[start, stop)`` and attends over the whole cache. Rows of the slice
outside ``[start, stop)`` are computed but neither written nor used: this is exactly the
reference's ``replace_position`` call on ``tokens[:, start:stop]``. ``lax.switch`` over the bucket
widths keeps each call's cost close to the window's size with one compiled program per bucket.

Every call returns per-position ``(confidence [B, L] f32, token [B, L] i32)`` from a ``score_fn``
applied to the logits it computed; entries outside ``[start, stop)`` are meaningless.
"""

import re
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxlab.nn.kv_cache import KVCache

ScoreFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]  # (logits [B,T,V], key) -> conf, tok
CACHE_TYPES = ("none", "prefix", "dual", "prefix-delay<N>", "dual-delay<N>")
_CACHE_RE = re.compile(r"^(none|prefix|dual)(?:-delay(\d+))?$")


def parse_cache_type(cache_type: str) -> tuple[str, int | None]:
    """``'dual-delay2' -> ('dual', 2)``, ``'prefix' -> ('prefix', None)``; unknown names raise."""
    m = _CACHE_RE.match(cache_type) if isinstance(cache_type, str) else None
    if m is None or (m.group(1) == "none" and m.group(2) is not None):
        raise ValueError(f"unknown cache_type {cache_type!r}; use one of {list(CACHE_TYPES)} (e.g. 'dual-delay2')")
    return m.group(1), None if m.group(2) is None else int(m.group(2))


def bucket_widths(max_width: int, smallest: int = 16) -> tuple[int, ...]:
    """Static slice widths: powers of two from ``smallest`` up to (and ending at) ``max_width``."""
    widths, w = [], smallest
    while w < max_width:
        widths.append(w)
        w *= 2
    widths.append(max_width)
    return tuple(widths)


class ModelCalls:
    """Full and cached forwards of a LLaDA-like module (``apply(params, ids, cache=, offset=, write_mask=)``)."""

    def __init__(self, module, params, score_fn: ScoreFn):
        self.module, self.params, self.score_fn = module, params, score_fn

    def _apply(self, ids, **kw):
        return self.module.apply({"params": self.params}, ids, **kw)

    def full(self, tokens: jax.Array, key: jax.Array):
        """One full forward without a cache -> ``(conf [B, L], tok [B, L])``."""
        return self.score_fn(self._apply(tokens), key)

    def refresh(self, tokens: jax.Array, cache: KVCache, key: jax.Array):
        """A full forward that rewrites every cache row -> ``(conf, tok, cache)``."""
        logits, cache = self._apply(tokens, cache=cache)
        conf, tok = self.score_fn(logits, key)
        return conf, tok, cache

    def cached(self, tokens, cache: KVCache, start, stop, key, widths: tuple[int, ...]):
        """Recomputes ``[start, stop)`` against ``cache`` (``stop - start <= widths[-1]``) -> ``(conf, tok, cache)``."""
        length = tokens.shape[1]
        widths_arr = jnp.asarray(widths, jnp.int32)
        branch = jnp.minimum(jnp.searchsorted(widths_arr, stop - start), len(widths) - 1)

        def run(width):
            def call(operands):
                tokens, cache, start, stop, key = operands
                offset = jnp.clip(start, 0, length - width)
                ids = jax.lax.dynamic_slice_in_dim(tokens, offset, width, axis=1)
                pos = offset + jnp.arange(width, dtype=jnp.int32)
                write = ((pos >= start) & (pos < stop))[None]
                logits, cache = self._apply(ids, cache=cache, offset=offset, write_mask=write)
                conf, tok = self.score_fn(logits, key)
                zeros = jnp.zeros(tokens.shape, jnp.float32)
                conf = jax.lax.dynamic_update_slice_in_dim(zeros, conf, offset, axis=1)
                tok = jax.lax.dynamic_update_slice_in_dim(jnp.zeros_like(tokens), tok.astype(tokens.dtype), offset, axis=1)
                return conf, tok, cache

            return call

        return jax.lax.switch(branch, [run(w) for w in widths], (tokens, cache, start, stop, key))


def refresh_logits(module, params, tokens: jax.Array, cache: KVCache):
    """A full forward that rewrites every cache row -> ``(logits [B, L, V] f32, cache)``."""
    logits, cache = module.apply({"params": params}, tokens, cache=cache)
    return logits.astype(jnp.float32), cache


def cached_logits(module, params, tokens: jax.Array, cache: KVCache, start, stop, widths: tuple[int, ...]):
    """Recomputes ``[start, stop)`` against ``cache`` (as ``ModelCalls.cached``) -> ``(logits [B, L, V] f32, cache)``:
    the fed slice's logits at their positions, zeros elsewhere (meaningless outside ``[start, stop)``)."""
    batch, length = tokens.shape
    vocab = module.config.embedding_size
    widths_arr = jnp.asarray(widths, jnp.int32)
    branch = jnp.minimum(jnp.searchsorted(widths_arr, stop - start), len(widths) - 1)

    def run(width):
        def call(operands):
            tokens, cache, start, stop = operands
            offset = jnp.clip(start, 0, length - width)
            ids = jax.lax.dynamic_slice_in_dim(tokens, offset, width, axis=1)
            pos = offset + jnp.arange(width, dtype=jnp.int32)
            write = ((pos >= start) & (pos < stop))[None]
            logits, cache = module.apply({"params": params}, ids, cache=cache, offset=offset, write_mask=write)
            full = jnp.zeros((batch, length, vocab), jnp.float32)
            return jax.lax.dynamic_update_slice_in_dim(full, logits.astype(jnp.float32), offset, axis=1), cache

        return call

    return jax.lax.switch(branch, [run(w) for w in widths], (tokens, cache, start, stop))
