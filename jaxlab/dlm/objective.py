"""The masked-diffusion training objective of LLaDA (``ML-GSAI/LLaDA`` GUIDELINES.md).

Forward process: per sequence ``t ~ U(0, 1)``, ``p_mask = (1 - eps) t + eps`` (eps = 1e-3, so no
sequence is left unmasked with certainty); per token ``u ~ U(0, 1)``; token masked iff
``u < p_mask``; masked tokens become ``mask_id``. The model sees the noisy batch and is scored by
the cross-entropy of the clean token at each masked position, weighted by ``1 / p_mask``:

- pre-training: ``loss = sum(CE / p_mask over masked) / (b * l)`` -- normalised by the number of
  positions, not by the number of masked tokens (this is what makes it an unbiased ELBO estimate).
- SFT: the prompt (positions ``< prompt_length``) is never masked; each masked answer token's
  ``CE / p_mask`` is further divided by its row's answer length ``l - prompt_length`` and the sum
  is divided by ``b``.

The functions here are pure and take the random draws ``t [b]`` and ``u [b, l]`` as inputs, so
the golden test can feed the reference's stored draws; ``draw_noise`` makes them from a key.
GUIDELINES' 1% random-length crop of pre-training batches is not applied (data pipelines can crop).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

MASK_EPS = 1e-3


def mask_probability(t: jax.Array, eps: float = MASK_EPS) -> jax.Array:
    """``p_mask = (1 - eps) t + eps``; same shape as ``t``."""
    return (1.0 - eps) * t + eps


def draw_noise(rng: jax.Array, batch: int, length: int) -> tuple[jax.Array, jax.Array]:
    """``t [batch]`` in ``(0, 1]`` and ``u [batch, length]`` in ``[0, 1)``, float32."""
    rng_t, rng_u = jax.random.split(rng)
    t = 1.0 - jax.random.uniform(rng_t, (batch,), jnp.float32)
    u = jax.random.uniform(rng_u, (batch, length), jnp.float32)
    return t, u


def forward_process(
    tokens: jax.Array,
    t: jax.Array,
    u: jax.Array,
    mask_id: int,
    *,
    prompt_lengths: jax.Array | None = None,
    eps: float = MASK_EPS,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Masks clean ``tokens [b, l]`` int -> ``(noisy [b, l], masked [b, l] bool, p_mask [b, l] f32)``.

    ``t [b]`` and ``u [b, l]`` are the uniform draws. With ``prompt_lengths [b]`` (SFT) positions
    before each row's prompt length keep their clean token and are not counted as masked.
    """
    b, l = tokens.shape
    if t.shape != (b,) or u.shape != (b, l):
        raise ValueError(f"forward_process: t must be [{b}] and u [{b}, {l}], got {t.shape} and {u.shape}")
    p_mask = jnp.broadcast_to(mask_probability(t.astype(jnp.float32), eps)[:, None], (b, l))
    masked = u < p_mask
    if prompt_lengths is not None:
        masked &= jnp.arange(l)[None, :] >= jnp.asarray(prompt_lengths)[:, None]
    noisy = jnp.where(masked, jnp.asarray(mask_id, tokens.dtype), tokens)
    return noisy, masked, p_mask


def weighted_token_ce(logits: jax.Array, tokens: jax.Array, masked: jax.Array, p_mask: jax.Array) -> jax.Array:
    """``CE(logits, tokens) / p_mask`` at masked positions, 0 elsewhere: ``[b, l]`` float32 (nats).

    ``logits [b, l, V]`` (any float dtype; the softmax runs in float32), ``tokens [b, l]`` int.
    """
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    ce = -jnp.take_along_axis(logp, tokens[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return jnp.where(masked, ce / p_mask, 0.0)


def pretrain_loss(token_loss: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``token_loss [b, l]`` -> ``(loss [], per_seq_loss [b])``: sums divided by ``b*l`` and ``l``."""
    per_seq = jnp.sum(token_loss, axis=1) / token_loss.shape[1]
    return jnp.mean(per_seq), per_seq


def sft_loss(token_loss: jax.Array, prompt_lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``token_loss [b, l]`` (zero on the prompt) -> ``(loss [], per_seq_loss [b])``.

    Each row's sum is divided by its answer length ``l - prompt_length``; the loss is the mean
    over rows (GUIDELINES: ``sum(CE / p_mask / answer_length) / b``).
    """
    answer_length = token_loss.shape[1] - jnp.asarray(prompt_lengths, jnp.float32)
    per_seq = jnp.sum(token_loss, axis=1) / answer_length
    return jnp.mean(per_seq), per_seq


def masked_diffusion_loss(
    logits_fn: Callable[[jax.Array], jax.Array],
    tokens: jax.Array,
    t: jax.Array,
    u: jax.Array,
    mask_id: int,
    *,
    prompt_lengths: jax.Array | None = None,
    eps: float = MASK_EPS,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The whole objective for one batch: ``(loss [], aux)``.

    ``logits_fn(noisy [b, l]) -> logits [b, l, V]`` is the model. ``prompt_lengths=None`` gives the
    pre-training loss; an array ``[b]`` gives the SFT loss (prompt kept clean). ``aux`` holds
    ``token_loss [b, l]`` (CE / p_mask at masked positions, 0 elsewhere), ``per_seq_loss [b]`` (row
    sum / l, or / answer length for SFT; the loss is its mean), ``masked [b, l]``, ``noisy [b, l]``
    and ``logits [b, l, V]``.
    """
    noisy, masked, p_mask = forward_process(tokens, t, u, mask_id, prompt_lengths=prompt_lengths, eps=eps)
    logits = logits_fn(noisy)
    weighted = weighted_token_ce(logits, tokens, masked, p_mask)
    if prompt_lengths is None:
        loss, per_seq = pretrain_loss(weighted)
    else:
        loss, per_seq = sft_loss(weighted, prompt_lengths)
    return loss, {"token_loss": weighted, "per_seq_loss": per_seq, "masked": masked, "noisy": noisy, "logits": logits}
