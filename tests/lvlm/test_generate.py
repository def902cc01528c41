"""Generation: cached decode == full recomputation with the reference's decode positions; padding; sampling; bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.lvlm.generate import generate
from jaxlab.lvlm.positions import decode_positions
from jaxlab.models import build_model
from jaxlab.models.lvlm import init_inputs, positions_for

IMG, START, END = 126, 124, 125  # the small preset's ids


@pytest.fixture(scope="module")
def model():
    module = build_model("lvlm", "small", position_scheme="strategy_4")
    args, kwargs = init_inputs(module.config)
    params = jax.jit(lambda k: module.init(k, *args, **kwargs))(jax.random.key(0))["params"]
    return module, params


def _prompt(rng, grids):
    """Two rows, left padded: row 0 one image (grid 0), row 1 two images; pixel values for all."""
    toks = lambda n: list(rng.integers(10, 100, n))
    sizes = [(g[1] // 2) * (g[2] // 2) for g in grids]
    rows = [toks(2) + [START] + [IMG] * sizes[0] + [END] + toks(3),
            toks(1) + [START] + [IMG] * sizes[1] + [END] + toks(1) + [START] + [IMG] * sizes[2] + [END] + toks(2)]
    width = max(map(len, rows))
    ids = np.zeros((2, width), np.int32)
    mask = np.zeros((2, width), np.int32)
    for b, r in enumerate(rows):
        ids[b, width - len(r):], mask[b, width - len(r):] = r, 1
    pixels = rng.normal(size=(sum(4 * s for s in sizes), 3 * 2 * 4 * 4)).astype(np.float32)
    return ids, mask, np.array(grids), pixels


def test_cached_greedy_decode_equals_full_recomputation(model):
    module, params = model
    ids, mask, grid, pixels = _prompt(np.random.default_rng(0), [[1, 4, 4], [1, 4, 6], [1, 2, 4]])
    steps = 4
    new = np.asarray(generate(module, params, ids, grid, mask, pixel_values=pixels, max_new_tokens=steps))
    assert new.shape == (2, steps)
    # One uncached forward over prompt + generated tokens: prompt positions from rope_index, appended
    # tokens at slot + rope_delta on every layer; its argmax at each slot must be the next generated token.
    from jaxlab.models.lvlm_vision import vision_layout

    cfg = module.config
    layout = vision_layout(grid, cfg.vision_patch_size, cfg.vision_window_size)
    length = ids.shape[1]
    seq = np.concatenate([ids, new[:, :-1]], axis=1)
    full_mask = np.concatenate([mask, np.ones((2, steps - 1), np.int32)], axis=1)
    pos, deltas = positions_for(cfg, ids, grid, mask)
    extra = decode_positions(jnp.arange(length, seq.shape[1]), deltas)
    extra = jnp.broadcast_to(extra[None], (pos.shape[0],) + extra.shape)
    forward = jax.jit(lambda p, tokens, positions, attention, pixels: module.apply(  # one compile, not op by op
        {"params": p}, tokens, positions, attention, pixel_values=pixels, vision_layout=layout))
    logits = forward(params, jnp.asarray(seq), jnp.concatenate([pos, extra], axis=-1), jnp.asarray(full_mask),
                     jnp.asarray(pixels))
    np.testing.assert_array_equal(np.asarray(jnp.argmax(logits[:, length - 1:], -1)), new)


def test_temperature_sampling_is_seeded_and_eos_sticks(model):
    module, params = model
    ids, mask, grid, pixels = _prompt(np.random.default_rng(1), [[1, 4, 4], [1, 2, 2], [1, 2, 4]])
    kw = dict(pixel_values=pixels, max_new_tokens=5, temperature=1.0)
    a = generate(module, params, ids, grid, mask, rng=jax.random.key(3), **kw)
    b = generate(module, params, ids, grid, mask, rng=jax.random.key(3), **kw)
    c = generate(module, params, ids, grid, mask, rng=jax.random.key(4), **kw)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    greedy = np.asarray(generate(module, params, ids, grid, mask, pixel_values=pixels, max_new_tokens=5))
    eos = int(greedy[0, 1])
    stopped = np.asarray(generate(module, params, ids, grid, mask, pixel_values=pixels, max_new_tokens=5, eos_id=eos))
    assert np.all(stopped[0, 1:] == eos)


def test_bad_generation_inputs(model):
    module, params = model
    ids, mask, grid, pixels = _prompt(np.random.default_rng(2), [[1, 4, 4], [1, 2, 2], [1, 2, 4]])
    with pytest.raises(ValueError, match="does not match image"):
        generate(module, params, ids, grid[[1, 0, 2]], mask, pixel_values=pixels)
    with pytest.raises(ValueError, match="only single images"):
        generate(module, params, ids, np.array([[2, 4, 4], [1, 2, 2], [1, 2, 4]]), mask, pixel_values=pixels)
    right_ids = np.concatenate([ids, np.zeros((2, 1), ids.dtype)], axis=1)
    right_mask = np.concatenate([mask, np.zeros((2, 1), mask.dtype)], axis=1)
    with pytest.raises(ValueError, match="left padding"):
        generate(module, params, right_ids, grid, right_mask, pixel_values=pixels)
    with pytest.raises(ValueError, match="pass pixel_values"):
        generate(module, params, ids, grid, mask)
