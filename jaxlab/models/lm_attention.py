"""Causal self-attention of ``jaxlab.models.lm``: softmax (GPT-NeoX / LLaMA projections) or DiJiang.

Softmax attention goes through ``jaxlab.nn.dot_product_attention`` with a causal bool mask; with a
``KVCache`` the new keys/values are written at rows ``offset ..`` and the queries attend over the
cache rows at or before their own position.

DiJiang (``modeling_gpt_neox_dijiang.py`` of YuchuanTian/DiJiang, ``GPTNeoXAttention``):

    q, k, v = split(query_key_value(x))            # per head [q | k | v], as GPT-NeoX
    q, k    = partial rotate-half RoPE(q, k)
    qf, kf  = softmax(q @ P), softmax(k @ P)       # P = DCT_ortho @ diag(Phi^-1(u)), frozen
    o_n     = sum_{m<=n} D1[n] D2[m] <qf_n, kf_m> v_m
    out     = dense(silu(x @ W_G) * GroupNorm_{groups=head_dim}(merge_heads(o)))

jaxlab's choices, where the reference leaves room:

- ``P`` is frozen in the reference (``requires_grad=False``). Here it is not a parameter at all: it
  is ``dct_matrix(d) @ diag(w)`` with the per-layer ``w`` stored in the model config
  (``LMConfig.dijiang_weights``, filled by the converter from the checkpoint's ``proj_matrix``, or
  drawn from ``dijiang_seed`` when empty), so no optimizer can change it and ``model.json`` carries it.
- ``D1``, ``D2`` (trainable ``[heads, max_positions]`` tables initialised to ``gamma^n`` and
  ``gamma^-n``) are stored as their logarithms ``log_d1``/``log_d2``: ``gamma^-n`` overflows float32
  past ~2,800 positions, its log does not. The forward is the same function of ``D1 D2``; a
  gradient step on the log is a multiplicative step on ``D`` (the reference's is additive), so
  fine-tuning dynamics differ slightly. Alternatives: the raw tables (overflow beyond 2.8k
  tokens), or a single learnable ``gamma`` per head (RetNet; cannot load trained tables).
- The decay is indexed by absolute position (the reference indexes by the offset inside the
  current call, the same for a full forward; its incremental path is not a faithful decoder).
"""

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.nn import KVCache, dot_product_attention, init_kv_cache
from jaxlab.nn.modulation import group_norm
from jaxlab.nn.kv_cache import write_slice
from jaxlab.nn.linear import dense_general, logical_init
from jaxlab.nn.linear_attention import (
    dct_matrix,
    decayed_attention_chunked,
    decayed_attention_factorised,
    decayed_attention_parallel,
    decayed_attention_step,
    dijiang_features,
    retnet_log_decay,
)
from jaxlab.nn.rope import apply_rope, rope_sin_cos


class LinearState(NamedTuple):
    """DiJiang's decoding state: ``s [layers, B, heads, F, head_dim]`` float32, normalised by the key
    decay of the last position absorbed. Its size does not depend on the context length."""

    s: jax.Array


def init_cache(config, batch: int, length: int):
    """An empty decoding cache: ``KVCache`` of ``length`` rows (softmax) or a zero ``LinearState`` (DiJiang)."""
    if config.attention == "dijiang":
        shape = (config.num_layers, batch, config.num_heads, config.head_dim, config.head_dim)
        return LinearState(jnp.zeros(shape, jnp.float32))
    return init_kv_cache(config.num_layers, batch, length, config.num_kv_heads, config.head_dim, jnp.dtype(config.dtype))


def dijiang_weights(config, layer: int) -> np.ndarray:
    """Layer ``layer``'s QMC weights ``w [head_dim]`` (``Phi^-1`` of uniform draws), float64."""
    if config.dijiang_weights:
        return np.asarray(config.dijiang_weights[layer], np.float64)
    from scipy import special

    u = np.random.default_rng((config.dijiang_seed, layer)).random(config.head_dim)
    w = special.ndtri(u)
    return np.where(np.isfinite(w), w, 0.0)


def dijiang_projection(config, layer: int) -> np.ndarray:
    """``proj_matrix = C @ diag(w)`` ``[head_dim, head_dim]`` float32 of layer ``layer``."""
    return (dct_matrix(config.head_dim) @ np.diag(dijiang_weights(config, layer))).astype(np.float32)


def dijiang_projections(config) -> np.ndarray | None:
    """Every layer's projection, ``[layers, head_dim, head_dim]`` float32 (None for softmax attention)."""
    if config.attention != "dijiang":
        return None
    return np.stack([dijiang_projection(config, i) for i in range(config.num_layers)])


def _rotary(q, k, positions, config):
    """Rotate-half RoPE on the first ``rotary_dim`` features of ``q``, ``k`` ``[B, T, N, H]``."""
    r = config.rotary_dim
    if r == 0:
        return q, k
    sin, cos = rope_sin_cos(positions, r, config.rope_theta)
    rot = lambda x: jnp.concatenate([apply_rope(x[..., :r], sin, cos), x[..., r:]], axis=-1)  # noqa: E731
    return rot(q), rot(k)


class CausalSelfAttention(nn.Module):
    """``x [B, T, D]`` at ``positions [1, T]`` -> ``([B, T, D], this layer's new cache or None)``.

    Parameters (gpt_neox layout): ``query_key_value`` kernel ``[D, heads, 3, hd]`` (the reference's
    per-head interleaving), ``dense`` ``[heads, hd, D]``; (llama) ``q_proj [D, heads, hd]``,
    ``k_proj``/``v_proj [D, kv_heads, hd]``, ``o_proj [heads, hd, D]``. DiJiang adds ``W_G [D, D]``,
    ``group_norm`` and ``log_d1``/``log_d2 [heads, max_position_embeddings]``.
    """

    config: object  # LMConfig

    @nn.compact
    def __call__(self, x, positions, cache=None, offset=0, proj=None, segment_ids=None):
        """``proj [hd, hd]``: this layer's frozen DiJiang projection (``dijiang_projection``); None for softmax.
        ``segment_ids [B, T]`` (no cache): packed documents, each attending only to itself."""
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        n, kvh, hd, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, x.shape[-1]
        kw = dict(dtype=dtype, use_bias=cfg.use_bias, kernel_init=nn.initializers.normal(cfg.init_std))
        if cfg.layout == "gpt_neox":
            qkv = dense_general((n, 3, hd), ("embed", "heads", None, "kv"), name="query_key_value", **kw)(x)
            q, k, v = qkv[:, :, :, 0], qkv[:, :, :, 1], qkv[:, :, :, 2]
        else:
            q = dense_general((n, hd), ("embed", "heads", "kv"), name="q_proj", **kw)(x)
            k = dense_general((kvh, hd), ("embed", "heads", "kv"), name="k_proj", **kw)(x)
            v = dense_general((kvh, hd), ("embed", "heads", "kv"), name="v_proj", **kw)(x)
        q, k = _rotary(q, k, positions, cfg)
        q = nn.with_logical_constraint(q, ("batch", "length", "heads", "kv"))
        if cfg.attention == "dijiang":
            out, cache = self._dijiang(x, q, k, v, cache, offset, proj, segment_ids)
        else:
            out, cache = self._softmax(q, k, v, positions, cache, offset, segment_ids)
        out_name = "dense" if cfg.layout == "gpt_neox" else "o_proj"
        out = dense_general(d, ("heads", "kv", "embed"), axis=(-2, -1), name=out_name, **kw)(out.astype(dtype))
        return out, cache

    def _softmax(self, q, k, v, positions, cache, offset, segment_ids):
        if cache is None:
            # is_causal (not a [T, T] mask) lets the TPU/GPU flash kernels take unpacked training batches.
            mask = None if segment_ids is None else (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None]
            return dot_product_attention(q, k, v, mask=mask, is_causal=True), None
        k_all = write_slice(cache[0], k, offset, None)
        v_all = write_slice(cache[1], v, offset, None)
        mask = jnp.arange(k_all.shape[1])[None, :] <= positions[0][:, None]  # [T, L]
        out = dot_product_attention(q, k_all.astype(q.dtype), v_all.astype(q.dtype), mask=mask[None, None])
        return out, (k_all, v_all)

    def _dijiang(self, x, q, k, v, cache, offset, proj, segment_ids):
        cfg = self.config
        b, t, n, hd = q.shape
        d = x.shape[-1]
        if proj is None:
            raise ValueError("DiJiang attention needs its layer's projection matrix (CausalLM passes it)")
        log_d1_init, log_d2_init = retnet_log_decay(n, cfg.max_position_embeddings)
        log_d1 = self.param("log_d1", logical_init(lambda *_: jnp.asarray(log_d1_init), ("heads", "length")),
                            log_d1_init.shape, jnp.float32)
        log_d2 = self.param("log_d2", logical_init(lambda *_: jnp.asarray(log_d2_init), ("heads", "length")),
                            log_d2_init.shape, jnp.float32)
        gain2 = 2.0**-5  # xavier_uniform with gain 2^-2.5, as the reference's constructor
        w_g = self.param("W_G", logical_init(nn.initializers.variance_scaling(gain2, "fan_avg", "uniform"),
                                             ("embed", "mlp")), (d, d), jnp.float32)
        qf, kf = dijiang_features(q, proj), dijiang_features(k, proj)
        self.sow("intermediates", "q_feature", qf)
        self.sow("intermediates", "k_feature", kf)
        a = jax.lax.dynamic_slice_in_dim(log_d1, offset, t, axis=1)
        bb = jax.lax.dynamic_slice_in_dim(log_d2, offset, t, axis=1)
        new_cache = None
        if cache is not None:
            (state,) = cache
            prev = jax.lax.dynamic_index_in_dim(log_d2, jnp.maximum(offset - 1, 0), axis=1, keepdims=False)
            if t == 1:
                o, state = decayed_attention_step(state, qf[:, 0], kf[:, 0], v[:, 0], a[:, 0], bb[:, 0], prev)
                o = o[:, None]
            else:
                o, state = decayed_attention_chunked(qf, kf, v, a, bb, chunk=cfg.dijiang_chunk, state=state,
                                                     log_d2_prev_N=prev)
            new_cache = (state,)
        elif cfg.dijiang_form == "chunked":
            o, _ = decayed_attention_chunked(qf, kf, v, a, bb, chunk=cfg.dijiang_chunk, segment_ids=segment_ids)
        elif cfg.dijiang_form == "parallel":
            o = decayed_attention_parallel(qf, kf, v, a, bb, segment_ids=segment_ids)
        else:
            o = decayed_attention_factorised(qf, kf, v, jnp.exp(a), jnp.exp(bb), segment_ids=segment_ids)
        merged = o.reshape(b, t, n * hd)  # channel h * hd + i
        self.sow("intermediates", "attn_core_merged", merged)
        normed = group_norm(hd, 1e-5, jnp.float32, name="group_norm")(merged.reshape(b * t, n * hd))
        normed = normed.reshape(b, t, n * hd)
        gate = jax.nn.silu(jnp.einsum("btd,de->bte", x, w_g.astype(x.dtype)).astype(jnp.float32))
        self.sow("intermediates", "group_norm_out", normed)
        self.sow("intermediates", "gate", gate)
        return (gate * normed).reshape(b, t, n, hd), new_cache


__all__ = ["CausalSelfAttention", "KVCache", "LinearState", "dijiang_projection", "dijiang_weights", "init_cache"]
