"""Autoregressive generation: one jitted prefill + ``lax.while_loop`` decode, greedy / temperature / top-p.

Softmax models decode through a fixed-size ``KVCache`` of ``prompt + max_new_tokens`` rows; DiJiang
models through their recurrent state, whose size does not depend on the length. Prompts are
checked on the host before anything is traced: token ids outside the vocabulary and lengths
beyond the model's positions are errors, never NaNs or silently clamped gathers.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.models.lm import CausalLM, init_cache


def check_prompt(config, prompt_ids, max_new_tokens: int) -> np.ndarray:
    """Validates ``prompt_ids [B, P]`` on the host; returns it as int32 numpy."""
    ids = np.asarray(prompt_ids)
    if ids.ndim != 2 or ids.shape[1] < 1:
        raise ValueError(f"prompt_ids must be [batch, length >= 1] token ids, got shape {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"prompt_ids must be integers, got dtype {ids.dtype}")
    if ids.min() < 0 or ids.max() >= config.vocab_size:
        bad = ids[(ids < 0) | (ids >= config.vocab_size)]
        raise ValueError(f"token ids {sorted(set(bad.tolist()))[:8]} are outside the vocabulary [0, {config.vocab_size}); "
                         f"tokenise with the model's own tokenizer")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
    total = ids.shape[1] + max_new_tokens
    if total > config.max_position_embeddings:
        raise ValueError(f"prompt ({ids.shape[1]}) + max_new_tokens ({max_new_tokens}) = {total} exceeds the "
                         f"{config.max_position_embeddings} positions the model supports; shorten the prompt or "
                         f"generate fewer tokens")
    return ids.astype(np.int32)


def sample_token(logits_BV: jax.Array, rng: jax.Array, temperature: jax.Array, top_p: jax.Array, greedy: bool) -> jax.Array:
    """Next token ``[B]`` int32: argmax when ``greedy``, else nucleus sampling at ``temperature``.

    Top-p keeps the smallest set of most likely tokens whose probability reaches ``top_p`` (the
    most likely token is always kept); ``top_p = 1`` samples from the full distribution.
    """
    logits = logits_BV.astype(jnp.float32)
    if greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / temperature
    order = jnp.argsort(-logits, axis=-1)
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass of strictly more likely tokens
    sorted_logits = jnp.where(before < top_p, sorted_logits, -jnp.inf)
    choice = jax.random.categorical(rng, sorted_logits, axis=-1)
    return jnp.take_along_axis(order, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)


@functools.lru_cache(maxsize=32)
def _generate_fn(module: CausalLM, batch: int, prompt_len: int, max_new_tokens: int, greedy: bool, eos_id: int):
    cfg = module.config
    total = prompt_len + max_new_tokens

    def run(params, prompt, rng, temperature, top_p):
        cache = init_cache(cfg, batch, total)
        logits, cache = module.apply({"params": params}, prompt, cache=cache, offset=0)
        first = sample_token(logits[:, -1], jax.random.fold_in(rng, 0), temperature, top_p, greedy)
        out = jnp.zeros((batch, max_new_tokens), jnp.int32).at[:, 0].set(first)
        done = first == eos_id if eos_id >= 0 else jnp.zeros((batch,), bool)

        def cond(carry):
            i, _, _, _, done = carry
            return (i < max_new_tokens) & ~jnp.all(done)

        def body(carry):
            i, tok, cache, out, done = carry
            logits, cache = module.apply({"params": params}, tok[:, None], cache=cache, offset=prompt_len + i - 1)
            nxt = sample_token(logits[:, -1], jax.random.fold_in(rng, i), temperature, top_p, greedy)
            nxt = jnp.where(done, eos_id if eos_id >= 0 else 0, nxt)
            out = jax.lax.dynamic_update_index_in_dim(out, nxt, i, axis=1)
            done = done | (nxt == eos_id) if eos_id >= 0 else done
            return i + 1, nxt, cache, out, done

        fill = eos_id if eos_id >= 0 else 0
        out = jnp.where(jnp.arange(max_new_tokens)[None] == 0, out, fill)
        _, _, _, out, _ = jax.lax.while_loop(cond, body, (jnp.int32(1), first, cache, out, done))
        return jnp.concatenate([prompt, out], axis=1)

    return jax.jit(run)


def generate(module: CausalLM, params, prompt_ids, *, max_new_tokens: int, temperature: float = 0.0,
             top_p: float = 1.0, rng: jax.Array | None = None, eos_id: int | None = None) -> np.ndarray:
    """``prompt_ids [B, P]`` -> ``[B, P + max_new_tokens]`` int32 (prompt, then generated tokens).

    ``temperature == 0`` is greedy. After a row emits ``eos_id`` it is filled with ``eos_id``; the
    loop stops early once every row has. One compilation per (batch, P, max_new_tokens, greedy).
    """
    ids = check_prompt(module.config, prompt_ids, max_new_tokens)
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"temperature={temperature} must be >= 0 and top_p={top_p} in (0, 1]")
    if eos_id is not None and not 0 <= eos_id < module.config.vocab_size:
        raise ValueError(f"eos_id={eos_id} is outside the vocabulary [0, {module.config.vocab_size})")
    greedy = temperature == 0
    if rng is None:
        if not greedy:
            raise ValueError("sampling (temperature > 0) needs an rng key")
        rng = jax.random.key(0)
    fn = _generate_fn(module, ids.shape[0], ids.shape[1], int(max_new_tokens), greedy, -1 if eos_id is None else int(eos_id))
    out = fn(params, jnp.asarray(ids), rng, jnp.float32(max(temperature, 1e-6)), jnp.float32(top_p))
    return np.asarray(out)
