"""DiT: Scalable Diffusion Models with Transformers (Peebles & Xie, 2023).

Faithful to ``facebookresearch/DiT`` ``models.py``; images are NHWC here.
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.models.common import (
    ModelConfig,
    check_cfg_channels,
    check_labels,
    forward_with_cfg,
    maybe_remat,
    repeated_blocks,
    unpatchify,
)
from jaxlab.nn import (
    AdaLNModulation,
    LabelEmbedder,
    Mlp,
    MultiHeadSelfAttention,
    PatchEmbed,
    TimestepEmbedder,
    dense,
    layer_norm_no_affine,
    modulate,
    sincos_2d_table,
)
from jaxlab.nn.linear import zeros


@dataclasses.dataclass(frozen=True)
class DiTConfig(ModelConfig):
    """Architecture of a DiT; the fields match the official ``DiT.__init__`` arguments.

    Attributes beyond the reference: ``dtype`` (compute dtype name, params stay float32),
    ``remat`` (rematerialise each block: "none", "full" or a ``jax.checkpoint_policies``
    name), ``scan_blocks`` (stack the blocks with ``nn.scan``; one compiled block).
    """

    input_size: int = 32
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    class_dropout_prob: float = 0.1
    num_classes: int = 1000
    learn_sigma: bool = True
    cfg_channels: int = 0  # output channels classifier-free guidance acts on; 0: common.guided_channels
    dtype: str = "float32"
    remat: str = "none"
    scan_blocks: bool = False

    POSITIVE = ("input_size", "patch_size", "in_channels", "hidden_size", "depth", "num_heads", "num_classes", "mlp_ratio")
    PROBABILITIES = ("class_dropout_prob",)

    def validate(self) -> None:
        super().validate()
        check_cfg_channels(self)
        if self.input_size % self.patch_size:
            raise ValueError(
                f"input_size={self.input_size} is not divisible by patch_size={self.patch_size}; "
                f"pick a patch size that divides the image (latent) size"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")
        if self.hidden_size % 4:
            raise ValueError(f"hidden_size={self.hidden_size} must be divisible by 4 (2-D sin-cos position table)")

    @property
    def out_channels(self) -> int:
        return self.in_channels * 2 if self.learn_sigma else self.in_channels

    @property
    def num_patches(self) -> int:
        return (self.input_size // self.patch_size) ** 2


# Official presets (models.py: DiT_models): (depth, hidden_size, num_heads).
_SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}
PRESETS: dict[str, dict] = {
    f"DiT-{size}/{p}": dict(depth=d, hidden_size=h, num_heads=nh, patch_size=p)
    for size, (d, h, nh) in _SIZES.items()
    for p in (2, 4, 8)
}


@functools.lru_cache(maxsize=16)
def pos_embed_table(hidden_size: int, grid_size: int) -> np.ndarray:
    """Fixed 2-D sin-cos table ``[T, D]`` float32 (computed in float64); not a parameter."""
    table = sincos_2d_table(hidden_size, grid_size).astype(np.float32)
    table.flags.writeable = False
    return table


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero conditioning. ``x [N, T, D], c [N, D] -> [N, T, D]``."""

    num_heads: int
    mlp_ratio: float
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        d = x.shape[-1]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = AdaLNModulation(
            6, dtype=self.dtype, name="adaLN_modulation"
        )(c)
        h = modulate(layer_norm_no_affine(self.dtype, name="norm1")(x), shift_msa, scale_msa)
        x = x + gate_msa[:, None] * MultiHeadSelfAttention(self.num_heads, dtype=self.dtype, name="attn")(h)
        h = modulate(layer_norm_no_affine(self.dtype, name="norm2")(x), shift_mlp, scale_mlp)
        x = x + gate_mlp[:, None] * Mlp(int(d * self.mlp_ratio), dtype=self.dtype, name="mlp")(h)
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class FinalLayer(nn.Module):
    """adaLN (shift, scale) + zero-initialised Linear: ``[N, T, D] -> [N, T, p*p*out_channels]``."""

    patch_out: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        shift, scale = AdaLNModulation(2, dtype=self.dtype, name="adaLN_modulation")(c)
        x = modulate(layer_norm_no_affine(self.dtype, name="norm_final")(x), shift, scale)
        return dense(self.patch_out, ("embed", "patch"), kernel_init=zeros, dtype=self.dtype, name="linear")(x)


class DiT(nn.Module):
    """Class-conditional diffusion transformer on NHWC images/latents.

    ``__call__(x [N, H, W, C], t [N], y [N]) -> [N, H, W, out_channels]`` (float32), where
    ``out_channels = 2C`` with learned sigma (channels ``[:C]`` are epsilon, ``[C:]`` the
    variance interpolation values) and ``C`` otherwise.
    """

    config: DiTConfig

    def setup(self):
        cfg = self.config
        cfg.validate()
        dtype = jnp.dtype(cfg.dtype)
        self.x_embedder = PatchEmbed(cfg.patch_size, cfg.hidden_size, dtype=dtype)
        self.t_embedder = TimestepEmbedder(cfg.hidden_size, dtype=dtype)
        self.y_embedder = LabelEmbedder(cfg.num_classes, cfg.hidden_size, cfg.class_dropout_prob, dtype=dtype)
        if cfg.scan_blocks:
            self.blocks = repeated_blocks(
                DiTBlock, cfg.depth, cfg.remat, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, dtype=dtype
            )
        else:
            block = maybe_remat(DiTBlock, cfg.remat)
            self.blocks = [block(cfg.num_heads, cfg.mlp_ratio, dtype, name=f"blocks_{i}") for i in range(cfg.depth)]
        self.final_layer = FinalLayer(cfg.patch_size**2 * cfg.out_channels, dtype=dtype)

    def __call__(
        self,
        x: jax.Array,
        t: jax.Array,
        y: jax.Array,
        train: bool = False,
        force_drop_ids: jax.Array | None = None,
        cond: jax.Array | None = None,
    ) -> jax.Array:
        """``cond [N, hidden_size]`` (optional): an extra embedding added to the timestep + label
        embedding, e.g. QAC's code (``jaxlab.diffusion.qac``); None leaves the model unchanged."""
        cfg = self.config
        self._check_inputs(x, y)
        dtype = jnp.dtype(cfg.dtype)
        h = self.x_embedder(x) + jnp.asarray(pos_embed_table(cfg.hidden_size, cfg.input_size // cfg.patch_size), dtype)
        h = nn.with_logical_constraint(h, ("batch", "length", "embed"))
        c = self.t_embedder(t) + self.y_embedder(y, train, force_drop_ids)
        if cond is not None:
            if cond.shape != c.shape:
                raise ValueError(f"DiT cond must be [N, hidden_size] = {tuple(c.shape)}, got {tuple(cond.shape)}")
            c = c + cond.astype(c.dtype)
        if cfg.scan_blocks:
            h, _ = self.blocks(h, c)
        else:
            for block in self.blocks:
                h = block(h, c)
        h = self.final_layer(h, c)
        return unpatchify(h.astype(jnp.float32), cfg.patch_size, cfg.out_channels)

    def forward_with_cfg(self, x: jax.Array, t: jax.Array, y: jax.Array, cfg_scale: float | jax.Array) -> jax.Array:
        """Classifier-free guidance exactly as the official ``DiT.forward_with_cfg`` (see ``common.forward_with_cfg``)."""
        return forward_with_cfg(self, x, t, y, cfg_scale)

    def _check_inputs(self, x: jax.Array, y: jax.Array) -> None:
        cfg = self.config
        if x.ndim != 4 or x.shape[1:] != (cfg.input_size, cfg.input_size, cfg.in_channels):
            raise ValueError(
                f"DiT expects NHWC input [N, {cfg.input_size}, {cfg.input_size}, {cfg.in_channels}], got "
                f"{tuple(x.shape)}; transpose NCHW with x.transpose(0, 2, 3, 1) or change "
                f"input_size/in_channels in the config"
            )
        check_labels(y, cfg.num_classes, allow_null=cfg.class_dropout_prob > 0)
