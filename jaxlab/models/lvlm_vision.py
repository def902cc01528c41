"""The Qwen2.5-VL vision tower (ViT with windowed attention and a 2x2 patch merger).

Follows ``Qwen2_5_VisionTransformerPretrainedModel`` of Hugging Face transformers (4.49):
patch embedding (a bias-free Conv3d over ``temporal_patch_size x patch_size x patch_size``
patches, applied to the processor's flattened patches as one matmul), 2-D rotary embedding
(``[h | w]`` frequencies of ``head_dim/2`` features, half-split), pre-RMSNorm blocks with fused
qkv (bias) attention and a SiLU-gated MLP (bias); blocks listed in ``fullatt_block_indexes``
attend within each image, the others within windows of ``window_size`` pixels; patches are
reordered so that each window is contiguous and the four patches of a merge group stay
together. The merger RMS-normalises, concatenates each 2x2 group and applies
``Linear -> GELU -> Linear`` to the LLM width; the original order is restored at the end.

The window layout depends on the image sizes only: ``vision_layout(grid_thw, ...)`` computes it
on the host (numpy) once per batch layout; the module takes it as arrays, so everything inside
is jittable and a new layout means a new compilation.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.nn import GatedMlp, RMSNorm, dense, dense_general, dot_product_attention
from jaxlab.nn.rope import apply_rope


def vision_layout(grid_thw, patch_size: int, window_size: int, spatial_merge_size: int = 2) -> dict[str, np.ndarray]:
    """Static layout of the patches of ``grid_thw [N, 3]`` (ViT patches per image).

    Returns numpy arrays over the ``P = sum(T*H*W)`` patches in processor order:
    ``window_index [P/m^2]`` (merge groups in windowed order, ``get_window_index``),
    ``pos_hw [P, 2]`` (row, column of each patch, processor order), ``window_segment [P]`` and
    ``image_segment [P]`` (which window / image each patch of the *windowed* order belongs to).
    """
    grid = np.asarray(grid_thw, np.int64).reshape(-1, 3)
    m = spatial_merge_size
    unit = m * m
    win = window_size // m // patch_size  # window side in merged tokens
    if win < 1:
        raise ValueError(f"window_size={window_size} is smaller than a merge group ({m}x{patch_size} pixels)")
    window_index, window_seg, image_seg, pos = [], [], [], []
    offset = n_windows = 0
    for img, (t, h, w) in enumerate(grid):
        if h % m or w % m:
            raise ValueError(f"image {img}: grid {[int(t), int(h), int(w)]} is not divisible by spatial_merge_size={m}")
        hh, ww = h // m, w // m
        index = np.arange(t * hh * ww).reshape(t, hh, ww)
        pad_h, pad_w = win - hh % win, win - ww % win
        nh, nw = (hh + pad_h) // win, (ww + pad_w) // win
        padded = np.pad(index, ((0, 0), (0, pad_h), (0, pad_w)), constant_values=-100)
        padded = padded.reshape(t, nh, win, nw, win).transpose(0, 1, 3, 2, 4).reshape(t, nh * nw, win * win)
        for groups in padded.reshape(-1, win * win):
            groups = groups[groups != -100]
            if groups.size:
                window_index.append(groups + offset)
                window_seg.append(np.full(groups.size * unit, n_windows))
                n_windows += 1
        image_seg.append(np.full(t * h * w, img))
        offset += t * hh * ww
        hpos = np.broadcast_to(np.arange(h)[:, None], (h, w)).reshape(hh, m, ww, m).transpose(0, 2, 1, 3).reshape(-1)
        wpos = np.broadcast_to(np.arange(w)[None, :], (h, w)).reshape(hh, m, ww, m).transpose(0, 2, 1, 3).reshape(-1)
        pos.append(np.tile(np.stack([hpos, wpos], -1), (t, 1)))
    window_index = np.concatenate(window_index).astype(np.int32)
    image_seg = np.concatenate(image_seg).astype(np.int32)
    order = (window_index[:, None] * unit + np.arange(unit)).reshape(-1)  # patch order after windowing
    return dict(
        window_index=window_index,
        pos_hw=np.concatenate(pos).astype(np.int32),
        window_segment=np.concatenate(window_seg).astype(np.int32),
        image_segment=image_seg[order],
    )


def vision_rotary(pos_hw: jax.Array, head_dim: int, theta: float = 10000.0) -> tuple[jax.Array, jax.Array]:
    """``(sin, cos)`` ``[P, head_dim]`` float32: ``[h * f | w * f]`` repeated twice, ``f = theta^(-2i/(hd/2))``."""
    dim = head_dim // 2
    inv_freq = 1.0 / jnp.power(jnp.float32(theta), jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)
    freqs = pos_hw.astype(jnp.float32)[..., None] * inv_freq  # [P, 2, dim/2]
    rot = freqs.reshape(pos_hw.shape[0], -1)  # [P, dim]
    emb = jnp.concatenate([rot, rot], axis=-1)
    return jnp.sin(emb), jnp.cos(emb)


class VisionBlock(nn.Module):
    """``Qwen2_5_VLVisionBlock``: ``x + attn(norm1(x))``, then ``+ mlp(norm2(x))``; ``[N, P, D] -> [N, P, D]``."""

    num_heads: int
    intermediate_size: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_NPD, sin_PH, cos_PH, mask_PP):
        d = x_NPD.shape[-1]
        hd = d // self.num_heads
        h = RMSNorm(1e-6, self.dtype, name="norm1")(x_NPD)
        qkv = dense_general((3, self.num_heads, hd), ("embed", None, "heads", "kv"), dtype=self.dtype, name="qkv")(h)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [N, P, heads, hd]
        q, k = apply_rope(q, sin_PH[None], cos_PH[None]), apply_rope(k, sin_PH[None], cos_PH[None])
        att = dot_product_attention(q, k, v, mask=mask_PP[None, None])
        x_NPD = x_NPD + dense_general(d, ("heads", "kv", "embed"), axis=(-2, -1), dtype=self.dtype, name="proj")(att)
        h = RMSNorm(1e-6, self.dtype, name="norm2")(x_NPD)
        return x_NPD + GatedMlp(self.intermediate_size, use_bias=True, dtype=self.dtype, name="mlp")(h)


class VisionTower(nn.Module):
    """Patches -> image tokens ``[tokens, out_dim]`` (merged, in processor order).

    ``patches`` is either the processor's flat list ``[P, C * Tp * p * p]`` of every image with
    the ``vision_layout`` of all their grids (the Hugging Face call), or ``[N, P, F]``: N images
    of one size sharing the ``vision_layout`` of a single grid (a batch of same-size images
    without the ``[N P, N P]`` block-diagonal attention mask); both give the same tokens.
    """

    depth: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    out_hidden_size: int
    fullatt_block_indexes: tuple[int, ...]
    spatial_merge_size: int = 2
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, patches, layout):
        unit = self.spatial_merge_size**2
        x = patches if patches.ndim == 3 else patches[None]  # [N, P, F]
        n, p = x.shape[:2]
        x = dense(self.hidden_size, ("patch", "embed"), use_bias=False, dtype=self.dtype, name="patch_embed")(x)
        window_index = layout["window_index"]
        sin, cos = vision_rotary(layout["pos_hw"], self.hidden_size // self.num_heads)

        def to_windows(a):  # [..., P, F] over merge groups
            lead = a.shape[:-2]
            return a.reshape(lead + (p // unit, unit, -1))[..., window_index, :, :].reshape(lead + (p, -1))

        x, sin, cos = to_windows(x), to_windows(sin), to_windows(cos)
        image_seg, window_seg = layout["image_segment"], layout["window_segment"]
        full_mask = image_seg[:, None] == image_seg[None, :]
        window_mask = window_seg[:, None] == window_seg[None, :]
        for i in range(self.depth):
            mask = full_mask if i in self.fullatt_block_indexes else window_mask
            x = VisionBlock(self.num_heads, self.intermediate_size, self.dtype, name=f"blocks_{i}")(x, sin, cos, mask)
        x = RMSNorm(1e-6, self.dtype, name="ln_q")(x).reshape(n, p // unit, unit * self.hidden_size)
        x = dense(unit * self.hidden_size, (None, "mlp"), dtype=self.dtype, name="mlp_0")(x)
        x = nn.gelu(x, approximate=False)
        x = dense(self.out_hidden_size, ("mlp", "embed"), dtype=self.dtype, name="mlp_2")(x)
        return x[:, jnp.argsort(window_index)].reshape(n * (p // unit), -1)
