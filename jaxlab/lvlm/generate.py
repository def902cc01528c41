"""Jitted prefill + decode for ``jaxlab.models.lvlm.LVLM`` with a fixed-size KV cache.

``generate(module, params, input_ids, image_grid_thw, attention_mask, pixel_values=...,
max_new_tokens=..., temperature=0.0, rng=None)`` -> new tokens ``[B, max_new_tokens]`` int32.

Host work, once per batch layout: the layout checks (``check_image_layout``), the vision
tower's window layout. Everything else is one jitted function: the position ids
(``rope_index`` for each scheme the layers use), a prefill that writes the cache slots
``0 .. L-1`` (left padding: padded keys are masked), then a ``lax.scan`` over the new tokens.

Decode-time positions follow the reference (transformers 4.49 ``Qwen2_5_VLForConditionalGeneration``
with the Circle-RoPE patch): the token at cache slot ``p`` gets ``p + rope_delta`` on all three
channels, for *every* layer (under AGE the cached ``rope_deltas`` are the Circle-RoPE ones and
the per-layer schedule is not applied after prefill). Sampling: ``temperature == 0`` is greedy
(argmax), otherwise ``categorical(logits / temperature)``. After ``eos_id`` a row keeps emitting
``eos_id``.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.lvlm.positions import check_image_layout, decode_positions, rope_index
from jaxlab.models.lvlm import init_cache
from jaxlab.models.lvlm_vision import vision_layout


def generate(module, params, input_ids, image_grid_thw, attention_mask=None, *, pixel_values=None,
             max_new_tokens: int = 8, temperature: float = 0.0, rng: jax.Array | None = None,
             eos_id: int | None = None) -> jax.Array:
    """New tokens ``[B, max_new_tokens]`` int32 after the (left-padded) prompts ``input_ids [B, L]``."""
    cfg = module.config
    ids = np.asarray(input_ids)
    mask = np.ones(ids.shape, np.int32) if attention_mask is None else np.asarray(attention_mask)
    grid = np.asarray(image_grid_thw, np.int64).reshape(-1, 3)
    check_image_layout(ids, grid, mask, cfg.rope_options())
    if mask.shape[1] and not mask[:, -1].all():
        raise ValueError("generate needs left padding: the last slot of every row must be a real token (attention_mask 1)")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (0 = greedy)")
    layout = None
    if pixel_values is not None:
        layout = vision_layout(grid, cfg.vision_patch_size, cfg.vision_window_size, cfg.spatial_merge_size)
    elif grid.shape[0]:
        raise ValueError("the prompts hold images: pass pixel_values (the processor's flattened patches)")
    rng = jax.random.key(0) if rng is None else rng
    return _generate(module, int(max_new_tokens), jnp.float32(temperature), jnp.int32(-1 if eos_id is None else eos_id),
                     params, jnp.asarray(ids, jnp.int32), jnp.asarray(grid, jnp.int32), jnp.asarray(mask, jnp.int32),
                     pixel_values, layout, rng)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _generate(module, max_new: int, temperature: float, eos_id: int, params, ids, grid, mask, pixel_values, layout, rng):
    cfg = module.config
    b, length = ids.shape
    options = cfg.rope_options()
    sets = {s: rope_index(ids, grid, mask, s, options) for s in cfg.position_sets}
    positions = jnp.stack([sets[s][0] for s in cfg.position_sets])
    deltas = sets[cfg.decode_scheme][1]
    total = length + max_new
    key_valid = jnp.concatenate([mask, jnp.ones((b, max_new), mask.dtype)], axis=1)
    cache = init_cache(cfg, b, total)
    variables = {"params": params}
    logits, cache = module.apply(variables, ids, positions, key_valid, pixel_values=pixel_values,
                                 vision_layout=layout, cache=cache, offset=0)

    def pick(logits_BV, key):
        greedy = jnp.argmax(logits_BV, axis=-1)
        sampled = jax.random.categorical(key, logits_BV / jnp.where(temperature > 0, temperature, 1.0), axis=-1)
        return jnp.where(temperature > 0, sampled, greedy).astype(jnp.int32)

    first = pick(logits[:, -1], jax.random.fold_in(rng, 0))
    done = first == eos_id

    def step(carry, i):
        token, cache, done = carry
        slot = length + i
        pos = decode_positions(slot[None], deltas)  # [3, B, 1]
        pos = jnp.broadcast_to(pos[None], (len(cfg.position_sets),) + pos.shape)
        logits, cache = module.apply(variables, token[:, None], pos, key_valid, cache=cache, offset=slot)
        nxt = pick(logits[:, -1], jax.random.fold_in(rng, i + 1))
        nxt = jnp.where(done, eos_id, nxt)
        return (nxt, cache, done | (nxt == eos_id)), nxt

    _, rest = jax.lax.scan(step, (first, cache, done), jnp.arange(max_new - 1))
    return jnp.concatenate([first[:, None], rest.T], axis=1)
