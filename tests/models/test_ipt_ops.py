"""IPT tiling: tiled == whole-image for local models, == the bare model on one patch, bounded memory, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.convert import from_torch
from jaxlab.models.ipt_ops import make_restorer, tile_starts, tiled_apply
from tests.conftest import GoldenCase

RNG = np.random.default_rng(0)
KERNEL = jnp.asarray(RNG.normal(size=(5, 5, 3, 3)), jnp.float32)  # receptive-field radius 2


def local_model(x, scale=1):
    """A translation-equivariant model with a 5x5 receptive field (+ nearest upsampling by ``scale``)."""
    y = jax.lax.conv_general_dilated(x, KERNEL, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y = jnp.tanh(y) + x
    return jnp.repeat(jnp.repeat(y, scale, axis=1), scale, axis=2)


@pytest.mark.parametrize("shape,scale,batch", [((2, 61, 53, 3), 1, 4), ((1, 40, 29, 3), 2, 3)])
def test_tiled_equals_whole_image_for_a_local_model(shape, scale, batch):
    """Zero padding differs at tile edges; a 2-pixel receptive field inside a 4-pixel margin never sees it."""
    x = jnp.asarray(RNG.uniform(size=shape), jnp.float32)
    whole = local_model(x, scale)
    calls = []
    tiled = jax.jit(lambda x: tiled_apply(lambda t: local_model(t, scale), x, tile=16, scale=scale, stride=6, margin=4,
                                          batch=batch, progress=lambda *a: calls.append(a)))(x)
    np.testing.assert_allclose(tiled, whole, rtol=1e-5, atol=1e-5)
    n = len(tile_starts(shape[1], 16, 6)) * len(tile_starts(shape[2], 16, 6))
    assert calls == [(min(k * batch, n), n) for k in range(1, -(-n // batch) + 1)]  # one report per chunk, in order
    # Without a margin the tile-edge zero padding shows up at the seams: the margin is what makes it exact.
    seamy = tiled_apply(lambda t: local_model(t, scale), x, tile=16, scale=scale, stride=6, margin=0, batch=batch)
    assert np.abs(np.asarray(seamy) - np.asarray(whole)).max() > 1e-2


def test_tiled_ipt_keeps_each_border_tile_output_where_no_other_tile_reaches():
    """On a 37x30 image (SR x2), the corners are the bare model's output on the corner crops."""
    case = GoldenCase("ipt", "ipt_forward_small")
    module, params = from_torch("ipt", case.meta["constructor"]["args"], case.state_dict)
    restore = make_restorer(module, 1, batch=2)
    bare = jax.jit(lambda p, x: module.apply({"params": p}, x, 1))
    big = jnp.asarray(RNG.uniform(0, 255, (1, 37, 30, 3)), jnp.float32)
    out = np.asarray(restore(params, big))
    assert out.shape == (1, 74, 60, 3) and np.isfinite(out).all()
    # Tiles start every 6 px with a 6 px margin: only the corner tile reaches a 12x12 output corner.
    np.testing.assert_allclose(out[:, :12, :12], bare(params, big[:, :24, :24])[:, :12, :12], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(out[:, -12:, -12:], bare(params, big[:, -24:, -24:])[:, -12:, -12:], rtol=1e-5, atol=1e-3)


def test_memory_is_bounded_by_one_chunk_of_tiles():
    """Compiled temporary memory grows with the output canvas only, not with the number of tiles."""

    def temp_bytes(side):
        f = jax.jit(lambda x: tiled_apply(lambda t: local_model(t), x, tile=16, stride=4, margin=4, batch=4))
        return f.lower(jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32)).compile().memory_analysis().temp_size_in_bytes

    small, large = temp_bytes(64), temp_bytes(256)  # 169 vs 3721 tiles
    canvas_growth = (256**2 - 64**2) * 4 * 4  # canvas (3 ch) + weight (1 ch), float32
    per_tile_output = 16 * 16 * 3 * 4
    assert large - small < 2 * canvas_growth, (small, large)
    assert large - small < (3721 - 169) * per_tile_output  # far less than keeping every tile's output


def test_tiling_errors_are_named():
    with pytest.raises(ValueError, match="smaller than the model's patch_size 16"):
        tile_starts(12, 16, 4)
    x = jnp.zeros((1, 32, 32, 3))
    with pytest.raises(ValueError, match="kept tile windows cover"):
        tiled_apply(local_model, x, tile=16, stride=12, margin=4)
    with pytest.raises(ValueError, match="expected 32x32 for scale=2"):
        tiled_apply(local_model, x, tile=16, scale=2)
