"""Position ids of a Qwen2.5-VL-style LVLM: 1-D, M-RoPE and Circle-RoPE, as pure jittable functions.

Reference: ``lose4578/CircleRoPE`` @ 063fb2c (``code/circle_rope.py``, ``get_rope_index`` in
``code/modular_qwen2_5_vl_circle_rope.py``) on top of transformers 4.49 Qwen2.5-VL; the SPEC in
``tests/golden/circle_rope/SPEC.md`` describes it in prose.

``rope_index(input_ids [B, L], image_grid_thw [N, 3], attention_mask [B, L], scheme, options)``
returns ``(positions [3, B, L] float32 in (t, h, w) order, rope_deltas [B, 1] float32)``:

- ``"1d"``: every valid token (text or image) gets its rank among the valid tokens of its row,
  on all three channels (a flattened sequence).
- ``"mrope"``: Qwen2.5-VL. Text gets ``s + k`` on all channels; image ``j`` (an ``H x W`` grid of
  merged tokens, row-major) gets ``(c, c + row, c + col)`` with ``c`` the index its first token
  would have as text; text after the image restarts at (max over the image's ids) + 1.
- ``"circle"``: Circle-RoPE. The image's ``(col, row, 0)`` grid (optionally centred) is mapped to a
  circle of radius ``R`` (angle ``alpha * theta_norm + (1 - alpha) * theta_index``) in the plane
  orthogonal to the text direction ``(1, 1, 1)``, offset by the same ``c``; options below.

Padded slots (``attention_mask == 0``) hold 1; valid tokens are numbered as if the padding were
removed (so left padding works); ``rope_deltas[b] = max(valid ids of row b) + 1 - L`` with ``L``
the padded length (transformers 4.49). ``image_grid_thw`` is the flat list of every image of the
batch in order (row 0 first), in ViT patches: the LLM sees ``(H/m) x (W/m)`` tokens per image
(``m = spatial_merge_size``). Images are consumed in order, ``n_j`` image-pad tokens each, as
the reference does.

How it is jittable: nothing loops over tokens or images. Each token finds its image by a
``searchsorted`` of its global image-token rank into the cumulative image sizes, its grid cell
from its rank inside that image, and the per-image reductions the reference takes (angle
min/max, radius ``"auto"``, ``move_to_positive`` minimum, restart maximum) are segment
reductions over the image index. A text token's id is its valid rank plus the sum, over the
images of its row that precede it, of ``max(image ids) + 1 - c - n_j``. Shapes are static
(``N`` images of the batch); ``image_grid_thw`` and the ids are traced values.
Bad layouts (token counts that do not match the grids, videos) cannot raise inside ``jit``:
``check_image_layout`` checks them on the host, and ``rope_index`` calls it whenever its inputs
are concrete.

Videos (``T > 1``) are rejected: the reference's circle path maps only frame 0 and then fails
on the token count, so there is nothing to be equivalent to.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

SCHEMES = ("1d", "mrope", "circle")
METHODS = ("circle", "no_circle")


@dataclasses.dataclass(frozen=True)
class RopeOptions:
    """Token ids and Circle-RoPE options (hashable: a static argument of the jitted functions).

    Defaults are the released ``code/config.json`` (Qwen2.5-VL ids, ``alpha 0.5, radius 10,
    method circle, move_to_origin true``). ``from_reference`` applies the reference's defaults
    for keys absent from a ``circle_rope`` dict instead (which differ: no centring, ``alpha=-1``).

    - ``radius``: a number, ``"auto"`` (|max centred coordinate over the three axes|) or
      ``"auto-S"`` (that times ``S``).
    - ``method``: ``"circle"`` (map to the circle) or ``"no_circle"`` (keep the flat grid, rotated
      into the plane).
    - ``move_to_origin``: centre the grid at the origin first.
    - ``move_to_positive``: False, ``"auto"`` (add |min component|) or a number (add |min| + it).
    - ``dff_rate``: 0/False = off, else blend ``(1 - d) * circle + d * no_circle``.
    """

    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    spatial_merge_size: int = 2
    alpha: float = 0.5
    radius: float | str = 10.0
    method: str = "circle"
    move_to_origin: bool = True
    move_to_positive: bool | str | float = False
    dff_rate: float = 0.0

    @classmethod
    def from_reference(cls, circle_rope: dict | None = None, **ids) -> "RopeOptions":
        """From a reference ``config.circle_rope`` dict (``AGE_mode`` is ignored here), with its defaults."""
        c = dict(circle_rope or {})
        c.pop("AGE_mode", None)
        known = {"alpha", "radius", "method", "move_to_origin", "move_to_positive", "dff_rate"}
        unknown = sorted(set(c) - known)
        if unknown:
            raise ValueError(f"unknown circle_rope option(s) {unknown}; known: {sorted(known)} and AGE_mode")
        options = cls(
            alpha=float(c.get("alpha", -1)), radius=c.get("radius", -1), method=c.get("method", "circle"),
            move_to_origin=bool(c.get("move_to_origin", False)), move_to_positive=c.get("move_to_positive", False),
            dff_rate=float(c.get("dff_rate", 0) or 0), **ids,
        )
        options.validate()
        return options

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"circle_rope method={self.method!r} is not supported; use one of {list(METHODS)}")
        self.radius_spec()
        if isinstance(self.move_to_positive, str) and self.move_to_positive != "auto":
            try:
                float(self.move_to_positive)
            except ValueError:
                raise ValueError(f"move_to_positive={self.move_to_positive!r}: use False, 'auto' or a number") from None
        if self.spatial_merge_size < 1:
            raise ValueError(f"spatial_merge_size={self.spatial_merge_size} must be >= 1")

    def radius_spec(self) -> tuple[bool, float]:
        """``(is_auto, value)``: the fixed radius, or the scale of the automatic one."""
        r = self.radius
        if isinstance(r, str) and "auto" in r:
            if r == "auto":
                return True, 1.0
            head, _, scale = r.partition("-")
            try:
                return True, float(scale)
            except ValueError:
                raise ValueError(f"radius={r!r}: use a number, 'auto' or 'auto-<scale>' such as 'auto-2.5'") from None
        try:
            return False, float(r)
        except (TypeError, ValueError):
            raise ValueError(f"radius={r!r}: use a number, 'auto' or 'auto-<scale>' such as 'auto-2.5'") from None

    def positive_offset(self) -> float | None:
        """None when ``move_to_positive`` is off, else the extra offset added after ``|min|``."""
        m = self.move_to_positive
        if not m:
            return None
        return 0.0 if m == "auto" else float(m)


def check_image_layout(input_ids, image_grid_thw, attention_mask=None, options: RopeOptions = RopeOptions()) -> None:
    """Host-side checks of a batch layout; raises ``ValueError`` naming the problem and the fix.

    Checks: ``image_grid_thw`` is ``[N, 3]`` with positive ``T=1`` (videos are not supported) and
    ``H, W`` divisible by ``spatial_merge_size``; no video tokens; the image-pad tokens of each row
    split into runs (between vision markers or text) whose lengths are the row's grids'
    ``(H/m)(W/m)``, in order; every grid is used.
    """
    ids = np.asarray(input_ids)
    grid = np.asarray(image_grid_thw).reshape(-1, 3) if np.size(image_grid_thw) else np.zeros((0, 3), np.int64)
    mask = np.ones(ids.shape, bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
    if ids.ndim != 2 or mask.shape != ids.shape:
        raise ValueError(f"input_ids must be [batch, length] and attention_mask the same shape; got {ids.shape}, {mask.shape}")
    m = options.spatial_merge_size
    if (grid[:, 0] != 1).any():
        raise ValueError(
            f"image_grid_thw has temporal size T={grid[:, 0].tolist()}: only single images (T=1) are supported; "
            "the reference's Circle-RoPE maps only frame 0 of a video and then fails, so split videos into frames"
        )
    if (grid[:, 1:] <= 0).any() or (grid[:, 1:] % m).any():
        raise ValueError(f"image_grid_thw H and W (ViT patches) must be positive multiples of spatial_merge_size={m}; got {grid.tolist()}")
    if ((ids == options.video_token_id) & mask).any():
        raise ValueError("input_ids contain video tokens: videos are not supported (use images, T=1)")
    sizes = (grid[:, 1] // m) * (grid[:, 2] // m)
    next_image = 0
    for b in range(ids.shape[0]):
        img = (ids[b] == options.image_token_id) & mask[b]
        valid = ids[b][mask[b]]
        img_valid = valid == options.image_token_id
        edges = np.diff(np.concatenate([[0], img_valid.astype(np.int8), [0]]))
        runs = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
        for run in runs:
            if next_image >= len(sizes):
                raise ValueError(
                    f"row {b} has more image-pad tokens than image_grid_thw describes ({len(sizes)} image(s) for the "
                    f"batch, {int(((ids == options.image_token_id) & mask).sum())} image tokens); pass one grid per image"
                )
            if run != sizes[next_image]:
                raise ValueError(
                    f"row {b}: a run of {run} image-pad tokens does not match image {next_image}'s grid "
                    f"{grid[next_image].tolist()} = {sizes[next_image]} tokens after {m}x{m} merging; "
                    "insert exactly T*(H/m)*(W/m) image-pad tokens per image"
                )
            next_image += 1
        del img
    if next_image != len(sizes):
        raise ValueError(
            f"image_grid_thw lists {len(sizes)} image(s) but the batch holds image-pad runs for {next_image}; "
            "pass exactly one grid per image, in order"
        )


def _is_concrete(*xs) -> bool:
    return not any(isinstance(x, jax.core.Tracer) for x in xs)


def rope_index(input_ids, image_grid_thw, attention_mask=None, scheme: str = "mrope",
               options: RopeOptions = RopeOptions()) -> tuple[jax.Array, jax.Array]:
    """``(positions [3, B, L] float32, rope_deltas [B, 1] float32)``; see the module docstring.

    Jittable (``scheme`` and ``options`` static). Called with concrete arrays it first checks the
    layout with ``check_image_layout``.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"position scheme {scheme!r} is not one of {list(SCHEMES)}")
    options.validate()
    input_ids = jnp.asarray(input_ids)
    grid = jnp.asarray(image_grid_thw, jnp.int32).reshape(-1, 3)
    mask = jnp.ones(input_ids.shape, bool) if attention_mask is None else jnp.asarray(attention_mask)
    if _is_concrete(input_ids, grid, mask):
        check_image_layout(input_ids, grid, mask, options)
    return _rope_index(input_ids, grid, mask, scheme, options)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _rope_index(input_ids, grid, mask, scheme, options):
    mask = mask.astype(bool)
    b, length = input_ids.shape
    rank = (jnp.cumsum(mask, axis=1) - 1).astype(jnp.float32)  # [B, L] index among valid tokens
    if scheme == "1d" or grid.shape[0] == 0:
        pos = jnp.broadcast_to(rank, (3, b, length))
    else:
        pos = _multimodal_positions(input_ids, grid, mask, rank, scheme, options)
    pos = jnp.where(mask[None], pos, jnp.float32(1.0))
    row_max = jnp.max(jnp.where(mask[None], pos, -jnp.inf), axis=(0, 2))
    deltas = (row_max + 1.0 - length)[:, None]
    return pos, deltas


def _multimodal_positions(input_ids, grid, mask, rank, scheme, options):
    n_images = grid.shape[0]
    m = options.spatial_merge_size
    h_tok, w_tok = grid[:, 1] // m, grid[:, 2] // m
    sizes = grid[:, 0] * h_tok * w_tok  # [N] tokens per image
    ends = jnp.cumsum(sizes)  # inclusive
    starts = ends - sizes
    is_img = (input_ids == options.image_token_id) & mask  # [B, L]
    flat = is_img.reshape(-1).astype(jnp.int32)
    before = (jnp.cumsum(flat) - flat).reshape(is_img.shape)  # image tokens of the batch before this slot
    done = jnp.searchsorted(ends, before, side="right")  # images completed before this slot
    k = jnp.minimum(done, n_images - 1)  # this image token's image
    j = before - starts[k]  # rank inside the image
    hk, wk = h_tok[k], w_tok[k]
    row, col = j // jnp.maximum(wk, 1), j % jnp.maximum(wk, 1)
    seg = jnp.where(is_img, k, n_images)  # non-image slots go to a dropped segment
    if scheme == "mrope":
        zero = jnp.zeros_like(rank)
        offsets = jnp.stack([zero, row.astype(jnp.float32), col.astype(jnp.float32)])
    else:
        offsets = _circle_offsets(row, col, hk, wk, j, seg, n_images, options)
    top = jax.ops.segment_max(offsets.max(axis=0).reshape(-1), seg.reshape(-1), num_segments=n_images + 1)[:n_images]
    shift = top + 1.0 - sizes.astype(jnp.float32)  # how far text after image j jumps beyond plain counting
    cum_shift = jnp.concatenate([jnp.zeros((1,), jnp.float32), jnp.cumsum(shift)])  # [N + 1]
    prev_rows = jnp.cumsum(is_img.sum(axis=1)) - is_img.sum(axis=1)  # image tokens in earlier rows
    first = jnp.searchsorted(ends, prev_rows, side="right")  # [B] first image of each row
    base = cum_shift[first][:, None]
    text = rank + cum_shift[done] - base
    image_start = rank - j.astype(jnp.float32) + cum_shift[k] - base
    return jnp.where(is_img[None], image_start[None] + offsets, text[None])


def _plane_basis() -> tuple[np.ndarray, np.ndarray]:
    """``u, v`` (float32, (w, h, t) components) spanning the plane orthogonal to (1, 1, 1), as the reference builds them."""
    n = np.ones(3, np.float32) / np.linalg.norm(np.ones(3, np.float32))
    u = np.array([-n[1], n[0], 0.0], np.float32)
    u = u / np.linalg.norm(u)
    v = np.cross(n, u).astype(np.float32)
    return u, (v / np.linalg.norm(v)).astype(np.float32)


def _circle_offsets(row, col, h, w, j, seg, n_images, options: RopeOptions):
    """Circle-RoPE offsets ``[3, B, L]`` in (t, h, w) order for image tokens (garbage elsewhere)."""
    f32 = jnp.float32
    x, y = col.astype(f32), row.astype(f32)
    if options.move_to_origin:  # centre (max + min) / 2 of the grid; the z (time) axis is all 0
        x = x - (w - 1).astype(f32) / 2.0
        y = y - (h - 1).astype(f32) / 2.0
    seg_flat = seg.reshape(-1)

    def seg_max(a):
        return jax.ops.segment_max(a.reshape(-1), seg_flat, num_segments=n_images + 1)[seg]

    def seg_min(a):
        return jax.ops.segment_min(a.reshape(-1), seg_flat, num_segments=n_images + 1)[seg]

    auto, value = options.radius_spec()
    if auto:  # |max over x, y and z = 0| of the image's grid, times the scale
        radius = jnp.abs(seg_max(jnp.maximum(jnp.maximum(x, y), 0.0))) * f32(value)
    else:
        radius = f32(value)
    u, v = _plane_basis()

    def rotate(px, py):
        return [px * u[i] + py * v[i] for i in range(3)]  # (w, h, t) components

    if options.method == "circle":
        angle = jnp.arctan2(y, x)
        lo, hi = seg_min(angle), seg_max(angle)
        span = hi - lo
        theta_norm = jnp.where(span > 0, (angle - lo) / jnp.where(span > 0, span, 1.0) * f32(2 * math.pi), angle)
        theta_index = j.astype(f32) / (h * w).astype(f32) * f32(2 * math.pi)
        theta = f32(options.alpha) * theta_norm + f32(1 - options.alpha) * theta_index
        comps = rotate(radius * jnp.cos(theta), radius * jnp.sin(theta))
    else:
        comps = rotate(x, y)
    if options.dff_rate:
        d = options.dff_rate
        flat = rotate(x, y)
        comps = [f32(1 - d) * c + f32(d) * fc for c, fc in zip(comps, flat)]
    offset = options.positive_offset()
    if offset is not None:
        low = jnp.abs(seg_min(jnp.minimum(jnp.minimum(comps[0], comps[1]), comps[2])))
        comps = [c + low + f32(offset) for c in comps]
    return jnp.stack([comps[2], comps[1], comps[0]])  # (t, h, w)


def decode_positions(cache_positions, rope_deltas) -> jax.Array:
    """Positions ``[3, B, T]`` of tokens appended after prefill: ``cache_position + rope_delta`` on all channels.

    The reference's decode rule (4.49 ``Qwen2_5_VLForConditionalGeneration.forward``): a token at
    cache slot ``p`` (the padded prefill length counts) gets ``p + rope_deltas[b]``.
    ``cache_positions [T]`` or ``[B, T]``, ``rope_deltas [B, 1]``.
    """
    p = jnp.asarray(cache_positions, jnp.float32)
    p = jnp.broadcast_to(p, (rope_deltas.shape[0], p.shape[-1]))
    return jnp.broadcast_to((p + rope_deltas)[None], (3,) + p.shape)
