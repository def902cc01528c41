"""Timestep, class-label, patch and fixed position embeddings."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.nn.linear import dense, logical_init


def timestep_features(t: jax.Array, dim: int = 256, max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal timestep features, ``[cos | sin]`` (cos first), float32.

    Args:
      t: ``[N]`` timesteps (integer or fractional), in the diffusion's original units (0..999).
      dim: feature width; an odd width is zero-padded by one column.
      max_period: controls the lowest frequency.

    Returns:
      ``[N, dim]`` float32. Computed in float32 on purpose: bfloat16 timesteps round
      (750 -> 752), and the reference computes the argument in float32.
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = t.astype(jnp.float32)[:, None] * freqs[None]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        emb = jnp.concatenate([emb, jnp.zeros_like(emb[:, :1])], axis=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """Timestep -> ``[N, hidden]``: sinusoidal features, Linear, SiLU, Linear."""

    hidden_size: int
    frequency_embedding_size: int = 256
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, t: jax.Array) -> jax.Array:
        init = nn.initializers.normal(0.02)
        t_freq = timestep_features(t, self.frequency_embedding_size)
        h = dense(self.hidden_size, ("freq", "embed"), kernel_init=init, dtype=self.dtype, name="mlp_0")(t_freq)
        h = nn.silu(h)
        return dense(self.hidden_size, ("embed", "embed"), kernel_init=init, dtype=self.dtype, name="mlp_2")(h)


class LabelEmbedder(nn.Module):
    """Class labels -> ``[N, hidden]``, with a null row for classifier-free guidance.

    The table has ``num_classes + 1`` rows when ``dropout_prob > 0``; label ``num_classes``
    selects the null ("unconditional") row. In training, labels are replaced by the null
    label with probability ``dropout_prob`` (rng stream ``"dropout"``), or where
    ``force_drop_ids == 1``.
    """

    num_classes: int
    hidden_size: int
    dropout_prob: float
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, labels: jax.Array, train: bool, force_drop_ids: jax.Array | None = None) -> jax.Array:
        use_null = self.dropout_prob > 0
        table = self.param(
            "embedding_table",
            logical_init(nn.initializers.normal(0.02), ("classes", "embed")),
            (self.num_classes + int(use_null), self.hidden_size),
            jnp.float32,
        )
        if (train and use_null) or force_drop_ids is not None:
            if force_drop_ids is None:
                drop = jax.random.uniform(self.make_rng("dropout"), labels.shape) < self.dropout_prob
            else:
                drop = force_drop_ids == 1
            labels = jnp.where(drop, self.num_classes, labels)
        return jnp.take(table, labels, axis=0).astype(self.dtype)


class PatchEmbed(nn.Module):
    """Non-overlapping ``p x p`` patches of an NHWC image -> ``[N, (H/p)*(W/p), hidden]``.

    Equivalent to a stride-``p`` convolution with kernel ``[p, p, C, hidden]`` (HWIO);
    written as a reshape + matmul, which is what TPUs like. Tokens are row-major.
    """

    patch_size: int
    hidden_size: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n, h, w, c = x.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(
                f"image size {h}x{w} is not divisible by patch_size={p}; "
                f"resize the input or pick a patch size that divides it"
            )
        # HWIO kernel initialised like the reference's xavier_uniform on the [D, C*p*p] view.
        init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform", in_axis=(0, 1, 2), out_axis=3)
        kernel = self.param("kernel", logical_init(init, (None, None, None, "embed")), (p, p, c, self.hidden_size), jnp.float32)
        bias = self.param("bias", logical_init(nn.initializers.zeros_init(), ("embed",)), (self.hidden_size,), jnp.float32)
        patches = x.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
        patches = patches.reshape(n, (h // p) * (w // p), p, p, c).astype(self.dtype)
        tokens = jnp.einsum("ntabc,abcd->ntd", patches, kernel.astype(self.dtype))
        return tokens + bias.astype(self.dtype)


def sincos_1d_table(embed_dim: int, positions: np.ndarray) -> np.ndarray:
    """``[M, embed_dim]`` float64 table ``[sin(pos*w) | cos(pos*w)]``, w_k = 10000^(-2k/embed_dim)."""
    if embed_dim % 2:
        raise ValueError(f"embed_dim must be even, got {embed_dim}")
    omega = 1.0 / 10000 ** (np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0))
    out = np.einsum("m,d->md", positions.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d_table(embed_dim: int, grid_size: int) -> np.ndarray:
    """The fixed 2-D sin-cos position table of MAE/DiT, ``[grid_size**2, embed_dim]`` float64.

    Token ``(row i, col j)`` (index ``i * grid_size + j``) gets
    ``[sin(j w), cos(j w), sin(i w), cos(i w)]``: the first half encodes the column.
    """
    if embed_dim % 4:
        raise ValueError(f"embed_dim must be divisible by 4 for a 2-D sin-cos table, got {embed_dim}")
    rows, cols = np.meshgrid(np.arange(grid_size), np.arange(grid_size), indexing="ij")
    return np.concatenate(
        [sincos_1d_table(embed_dim // 2, cols), sincos_1d_table(embed_dim // 2, rows)], axis=1
    )
