"""The Stable-Diffusion VAE (``AutoencoderKL``, Rombach et al. 2022) that DiT, U-DiT and DiC sample in.

Faithful to ``diffusers.AutoencoderKL`` (diffusers 0.42.1: ``models/autoencoders/autoencoder_kl.py``,
``vae.py``, ``unets/unet_2d_blocks.py``, ``resnet.py``, ``downsampling.py``, ``upsampling.py``);
images are NHWC here, in [-1, 1].

- ``module.apply(v, x, method="encode") -> (mean, logvar)``: the posterior ``N(mean, exp(logvar))``
  of the latent ``[N, H/f, W/f, latent_channels]`` (``f = 2 ** (len(block_out_channels) - 1)``,
  8 for the real model); ``logvar`` is clamped to [-30, 20] as ``DiagonalGaussianDistribution``.
- ``module.apply(v, z, method="decode") -> image [N, H, W, out_channels]`` (float32, about [-1, 1]).
- ``module.apply(v, x)`` = ``decode(mean)`` (the reference's ``forward(sample_posterior=False)``);
  ``module.apply(v, x, rng)`` decodes a posterior draw (``sample_posterior=True``).
- ``sample_posterior(mean, logvar, rng)`` draws ``mean + exp(logvar / 2) * eps``.

Latent diffusion models use ``config.scaling_factor * z`` (0.18215 for sd-vae-ft-ema/-mse) as
their data, and decode ``z / scaling_factor``; ``jaxlab.diffusion.latents`` does both.

Parameter names mirror the diffusers module paths with ``_`` for ``.`` (``encoder/
down_blocks_0_resnets_1/conv2``, ``decoder/up_blocks_0_upsamplers_0/conv``,
``decoder/mid_block/attentions_0/to_out_0``). Intermediates are ``sow``n to
``"intermediates"`` under stable names, the output of each named stage:
``encoder/{out_conv_in, out_down_blocks_<i>, out_mid_block, out_conv_out}``,
``encoder/mid_block/out_attentions_0``, ``moments`` (``quant_conv`` output), ``out_post_quant_conv``,
``decoder/{out_conv_in, out_mid_block, out_up_blocks_<i>}``.
"""

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.models.common import ModelConfig
from jaxlab.nn import dense, dot_product_attention, group_norm, logical_init
from jaxlab.nn.conv import conv2d

# PyTorch's default Conv2d/Linear init (kaiming_uniform with a = sqrt(5)): U(+-1/sqrt(fan_in)).
_torch_default_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
_ACTIVATIONS = {"silu": nn.silu, "swish": nn.silu, "relu": nn.relu, "gelu": lambda x: nn.gelu(x, approximate=False),
                "mish": lambda x: x * jnp.tanh(nn.softplus(x))}
_DOWN_BLOCK = "DownEncoderBlock2D"
_UP_BLOCK = "UpDecoderBlock2D"


@dataclasses.dataclass(frozen=True)
class VAEConfig(ModelConfig):
    """Architecture of an ``AutoencoderKL``; the fields are the diffusers constructor arguments.

    Defaults are the ``stabilityai/sd-vae-ft-ema`` (and ``-mse``) ``config.json``, not the bare
    class defaults (a 1-level toy). ``scaling_factor`` and ``shift_factor`` (None = 0) are not
    used by the network; they map its posterior to diffusion data: ``(z - shift) * scale``.
    ``latents_mean``/``latents_std`` are accepted only as None (no SD-VAE config sets them).
    ``act_fn`` is the resnets' activation; the one before ``conv_out`` is SiLU in any case (diffusers).

    Beyond the reference: ``dtype``, the compute dtype (params stay float32). Float32 is the
    default because the SD-VAE decoder overflows in float16 (diffusers' ``force_upcast``);
    "bfloat16" is opt-in (GroupNorm statistics and the attention softmax stay float32; the
    measured difference is in docs/vae.md).
    """

    in_channels: int = 3
    out_channels: int = 3
    down_block_types: tuple[str, ...] = (_DOWN_BLOCK,) * 4
    up_block_types: tuple[str, ...] = (_UP_BLOCK,) * 4
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    act_fn: str = "silu"
    latent_channels: int = 4
    norm_num_groups: int = 32
    sample_size: int = 256
    scaling_factor: float = 0.18215
    shift_factor: float | None = None
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None
    force_upcast: bool = True
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True
    dtype: str = "float32"

    def __post_init__(self):
        # Lists (JSON, ml_collections) become tuples so the config stays hashable.
        for name in ("down_block_types", "up_block_types", "block_out_channels", "latents_mean", "latents_std"):
            value = getattr(self, name)
            if isinstance(value, Sequence) and not isinstance(value, str):
                object.__setattr__(self, name, tuple(v.item() if isinstance(v, np.generic) else v for v in value))

    def validate(self) -> None:
        super().validate()
        n = len(self.block_out_channels)
        if n < 1 or any(not isinstance(c, int) or c < 1 for c in self.block_out_channels):
            raise ValueError(f"block_out_channels={list(self.block_out_channels)} must be positive ints")
        for name, types, allowed in (("down_block_types", self.down_block_types, _DOWN_BLOCK),
                                     ("up_block_types", self.up_block_types, _UP_BLOCK)):
            if len(types) != n or any(t != allowed for t in types):
                raise ValueError(
                    f"{name}={list(types)} is not supported: jaxlab's AutoencoderKL has {n} x {allowed!r} "
                    f"(one per block_out_channels entry), as every SD-VAE checkpoint"
                )
        if self.act_fn not in _ACTIVATIONS:
            raise ValueError(f"act_fn={self.act_fn!r} is not supported; allowed values: {sorted(_ACTIVATIONS)}")
        for name in ("in_channels", "out_channels", "layers_per_block", "latent_channels", "norm_num_groups",
                     "sample_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(
                f"block_out_channels={list(self.block_out_channels)}: {bad} cannot be split into "
                f"norm_num_groups={self.norm_num_groups} groups; pick channels divisible by the group count"
            )
        if self.latents_mean is not None or self.latents_std is not None:
            raise ValueError(
                "latents_mean/latents_std are not supported (no SD-VAE config sets them); pass None and "
                "normalise latents with scaling_factor/shift_factor"
            )
        if not self.scaling_factor > 0:
            raise ValueError(f"scaling_factor={self.scaling_factor} must be > 0 (0.18215 for the SD VAE)")

    @property
    def downsample_factor(self) -> int:
        """Pixels per latent pixel along each side: ``2 ** (len(block_out_channels) - 1)``."""
        return 2 ** (len(self.block_out_channels) - 1)


# The released SD VAEs share one architecture (their config.json); "tiny" is the golden case's.
PRESETS: dict[str, dict] = {
    "sd-vae-ft-ema": {},
    "sd-vae-ft-mse": {},
    "tiny": dict(block_out_channels=(16, 32), down_block_types=(_DOWN_BLOCK,) * 2, up_block_types=(_UP_BLOCK,) * 2,
                 layers_per_block=1, norm_num_groups=8, sample_size=32),
}


def sample_posterior(mean: jax.Array, logvar: jax.Array, rng: jax.Array) -> jax.Array:
    """A draw ``mean + exp(0.5 * logvar) * eps``, ``eps ~ N(0, I)`` (``DiagonalGaussianDistribution.sample``)."""
    eps = jax.random.normal(rng, mean.shape, jnp.float32)
    return mean + jnp.exp(0.5 * logvar) * eps


def _group_norm(groups: int, dtype, name: str) -> nn.GroupNorm:
    # Two-pass float32 statistics, as torch's group_norm; eps 1e-6 everywhere in the VAE.
    return group_norm(groups, 1e-6, dtype, name)


def _conv(features: int, dtype, name: str, kernel_size: int = 3) -> nn.Module:
    return conv2d(features, (None, "embed"), kernel_size=kernel_size, dtype=dtype, kernel_init=_torch_default_init,
                  name=name)


class ResnetBlock(nn.Module):
    """``ResnetBlock2D`` without a time embedding: ``[N, H, W, Cin] -> [N, H, W, out_channels]``.

    ``conv1(act(GN1(x)))``, ``conv2(act(GN2(h)))`` plus the input (1x1 ``conv_shortcut`` when the
    channel count changes). Dropout is 0 in every SD VAE and not implemented.
    """

    out_channels: int
    groups: int
    act_fn: str
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_NHWC: jax.Array) -> jax.Array:
        act = _ACTIVATIONS[self.act_fn]
        h = _conv(self.out_channels, self.dtype, "conv1")(act(_group_norm(self.groups, self.dtype, "norm1")(x_NHWC)))
        h = _conv(self.out_channels, self.dtype, "conv2")(act(_group_norm(self.groups, self.dtype, "norm2")(h)))
        if x_NHWC.shape[-1] != self.out_channels:
            x_NHWC = _conv(self.out_channels, self.dtype, "conv_shortcut", kernel_size=1)(x_NHWC)
        return x_NHWC + h


class Attention(nn.Module):
    """The mid-block self-attention (one head of width C) over the ``H*W`` positions, with residual.

    ``GN -> to_q/to_k/to_v -> softmax(q k^T / sqrt(C)) v -> to_out_0`` + input, through the shared
    ``jaxlab.nn.dot_product_attention``; positions in row-major (H, then W) order.
    """

    groups: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_NHWC: jax.Array) -> jax.Array:
        n, hh, ww, c = x_NHWC.shape
        h_NTC = _group_norm(self.groups, self.dtype, "group_norm")(x_NHWC).reshape(n, hh * ww, c)
        q, k, v = (dense(c, (None, "embed"), dtype=self.dtype, kernel_init=_torch_default_init, name=name)(h_NTC)
                   for name in ("to_q", "to_k", "to_v"))
        a_NTC = dot_product_attention(q[:, :, None], k[:, :, None], v[:, :, None])[:, :, 0]
        o_NTC = dense(c, (None, "embed"), dtype=self.dtype, kernel_init=_torch_default_init, name="to_out_0")(a_NTC)
        return x_NHWC + o_NTC.reshape(n, hh, ww, c).astype(x_NHWC.dtype)


class MidBlock(nn.Module):
    """``UNetMidBlock2D`` (one layer): resnet -> attention (optional) -> resnet, at constant width."""

    groups: int
    act_fn: str
    add_attention: bool = True
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_NHWC: jax.Array) -> jax.Array:
        c = x_NHWC.shape[-1]
        h = ResnetBlock(c, self.groups, self.act_fn, self.dtype, name="resnets_0")(x_NHWC)
        if self.add_attention:
            h = Attention(self.groups, self.dtype, name="attentions_0")(h)
            self.sow("intermediates", "out_attentions_0", h)
        return ResnetBlock(c, self.groups, self.act_fn, self.dtype, name="resnets_1")(h)


class Downsample(nn.Module):
    """``Downsample2D`` with ``padding=0``: zero-pad one pixel at the right and bottom, then a 3x3
    stride-2 conv without padding (a symmetric pad-1 conv would shift the result)."""

    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_NHWC: jax.Array) -> jax.Array:
        x = jnp.pad(x_NHWC, ((0, 0), (0, 1), (0, 1), (0, 0)))
        c = x_NHWC.shape[-1]
        return nn.Conv(c, (3, 3), strides=(2, 2), padding="VALID", dtype=self.dtype, param_dtype=jnp.float32,
                       kernel_init=logical_init(_torch_default_init, (None, None, None, "embed")),
                       bias_init=logical_init(nn.initializers.zeros_init(), ("embed",)), name="conv")(x)


class Upsample(nn.Module):
    """``Upsample2D``: nearest-neighbour x2, then a 3x3 pad-1 conv."""

    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_NHWC: jax.Array) -> jax.Array:
        x = jnp.repeat(jnp.repeat(x_NHWC, 2, axis=1), 2, axis=2)
        return _conv(x_NHWC.shape[-1], self.dtype, "conv")(x)


class Encoder(nn.Module):
    """Image ``[N, H, W, in_channels]`` -> moments ``[N, H/f, W/f, 2 * latent_channels]``."""

    config: VAEConfig

    @nn.compact
    def __call__(self, x_NHWC: jax.Array) -> jax.Array:
        cfg = self.config
        dtype, groups, widths = jnp.dtype(cfg.dtype), cfg.norm_num_groups, cfg.block_out_channels
        h = _conv(widths[0], dtype, "conv_in")(x_NHWC.astype(dtype))
        self.sow("intermediates", "out_conv_in", h)
        for i, width in enumerate(widths):
            block = f"down_blocks_{i}"
            for j in range(cfg.layers_per_block):
                h = ResnetBlock(width, groups, cfg.act_fn, dtype, name=f"{block}_resnets_{j}")(h)
            if i < len(widths) - 1:
                h = Downsample(dtype, name=f"{block}_downsamplers_0")(h)
            self.sow("intermediates", f"out_{block}", h)
        h = MidBlock(groups, cfg.act_fn, cfg.mid_block_add_attention, dtype, name="mid_block")(h)
        self.sow("intermediates", "out_mid_block", h)
        h = nn.silu(_group_norm(groups, dtype, "conv_norm_out")(h))  # SiLU whatever act_fn, as diffusers
        h = _conv(2 * cfg.latent_channels, dtype, "conv_out")(h)
        self.sow("intermediates", "out_conv_out", h)
        return h


class Decoder(nn.Module):
    """Latent ``[N, h, w, latent_channels]`` -> image ``[N, h*f, w*f, out_channels]``."""

    config: VAEConfig

    @nn.compact
    def __call__(self, z_NHWC: jax.Array) -> jax.Array:
        cfg = self.config
        dtype, groups = jnp.dtype(cfg.dtype), cfg.norm_num_groups
        widths = cfg.block_out_channels[::-1]
        h = _conv(widths[0], dtype, "conv_in")(z_NHWC.astype(dtype))
        self.sow("intermediates", "out_conv_in", h)
        h = MidBlock(groups, cfg.act_fn, cfg.mid_block_add_attention, dtype, name="mid_block")(h)
        self.sow("intermediates", "out_mid_block", h)
        for i, width in enumerate(widths):
            block = f"up_blocks_{i}"
            for j in range(cfg.layers_per_block + 1):
                h = ResnetBlock(width, groups, cfg.act_fn, dtype, name=f"{block}_resnets_{j}")(h)
            if i < len(widths) - 1:
                h = Upsample(dtype, name=f"{block}_upsamplers_0")(h)
            self.sow("intermediates", f"out_{block}", h)
        h = nn.silu(_group_norm(groups, dtype, "conv_norm_out")(h))  # SiLU whatever act_fn, as diffusers
        return _conv(cfg.out_channels, dtype, "conv_out")(h)


class AutoencoderKL(nn.Module):
    """The KL-regularised autoencoder: ``encode``, ``decode`` and ``__call__`` (= decode(mean)).

    All outputs are float32 whatever ``config.dtype``.
    """

    config: VAEConfig

    def setup(self):
        cfg = self.config
        cfg.validate()
        dtype = jnp.dtype(cfg.dtype)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        if cfg.use_quant_conv:
            self.quant_conv = _conv(2 * cfg.latent_channels, dtype, "quant_conv", kernel_size=1)
        if cfg.use_post_quant_conv:
            self.post_quant_conv = _conv(cfg.latent_channels, dtype, "post_quant_conv", kernel_size=1)

    def __call__(self, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
        """``decode(mean)`` of ``encode(x)`` (the reference's ``forward(sample_posterior=False)``), or
        of a posterior draw with key ``rng`` (``sample_posterior=True``)."""
        mean, logvar = self.encode(x)
        return self.decode(mean if rng is None else sample_posterior(mean, logvar, rng))

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Image ``[N, H, W, in_channels]`` in [-1, 1] -> posterior ``(mean, logvar)``, each
        ``[N, H/f, W/f, latent_channels]`` float32 (``logvar`` clamped to [-30, 20])."""
        self._check_image(x)
        moments = self.encoder(x)
        if self.config.use_quant_conv:
            moments = self.quant_conv(moments)
        moments = moments.astype(jnp.float32)
        self.sow("intermediates", "moments", moments)
        z = self.config.latent_channels
        return moments[..., :z], jnp.clip(moments[..., z:], -30.0, 20.0)

    def decode(self, z: jax.Array) -> jax.Array:
        """Latent ``[N, h, w, latent_channels]`` (unscaled: divide diffusion latents by
        ``scaling_factor`` first) -> image ``[N, h*f, w*f, out_channels]`` float32, about [-1, 1]."""
        self._check_latent(z)
        h = z.astype(jnp.dtype(self.config.dtype))
        if self.config.use_post_quant_conv:
            h = self.post_quant_conv(h)
            self.sow("intermediates", "out_post_quant_conv", h)
        return self.decoder(h).astype(jnp.float32)

    def _check_image(self, x: jax.Array) -> None:
        cfg, f = self.config, self.config.downsample_factor
        if x.ndim != 4 or x.shape[-1] != cfg.in_channels:
            raise ValueError(
                f"AutoencoderKL.encode expects NHWC images [N, H, W, {cfg.in_channels}], got {tuple(x.shape)}; "
                f"transpose NCHW with x.transpose(0, 2, 3, 1)"
            )
        if x.shape[1] % f or x.shape[2] % f:
            raise ValueError(
                f"image size {x.shape[1]}x{x.shape[2]} is not divisible by the VAE's downsampling factor {f}; "
                f"crop or resize the images to a multiple of {f} (e.g. 256x256)"
            )

    def _check_latent(self, z: jax.Array) -> None:
        cfg = self.config
        if z.ndim != 4 or z.shape[-1] != cfg.latent_channels:
            raise ValueError(
                f"AutoencoderKL.decode expects NHWC latents [N, h, w, {cfg.latent_channels}], got "
                f"{tuple(z.shape)}: the latents do not come from this VAE (or are NCHW: transpose(0, 2, 3, 1))"
            )

