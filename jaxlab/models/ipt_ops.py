"""Test-time tiling for IPT: any image size through a body built for one ``patch_size``.

The official ``Model.forward_chop`` (``model/__init__.py``) cuts the image into ``P x P`` crops
(``P = patch_size``, 48) with stride ``P/4``, runs the model on each, keeps each crop's output
without a ``P/4`` margin on every side that is interior to the image, and averages where the kept
parts overlap (it assembles borders and corners with separate passes). ``tiled_apply`` does the
same job in one pass:

- tile starts along an axis are ``0, stride, 2*stride, ...`` plus ``H - P`` (so the last tile
  ends at the border; images need not be a multiple of anything, only ``>= P``);
- each tile's output is weighted 1 inside its kept window (the tile minus ``margin`` pixels on
  every side that does not touch the image border) and 0 outside, and the output is the
  weighted average. This is the official blend (uniform averaging of margin-cropped tiles) up to
  its exact tile placement near the bottom/right border, which differs.
- tiles run in chunks of ``batch`` inside a ``lax.fori_loop``: memory is the output canvas plus
  one chunk's activations, whatever the image size. ``progress(done, total)`` (optional) is called
  from inside the loop (``jax.debug.callback``) after every chunk, with tile counts.

For a model whose output pixel depends only on inputs within ``margin`` pixels, the tiled output
equals the whole-image output exactly (the tests check this).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


def tile_starts(size: int, tile: int, stride: int) -> list[int]:
    """Start offsets of ``tile``-long windows every ``stride`` covering ``[0, size)``, the last ending at ``size``."""
    if size < tile:
        raise ValueError(f"image side {size} is smaller than the model's patch_size {tile}; pad or resize the image to at least {tile}")
    starts = list(range(0, size - tile, stride)) + [size - tile]
    return sorted(set(starts))


def check_tiling(tile: int, stride: int, margin: int) -> None:
    if not 0 <= margin or 2 * margin >= tile:
        raise ValueError(f"margin={margin} must be in [0, tile/2) for tile={tile}")
    if not 1 <= stride <= tile - 2 * margin:
        raise ValueError(
            f"stride={stride} must be in [1, tile - 2*margin = {tile - 2 * margin}] so that the kept tile "
            f"windows cover the image (tile={tile}, margin={margin})"
        )


def _axis_weights(start, size: int, tile: int, margin: int, scale: int) -> jax.Array:
    """``[tile*scale]`` 0/1 weights: the tile minus ``margin`` on each side away from the image border."""
    idx = jnp.arange(tile * scale)
    lo = jnp.where(start == 0, 0, margin * scale)
    hi = jnp.where(start == size - tile, tile * scale, (tile - margin) * scale)
    return ((idx >= lo) & (idx < hi)).astype(jnp.float32)


def tiled_apply(
    fn: Callable[[jax.Array], jax.Array],
    x_BHWC: jax.Array,
    *,
    tile: int,
    scale: int = 1,
    stride: int | None = None,
    margin: int | None = None,
    batch: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> jax.Array:
    """Applies a fixed-size image model to an image of any size ``>= tile`` by overlapping tiles.

    Args:
      fn: ``[N, tile, tile, C] -> [N, tile*scale, tile*scale, C_out]`` (e.g. one IPT task).
      x_BHWC: ``[B, H, W, C]`` images, ``H, W >= tile``.
      tile: the model's input side (IPT's ``patch_size``).
      scale: the model's upsampling factor.
      stride: tile step, default ``tile // 4`` (the official 12 for 48).
      margin: pixels (input resolution) dropped at interior tile edges, default ``tile // 4``
        (the official ``shave / 2`` = 12 for 48).
      batch: tiles per model call (memory vs. speed).
      progress: called as ``progress(tiles done, tiles in all)`` after every chunk (host callback).

    Returns:
      ``[B, H*scale, W*scale, C_out]`` float32. Traceable: wrap the caller in ``jax.jit``.
    """
    stride = tile // 4 if stride is None else stride
    margin = tile // 4 if margin is None else margin
    check_tiling(tile, stride, margin)
    b, hh, ww, _ = x_BHWC.shape
    grid = np.array([(y, x) for y in tile_starts(hh, tile, stride) for x in tile_starts(ww, tile, stride)], np.int32)
    n = len(grid)
    chunks = -(-n // batch)
    # Pad the tile list to whole chunks with copies of the last tile at weight 0.
    valid = np.arange(chunks * batch) < n
    grid = np.concatenate([grid, np.repeat(grid[-1:], chunks * batch - n, axis=0)])
    grid_K2, valid_K = jnp.asarray(grid).reshape(chunks, batch, 2), jnp.asarray(valid).reshape(chunks, batch)
    ts = tile * scale

    out_shape = jax.eval_shape(fn, jax.ShapeDtypeStruct((batch * b, tile, tile, x_BHWC.shape[-1]), x_BHWC.dtype)).shape
    if out_shape[1:3] != (ts, ts):
        raise ValueError(f"fn maps a {tile}x{tile} tile to {out_shape[1:3]}, expected {ts}x{ts} for scale={scale}")
    c_out = out_shape[-1]

    def crop(start):
        return jax.lax.dynamic_slice(x_BHWC, (0, start[0], start[1], 0), (b, tile, tile, x_BHWC.shape[-1]))

    def chunk_step(k, carry):
        canvas, weight = carry
        starts = grid_K2[k]
        tiles = jax.vmap(crop)(starts).reshape(batch * b, tile, tile, -1)
        y = fn(tiles).astype(jnp.float32).reshape(batch, b, ts, ts, c_out)

        def add_tile(i, carry):
            canvas, weight = carry
            sy, sx = starts[i, 0], starts[i, 1]
            w = _axis_weights(sy, hh, tile, margin, scale)[:, None] * _axis_weights(sx, ww, tile, margin, scale)[None, :]
            w = w * valid_K[k, i]
            at = (sy * scale, sx * scale)
            cur = jax.lax.dynamic_slice(canvas, (0, *at, 0), (b, ts, ts, c_out))
            canvas = jax.lax.dynamic_update_slice(canvas, cur + y[i] * w[None, :, :, None], (0, *at, 0))
            cur_w = jax.lax.dynamic_slice(weight, at, (ts, ts))
            return canvas, jax.lax.dynamic_update_slice(weight, cur_w + w, at)

        canvas, weight = jax.lax.fori_loop(0, batch, add_tile, (canvas, weight))
        if progress is not None:
            jax.debug.callback(lambda k: progress(min((int(k) + 1) * batch, n), n), k, ordered=True)
        return canvas, weight

    canvas = jnp.zeros((b, hh * scale, ww * scale, c_out), jnp.float32)
    weight = jnp.zeros((hh * scale, ww * scale), jnp.float32)
    canvas, weight = jax.lax.fori_loop(0, chunks, chunk_step, (canvas, weight))
    return canvas / weight[None, :, :, None]


def make_restorer(module, task: int, *, stride: int | None = None, margin: int | None = None, batch: int = 8,
                  progress: Callable[[int, int], None] | None = None):
    """A jitted ``(params, x [B, H, W, C] in [0, rgb_range]) -> restored [B, H*s, W*s, C]`` for one IPT task.

    Recompiles per image shape. ``H, W >= patch_size``; see ``tiled_apply`` for the blending and
    ``progress``.
    """
    cfg = module.config
    cfg.check_task(task)
    tile = cfg.patch_size

    @jax.jit
    def restore(params, x_BHWC):
        if x_BHWC.ndim != 4 or x_BHWC.shape[-1] != cfg.n_colors:
            raise ValueError(f"expected [B, H, W, {cfg.n_colors}] images, got {x_BHWC.shape}")
        return tiled_apply(
            lambda t: module.apply({"params": params}, t, task),
            x_BHWC,
            tile=tile,
            scale=cfg.scale[task],
            stride=stride,
            margin=margin,
            batch=batch,
            progress=progress,
        )

    return restore


SAME_SIZE_TASKS = ("denoise", "deblur", "derain", "dehaze", "desnow")


def resolve_task(config, task: str | int) -> int:
    """A task index from an index, ``"sr<N>"`` (the task with scale N) or a same-size task name.

    A checkpoint stores only its scale list, so a same-size name (``denoise``, ``derain``, ...)
    resolves only when the checkpoint has exactly one scale-1 task (e.g. ``IPT_denoise30.pt``).
    """
    scales = list(config.scale)
    text = str(task).strip().lower()
    if text.isdigit():
        index = int(text)
        config.check_task(index)
        return index
    if text.startswith("sr") and text[2:].isdigit():
        matches = [i for i, s in enumerate(scales) if s == int(text[2:])]
        if len(matches) != 1:
            raise ValueError(f"task {task!r}: this checkpoint's scales are {scales}; {len(matches)} tasks have scale {text[2:]}")
        return matches[0]
    if text in SAME_SIZE_TASKS:
        matches = [i for i, s in enumerate(scales) if s == 1]
        if len(matches) != 1:
            raise ValueError(
                f"task {task!r}: this checkpoint has {len(matches)} same-size (scale 1) tasks (scales {scales}) and "
                f"does not store task names; pass the task index instead"
            )
        return matches[0]
    raise ValueError(f"unknown task {task!r}: use an index (0..{len(scales) - 1}), 'sr2'/'sr3'/'sr4', or one of {list(SAME_SIZE_TASKS)}")
