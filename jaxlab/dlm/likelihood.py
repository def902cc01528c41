"""Monte-Carlo log-likelihood of an answer under a masked diffusion LM (LLaDA ``get_log_likelihood.py``).

A masked diffusion model gives no exact likelihood, only the lower bound (LLaDA, Appendix B.5)

    log p(a | prompt) >= E_{k ~ U{1..L}} E_{S ~ k-subset of the L answer positions}
                         [ (L / k) * sum_{i in S} log p_theta(a_i | prompt, a with S masked) ].

It equals the average over all L! orders of the any-order autoregressive log-likelihood
(``any_order_log_likelihood``), so it is exact when the model is a consistent joint.

The estimator draws ``mc_num`` masks in mini-batches of ``batch_size``; inside a mini-batch the
mask counts are *stratified* like the reference: ``k0 ~ U{1..L}``, counts
``round(linspace(k0, k0 + (b-1) L / b, b))`` wrapped into ``1..L``, each row then masks exactly its
count of answer positions chosen uniformly. The prompt is never masked. Optional unsupervised
classifier-free guidance (``cfg_scale > 0``) runs a second batch with the prompt masked too and
uses ``un + (s + 1) (cond - un)``. Everything is in nats; shapes are static, so the functions jit.
"""

import itertools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

LogitsFn = Callable[[jax.Array], jax.Array]  # tokens [b, l] int32 -> logits [b, l, V]


def stratified_mask_counts(rng: jax.Array, batch: int, answer_length: int) -> jax.Array:
    """``[batch]`` int32 mask counts in ``1..answer_length``, evenly spread from a random start.

    ``round(linspace(k0, k0 + (batch-1) L / batch, batch))`` with torch's float32 ``linspace``
    (from the start for the first half, back from the end for the second) and round-half-even,
    wrapped into ``1..L``.
    """
    k0 = jax.random.randint(rng, (), 1, answer_length + 1).astype(jnp.float32)
    end = k0 + np.float32((batch - 1) * (answer_length / batch))
    i = jnp.arange(batch, dtype=jnp.float32)
    step = (end - k0) / max(batch - 1, 1)
    values = jnp.where(i < batch // 2, k0 + step * i, end - step * (batch - 1 - i))
    counts = jnp.round(values).astype(jnp.int32)
    return (counts - 1) % answer_length + 1


def masks_with_counts(rng: jax.Array, counts: jax.Array, prompt_length: int, answer_length: int) -> jax.Array:
    """``[b, P + L]`` bool: row ``i`` masks exactly ``counts[i]`` answer positions, uniformly at random."""
    keys = jax.random.uniform(rng, (counts.shape[0], answer_length))
    rank = jnp.argsort(jnp.argsort(keys, axis=1), axis=1)  # a uniformly random permutation per row
    answer_mask = rank < counts[:, None]
    return jnp.concatenate([jnp.zeros((counts.shape[0], prompt_length), bool), answer_mask], axis=1)


def guided_logits(logits_fn: LogitsFn, tokens: jax.Array, prompt_length: int, mask_id: int, cfg_scale: float):
    """``logits_fn(tokens)``, or with ``cfg_scale > 0`` LLaDA's unsupervised CFG against a prompt-masked copy.

    ``cfg_scale`` is a Python float (it selects the computation; pass it as a static argument to jit).
    """
    if cfg_scale <= 0:
        return logits_fn(tokens)
    unconditional = tokens.at[:, :prompt_length].set(mask_id)
    cond, uncond = jnp.split(logits_fn(jnp.concatenate([tokens, unconditional])), 2)
    return uncond + (cfg_scale + 1.0) * (cond - uncond)


def elbo_terms(
    logits_fn: LogitsFn, seq: jax.Array, masks: jax.Array, prompt_length: int, mask_id: int, cfg_scale: float = 0.0
) -> jax.Array:
    """``-(L / k) * sum_{masked} CE`` per row: ``[b]`` float32, one unbiased draw of the bound each.

    ``seq [P + L]`` int (prompt + answer), ``masks [b, P + L]`` bool with ``k >= 1`` answer positions
    masked per row (prompt positions must be False).
    """
    answer_length = seq.shape[0] - prompt_length
    tokens = jnp.where(masks, jnp.asarray(mask_id, seq.dtype), seq[None, :])
    logits = guided_logits(logits_fn, tokens, prompt_length, mask_id, cfg_scale)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    token_logp = jnp.take_along_axis(logp, jnp.broadcast_to(seq, masks.shape)[..., None].astype(jnp.int32), -1)[..., 0]
    counts = jnp.sum(masks, axis=1).astype(jnp.float32)
    return jnp.sum(jnp.where(masks, token_logp, 0.0), axis=1) * (answer_length / counts)


def log_likelihood(
    logits_fn: LogitsFn,
    prompt: jax.Array,
    answer: jax.Array,
    rng: jax.Array,
    *,
    mask_id: int,
    mc_num: int = 128,
    batch_size: int = 16,
    cfg_scale: float = 0.0,
    return_draws: bool = False,
):
    """Monte-Carlo estimate of the ELBO of ``answer [L]`` given ``prompt [P]`` (nats, float32 scalar).

    ``mc_num`` must be a multiple of ``batch_size`` (the reference silently drops the remainder).
    With ``return_draws`` also returns the ``[mc_num]`` per-draw values (their mean is the estimate;
    their standard deviation / sqrt(mc_num) bounds its error, stratification makes it smaller).
    """
    if mc_num % batch_size or mc_num <= 0:
        raise ValueError(f"mc_num={mc_num} must be a positive multiple of batch_size={batch_size}")
    prompt, answer = jnp.asarray(prompt), jnp.asarray(answer)
    if prompt.ndim != 1 or answer.ndim != 1 or answer.shape[0] < 1:
        raise ValueError(f"prompt and answer must be 1-D id arrays (answer non-empty), got {prompt.shape}, {answer.shape}")
    seq = jnp.concatenate([prompt, answer]).astype(jnp.int32)
    prompt_length, answer_length = prompt.shape[0], answer.shape[0]

    def one_batch(_, key):
        key_counts, key_masks = jax.random.split(key)
        counts = stratified_mask_counts(key_counts, batch_size, answer_length)
        masks = masks_with_counts(key_masks, counts, prompt_length, answer_length)
        return None, elbo_terms(logits_fn, seq, masks, prompt_length, mask_id, cfg_scale)

    _, draws = jax.lax.scan(one_batch, None, jax.random.split(rng, mc_num // batch_size))
    draws = draws.reshape(-1)
    return (jnp.mean(draws), draws) if return_draws else jnp.mean(draws)


def _all_answer_masks(prompt_length: int, answer_length: int) -> np.ndarray:
    """Every non-empty subset of the answer positions: ``[2^L - 1, P + L]`` bool."""
    subsets = np.array(list(itertools.product([False, True], repeat=answer_length))[1:], bool)
    return np.concatenate([np.zeros((len(subsets), prompt_length), bool), subsets], axis=1)


def exact_elbo(logits_fn: LogitsFn, prompt, answer, *, mask_id: int, cfg_scale: float = 0.0) -> jax.Array:
    """The bound itself by enumerating all ``2^L - 1`` masks (small L only): float32 scalar, nats.

    ``E_k E_{S|k}`` with ``k`` uniform on ``1..L`` and ``S`` uniform among the ``C(L, k)`` subsets.
    """
    prompt, answer = np.asarray(prompt), np.asarray(answer)
    if answer.shape[0] > 16:
        raise ValueError(f"exact_elbo enumerates 2^L masks; L={answer.shape[0]} is too long (use log_likelihood)")
    seq = jnp.asarray(np.concatenate([prompt, answer]), jnp.int32)
    length = answer.shape[0]
    masks = _all_answer_masks(prompt.shape[0], length)
    counts = masks.sum(1)
    subset_prob = np.array([1.0 / (length * math.comb(length, k)) for k in counts], np.float32)
    terms = elbo_terms(logits_fn, seq, jnp.asarray(masks), prompt.shape[0], mask_id, cfg_scale)
    return jnp.sum(terms * subset_prob)


def any_order_log_likelihood(logits_fn: LogitsFn, prompt, answer, *, mask_id: int) -> jax.Array:
    """Average over all ``L!`` orders of ``sum_j log p(a_{o_j} | prompt, a_{o_<j})`` (tiny L only).

    Each term reveals the answer in order ``o`` and scores the next position with the rest masked;
    equals ``exact_elbo`` for any network (a check of the 1/k weighting), nats.
    """
    prompt, answer = np.asarray(prompt), np.asarray(answer)
    length = answer.shape[0]
    if length > 7:
        raise ValueError(f"any_order_log_likelihood enumerates L! orders; L={length} is too long")
    seq = np.concatenate([prompt, answer]).astype(np.int32)
    orders = list(itertools.permutations(range(length)))
    rows, targets = [], []
    for order in orders:
        for j, pos in enumerate(order):
            row = seq.copy()
            hidden = [prompt.shape[0] + p for p in order[j:]]
            row[hidden] = mask_id
            rows.append(row)
            targets.append(prompt.shape[0] + pos)
    logits = logits_fn(jnp.asarray(np.stack(rows)))
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    idx = np.arange(len(rows))
    targets = np.asarray(targets)
    return jnp.sum(logp[idx, targets, seq[targets]]) / len(orders)
