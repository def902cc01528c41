"""Per-position token proposals, confidences and top-k commitment shared by the DLM decoders.

All functions work on ``[B, T, V]`` logits (or ``[B, L]`` scores) with static shapes, inside jit.

Precision. Confidences are softmax probabilities in float32. The references use float32 (LLaDA
``generate`` at the pinned commit, DCD) or float64 (Fast-dLLM); the golden decisions are separated
by margins >= 7.6e-4, four orders of magnitude above the float32-vs-float64 difference.

Random proposals (temperature > 0) use the Gumbel-max trick in log space:
``argmax(logits / T + G)`` -- the same argmax as LLaDA's ``exp(logits) / (-log u)^T``, without
its overflow. LLaDA draws ``u`` in float64 on purpose (arXiv:2409.02908: a 24-bit uniform caps
the Gumbel variable at ~16.6 and makes sampling measurably too greedy). jaxlab keeps float32 but
draws ``G = -log(E)`` from an exponential variate ``E`` built from a *full-range* float32 uniform
(a geometric exponent from 64 random bits plus a 23-bit mantissa), so ``G`` reaches ~45 -- a
longer upper tail than the reference's float64 draw (~36.7); the lower tail is cut at -2.8
(probability 6e-8). The random stream is JAX's, so samples never match the reference's bits.
"""

import jax
import jax.numpy as jnp

NEG_INF = -jnp.inf


def exponential_full_range(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """``Exp(1)`` samples, float32, with full relative precision for small values."""
    w1, w2, mantissa = jax.random.bits(key, (3, *shape), jnp.uint32)
    exponent = jax.lax.clz(w1) + jnp.where(w1 == 0, jax.lax.clz(w2), jnp.uint32(0))  # P(k) = 2^-(k+1)
    fraction = (mantissa >> 9).astype(jnp.float32) * jnp.float32(2.0**-23)
    v = (1.0 + fraction) * jnp.exp2(-(exponent.astype(jnp.float32) + 1.0))  # uniform on (0, 1)
    return -jnp.log1p(-v)


def gumbel(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Standard Gumbel samples ``-log(E)``, float32 (see the module docstring)."""
    return -jnp.log(exponential_full_range(key, shape))


def max_probability(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(max softmax probability, argmax)`` over the last axis, float32 / int32.

    ``max_j softmax(x)_j = 1 / sum_j exp(x_j - max x)``: exactly what ``softmax(x).max()`` evaluates.
    """
    x = logits.astype(jnp.float32)
    top = jnp.max(x, axis=-1, keepdims=True)
    conf = 1.0 / jnp.sum(jnp.exp(x - top), axis=-1)
    return conf, jnp.argmax(x, axis=-1).astype(jnp.int32)


def probability_of(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """``softmax(logits)[..., tokens]`` in float32."""
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(probs, tokens[..., None], axis=-1)[..., 0]


def negative_entropy(logits: jax.Array) -> jax.Array:
    """DCD's ``neg_entropy`` confidence ``sum p log(p + 1e-10)`` (<= 0; higher = more certain)."""
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.sum(probs * jnp.log(probs + 1e-10), axis=-1)


def top_k_logits(logits: jax.Array, k: int) -> jax.Array:
    """Keeps the ``k`` largest logits (ties with the k-th kept), the rest -> dtype min (DCD ``top_k_logits``)."""
    k = min(k, logits.shape[-1])
    kth = jax.lax.top_k(logits, k)[0][..., -1:]
    return jnp.where(logits < kth, jnp.finfo(logits.dtype).min, logits)


def top_p_logits(logits: jax.Array, p: float) -> jax.Array:
    """Nucleus filtering as DCD's ``top_p_logits``: drop tokens once the cumulative mass exceeds ``p``.

    The most probable token is always kept.
    """
    order = jnp.argsort(-logits, axis=-1)
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    cumulative = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
    remove_sorted = jnp.concatenate([jnp.zeros_like(cumulative[..., :1], bool), cumulative[..., :-1] > p], axis=-1)
    remove = jnp.put_along_axis(jnp.zeros_like(remove_sorted), order, remove_sorted, axis=-1, inplace=False)
    return jnp.where(remove, jnp.finfo(logits.dtype).min, logits)


def top_k_mask(scores: jax.Array, eligible: jax.Array, k: jax.Array) -> jax.Array:
    """Per row, the ``k[b]`` eligible positions with the highest ``scores`` -> bool ``[B, L]``.

    ``torch.topk`` over scores with ineligible entries at -inf; equal scores go to the lower index
    (torch leaves ties unspecified). ``k`` larger than the number of eligible positions selects them all.
    """
    s = jnp.where(eligible, scores, NEG_INF)
    order = jnp.argsort(s, axis=-1, stable=True, descending=True)
    ranks = jnp.broadcast_to(jnp.arange(s.shape[-1], dtype=jnp.int32), s.shape)
    rank = jnp.put_along_axis(jnp.zeros_like(ranks), order, ranks, axis=-1, inplace=False)
    return eligible & (rank < k[:, None])


def threshold_count(scores: jax.Array, eligible: jax.Array, threshold: float) -> jax.Array:
    """``max(#eligible with score >= threshold, 1 if any eligible)`` per row (int32 ``[B]``)."""
    above = jnp.sum(eligible & (scores >= threshold), axis=-1)
    return jnp.maximum(above, jnp.any(eligible, axis=-1)).astype(jnp.int32)


def top2_margin(logits: jax.Array) -> jax.Array:
    """DCD's ``topk_margin`` confidence: ``p_(1) - p_(2)`` (largest minus second softmax probability), float32.

    DCD's ``sample_tokens`` (``margin_confidence=True``) writes ``sorted_probs[:, 0] - sorted_probs[:, 1]``,
    copied from Dream's sampler where ``probs`` is ``[N, V]``; on DCD's ``[B, W, V]`` window logits that
    indexes window positions, not ranks (a shape error or garbage). This is the intended per-token margin.
    """
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    top2 = jax.lax.top_k(probs, 2)[0]
    return top2[..., 0] - top2[..., 1]


def factor_count(scores: jax.Array, eligible: jax.Array, factor: float) -> jax.Array:
    """Fast-dLLM's factor rule (``get_transfer_index_dynamic``): how many to commit per row (int32 ``[B]``).

    With the eligible scores sorted, ``c_1 >= c_2 >= ...``, the ``n``-th passes when
    ``c_n >= 1 - factor / (n + 1)`` (i.e. ``(n + 1)(1 - c_n) <= factor``; the first always passes), and
    the count is the number of leading passes: the largest ``n`` with ``(n+1)(1 - c_n) <= f``, since
    ``(n+1)(1 - c_n)`` grows with ``n``. Reference quirk kept: when the first failure is the *last*
    eligible position, the reference's loop (``if top_i == len - 1: top_i += 1``) commits all of them.
    Zero eligible positions -> 0 (the reference would raise).
    """
    s = jnp.where(eligible, scores.astype(jnp.float32), NEG_INF)
    ordered = -jnp.sort(-s, axis=-1)
    m = jnp.sum(eligible, axis=-1).astype(jnp.int32)
    n = jnp.arange(s.shape[-1], dtype=jnp.int32)
    thresh = jnp.where(n == 0, -1.0, 1.0 - factor / (n + 2.0).astype(jnp.float32))
    fail = (ordered < thresh) & (n[None] < m[:, None])
    first_fail = jnp.min(jnp.where(fail, n[None], m[:, None]), axis=-1)
    return jnp.where(first_fail >= m - 1, m, first_fail).astype(jnp.int32)
