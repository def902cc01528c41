"""Decayed causal linear attention (DiJiang / RetNet style): three forms of one kernel.

For query/key feature maps ``qf, kf [B, T, N, F]`` (non-negative), values ``v [B, T, N, H]`` and a
per-head, per-position decay written in log space, ``a [N, T]`` (log of DiJiang's ``D1``) and
``b [N, T]`` (log of ``D2``), every form computes

    o_n = sum_{m <= n} exp(a_n + b_m) <qf_n, kf_m> v_m          (no normaliser, no 1/sqrt(d))

DiJiang initialises ``D1[n] = gamma^n`` and ``D2[m] = gamma^-m``, so ``exp(a_n + b_m) = gamma^(n-m)``:
RetNet's decay. The forms:

- ``decayed_attention_parallel``: the reference's ``T x T`` form with the decay combined in log
  space before it is exponentiated (always finite; O(T^2) memory). Used for equivalence.
- ``decayed_attention_factorised``: the reference's literal arithmetic, ``(qf * D1)(kf * D2)^T``.
  ``D2 = gamma^-m`` overflows float32 (and bfloat16, which has the same exponent range) for
  ``m > 88.7 / -log(gamma)`` (about 2,800 tokens for DiJiang's fastest head, gamma = 1 - 1/32) and
  float16 past about 350 tokens. Kept to show that failure (tests, docs/lm.md).
- ``decayed_attention_chunked``: blocks of ``chunk`` tokens; inside a block the parallel form,
  across blocks a ``[F, H]`` state per head carried by ``lax.scan``. The state is normalised by
  the key decay of the last position it has absorbed, so every exponent is a *difference*
  ``b_m - b_ref <= 0`` or a sum ``a_n + b_m`` with ``m <= n``: nothing overflows at any length.
  Training and prefill use this form.
- ``decayed_attention_step``: the recurrent form for decoding, one token per call with an
  O(1)-size state ``R [B, N, F, H]``: ``R_n = exp(b_{n-1} - b_n) R_{n-1} + kf_n^T v_n``,
  ``o_n = exp(a_n + b_n) qf_n R_n``.

All forms compute in float32 whatever the input dtype (the state sums thousands of terms) and
return float32. ``dijiang_features`` is DiJiang's feature map.
"""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import fft as _fft
from scipy import special as _special


def dct_matrix(d: int) -> np.ndarray:
    """The orthonormal DCT-II matrix ``C [d, d]`` float64, ``C[k, n] = s_k cos(pi k (2n + 1) / (2d))``.

    ``s_0 = sqrt(1/d)``, ``s_k = sqrt(2/d)``: ``scipy.fft.dct(eye(d), axis=0, norm="ortho")``.
    """
    return _fft.dct(np.eye(d), axis=0, norm="ortho")


def dijiang_projection(rng: np.random.Generator | jax.Array, d: int) -> np.ndarray:
    """A new DiJiang ``proj_matrix = C @ diag(Phi^-1(u))``, ``u ~ U[0, 1)^d``, ``[d, d]`` float32.

    As the released ``_build_projection``: ordinary pseudo-random ``u`` (no low-discrepancy
    sequence), ``Phi^-1(0) = -inf`` replaced by 0. ``rng``: a numpy Generator or a JAX key.
    """
    if isinstance(rng, np.random.Generator):
        u = rng.random(d)
    else:
        u = np.asarray(jax.random.uniform(rng, (d,), jnp.float32), np.float64)
    w = _special.ndtri(u)
    w = np.where(np.isfinite(w), w, 0.0)
    return (dct_matrix(d) @ np.diag(w)).astype(np.float32)


def retnet_log_decay(num_heads: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """``(log D1, log D2)``, each ``[num_heads, length]`` float32, DiJiang's initial decay.

    ``gamma_h = 1 - exp(linspace(log(1/32), log(1/512), num_heads))[h]``; ``D1[h, n] = gamma_h^n``,
    ``D2[h, n] = gamma_h^-n`` (the released ``_get_D1`` / ``_get_D2``), here as logs so that any
    length is representable.
    """
    gamma = 1.0 - np.exp(np.linspace(np.log(1 / 32), np.log(1 / 512), num_heads))
    n = np.arange(length, dtype=np.float64)
    log_d1 = np.log(gamma)[:, None] * n[None]
    return log_d1.astype(np.float32), (-log_d1).astype(np.float32)


def dijiang_features(x_BTNH: jax.Array, proj_HF: jax.Array) -> jax.Array:
    """DiJiang's feature map ``softmax(x @ proj_matrix)`` over the feature axis; ``[B, T, N, F]`` float32."""
    z = jnp.einsum("btnh,hf->btnf", x_BTNH.astype(jnp.float32), proj_HF.astype(jnp.float32))
    return jax.nn.softmax(z, axis=-1)


def _causal(t: int, s: int | None = None) -> jax.Array:
    s = t if s is None else s
    return jnp.arange(t)[:, None] >= jnp.arange(s)[None, :]


def _same_segment(segment_ids_BT, s_BT=None):
    """``[B, 1, T, S]`` bool: query and key in the same document (packed sequences)."""
    s_BT = segment_ids_BT if s_BT is None else s_BT
    return (segment_ids_BT[:, :, None] == s_BT[:, None, :])[:, None]


def decayed_attention_parallel(qf, kf, v, log_d1_NT, log_d2_NT, segment_ids=None) -> jax.Array:
    """The ``T x T`` form, decay combined in log space: ``[B, T, N, H]`` float32.

    ``segment_ids [B, T]`` (optional): packed documents; a query sees only keys of its own document.
    """
    t = qf.shape[1]
    scores = jnp.einsum("btnf,bsnf->bnts", qf.astype(jnp.float32), kf.astype(jnp.float32))
    log_decay = log_d1_NT[:, :, None] + log_d2_NT[:, None, :]  # [N, T, S]
    mask = _causal(t)
    decay = jnp.where(mask[None], jnp.exp(jnp.where(mask[None], log_decay, 0.0)), 0.0)[None]
    if segment_ids is not None:
        decay = jnp.where(_same_segment(segment_ids), decay, 0.0)
    return jnp.einsum("bnts,bsnh->btnh", scores * decay, v.astype(jnp.float32))


def decayed_attention_factorised(qf, kf, v, d1_NT, d2_NT, dtype=jnp.float32, segment_ids=None) -> jax.Array:
    """The reference's literal ``((qf * D1) (kf * D2)^T * mask) v`` computed in ``dtype``.

    ``d1_NT``, ``d2_NT`` are the decay tables themselves (not logs). Overflows for long inputs:
    see the module docstring. Returns ``[B, T, N, H]`` in ``dtype``.
    """
    t = qf.shape[1]
    qd = qf.astype(dtype) * d1_NT.T[None, :, :, None].astype(dtype)
    kd = kf.astype(dtype) * d2_NT.T[None, :, :, None].astype(dtype)
    scores = jnp.einsum("btnf,bsnf->bnts", qd, kd, preferred_element_type=dtype)
    mask = _causal(t)[None, None]
    if segment_ids is not None:
        mask = mask & _same_segment(segment_ids)
    scores = jnp.where(mask, scores, jnp.zeros((), dtype))
    return jnp.einsum("bnts,bsnh->btnh", scores, v.astype(dtype), preferred_element_type=dtype)


def decayed_attention_chunked(
    qf, kf, v, log_d1_NT, log_d2_NT, *, chunk: int = 64, state=None, log_d2_prev_N=None, segment_ids=None
) -> tuple[jax.Array, jax.Array]:
    """Blockwise form: ``(o [B, T, N, H] float32, final state [B, N, F, H] float32)``.

    ``state`` (default zeros) is the recurrent state of the positions before this call, normalised
    by their last key decay ``log_d2_prev_N [N]``; the returned state is normalised by
    ``log_d2_NT[:, -1]``. A trailing partial block is padded with zero values (which add nothing).
    ``segment_ids [B, T]`` (optional, non-decreasing along T; not with ``state``): packed documents.
    The state then only ever holds the current document: a block whose last document differs from
    the state's drops the carried state, and queries of another document do not read it.
    """
    b, t, n, f = qf.shape
    h = v.shape[-1]
    c = max(1, min(int(chunk), t))
    pad = (-t) % c
    qf, kf, v = (x.astype(jnp.float32) for x in (qf, kf, v))
    a, bb = log_d1_NT.astype(jnp.float32), log_d2_NT.astype(jnp.float32)
    if segment_ids is not None and state is not None:
        raise ValueError("segment_ids cannot be combined with a carried state (decoding is one document per row)")
    seg = jnp.zeros((b, t), jnp.int32) if segment_ids is None else segment_ids.astype(jnp.int32)
    if pad:
        qf, kf, v = (jnp.pad(x, ((0, 0), (0, pad), (0, 0), (0, 0))) for x in (qf, kf, v))
        a, bb = (jnp.pad(x, ((0, 0), (0, pad)), mode="edge") for x in (a, bb))
        seg = jnp.pad(seg, ((0, 0), (0, pad)), mode="edge")
    k_blocks = (t + pad) // c
    if state is None:
        state = jnp.zeros((b, n, f, h), jnp.float32)
        log_d2_prev_N = bb[:, 0]
    ref0 = log_d2_prev_N.astype(jnp.float32)

    def blocks(x):  # [B, K*C, N, X] -> [K, B, C, N, X]
        return x.reshape(b, k_blocks, c, n, x.shape[-1]).transpose(1, 0, 2, 3, 4)

    a_k = a.reshape(n, k_blocks, c).transpose(1, 0, 2)  # [K, N, C]
    b_k = bb.reshape(n, k_blocks, c).transpose(1, 0, 2)
    seg_k = seg.reshape(b, k_blocks, c).transpose(1, 0, 2)  # [K, B, C]
    mask = _causal(c)

    def body(carry, xs):
        s_BNFH, ref_N, seg_B = carry
        q, k, val, a_NC, b_NC, seg_BC = xs
        # Inside the block: exp(a_i + b_j), j <= i, same document.
        log_intra = a_NC[:, :, None] + b_NC[:, None, :]
        intra = jnp.where(mask[None], jnp.exp(jnp.where(mask[None], log_intra, 0.0)), 0.0)[None]
        intra = jnp.where(_same_segment(seg_BC), intra, 0.0)
        scores = jnp.einsum("bcnf,bsnf->bncs", q, k) * intra
        out = jnp.einsum("bncs,bsnh->bcnh", scores, val)
        # From earlier blocks: exp(a_i + ref) qf_i S, for queries in the state's document.
        q_scale = jnp.exp(a_NC + ref_N[:, None]).T[None, :, :, None]  # [1, C, N, 1]
        reads = (seg_BC == seg_B[:, None])[:, :, None, None]
        out = out + jnp.einsum("bcnf,bnfh->bcnh", jnp.where(reads, q * q_scale, 0.0), s_BNFH)
        # New state (the block's last document only), normalised by the block's last key decay.
        new_ref, new_seg = b_NC[:, -1], seg_BC[:, -1]
        k_scale = jnp.exp(b_NC - new_ref[:, None]).T[None, :, :, None]  # <= 1 for a growing b
        writes = (seg_BC == new_seg[:, None])[:, :, None, None]
        keep = (new_seg == seg_B)[:, None, None, None]
        carried = jnp.where(keep, s_BNFH * jnp.exp(ref_N - new_ref)[None, :, None, None], 0.0)
        s_BNFH = carried + jnp.einsum("bcnf,bcnh->bnfh", jnp.where(writes, k * k_scale, 0.0), val)
        return (s_BNFH, new_ref, new_seg), out

    init = (state.astype(jnp.float32), ref0, seg[:, 0])
    (state, _, _), out = jax.lax.scan(body, init, (blocks(qf), blocks(kf), blocks(v), a_k, b_k, seg_k))
    # Padded positions repeat the last decay (edge padding), so the state's normaliser is log D2[T-1].
    out = out.transpose(1, 0, 2, 3, 4).reshape(b, k_blocks * c, n, h)
    return out[:, :t], state


def decayed_attention_step(state_BNFH, qf_BNF, kf_BNF, v_BNH, log_d1_N, log_d2_N, log_d2_prev_N):
    """One recurrent step at position ``n``: ``(o [B, N, H] float32, new state [B, N, F, H])``.

    ``state`` is normalised by ``log_d2_prev_N = log D2[n - 1]`` (any finite value with a zero
    state at ``n = 0``); the new state is normalised by ``log_d2_N = log D2[n]``.
    """
    carry = jnp.exp(log_d2_prev_N - log_d2_N).astype(jnp.float32)[None, :, None, None]
    state = state_BNFH * carry + jnp.einsum("bnf,bnh->bnfh", kf_BNF.astype(jnp.float32), v_BNH.astype(jnp.float32))
    scale = jnp.exp(log_d1_N + log_d2_N)[None, :, None]
    out = jnp.einsum("bnf,bnfh->bnh", qf_BNF.astype(jnp.float32) * scale, state)
    return out, state
