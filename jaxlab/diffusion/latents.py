"""Between pixels and the latent space of a VAE: the encode/decode steps of latent diffusion, jitted.

Latent diffusion models (DiT, U-DiT, DiC) train on ``(z - shift) * scaling_factor`` with ``z`` a
posterior draw of the SD VAE (0.18215, no shift, for sd-vae-ft-ema/-mse: the fast-DiT
``extract_features.py`` convention) and sample by decoding ``latents / scaling_factor + shift``
(DiT's ``sample_ddp.py``: ``vae.decode(z / 0.18215)``, then ``clamp(127.5 x + 128, 0, 255)`` to uint8).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxlab.models.vae import AutoencoderKL, sample_posterior


def _shift(module: AutoencoderKL) -> float:
    return float(module.config.shift_factor or 0.0)


def to_uint8(images: jax.Array) -> jax.Array:
    """``[..., C]`` float images in about [-1, 1] -> uint8, as ``sample_ddp.py``:
    ``clamp(127.5 * x + 128, 0, 255)`` truncated (i.e. rounded ``(x + 1) * 127.5``)."""
    return jnp.clip(127.5 * images.astype(jnp.float32) + 128.0, 0.0, 255.0).astype(jnp.uint8)


def check_vae_fits_backbone(vae_config, backbone_config, latent: bool) -> None:
    """Raises (naming the fix) unless the backbone samples in this VAE's latent space."""
    if not latent:
        raise ValueError(
            "--vae was given for a pixel-space model (config.sample.latent=False): its samples are images "
            "already; drop --vae, or sample a latent model (e.g. configs/dit.py:XL-2)"
        )
    channels = backbone_config.in_channels
    if channels != vae_config.latent_channels:
        raise ValueError(
            f"the model samples {channels}-channel latents but the VAE decodes {vae_config.latent_channels}-channel "
            f"ones: this VAE does not belong to this model (DiT/U-DiT/DiC use the 4-channel sd-vae-ft-ema/-mse)"
        )


def make_latent_decoder(module: AutoencoderKL) -> Callable[[dict, jax.Array], jax.Array]:
    """A jitted ``decode(params, latents [N, h, w, Z]) -> uint8 images [N, h*f, w*f, C]``.

    ``latents`` are diffusion latents (scaled); they are unscaled before the VAE decodes them.
    """
    scale, shift = module.config.scaling_factor, _shift(module)

    @jax.jit
    def decode(params, latents):
        images = module.apply({"params": params}, latents / scale + shift, method="decode")
        return to_uint8(images)

    return decode


def make_latent_encoder(module: AutoencoderKL) -> Callable[[dict, jax.Array, jax.Array], jax.Array]:
    """A jitted ``encode(params, images [N, H, W, C] in [-1, 1], keys [N]) -> latents [N, H/f, W/f, Z]``.

    Each example draws its posterior sample with its own key (so the result does not depend on
    how examples are batched), then ``(z - shift) * scaling_factor``: diffusion training data.
    """
    scale, shift = module.config.scaling_factor, _shift(module)

    @jax.jit
    def encode(params, images, keys):
        mean, logvar = module.apply({"params": params}, images, method="encode")
        z = jax.vmap(lambda m, lv, k: sample_posterior(m[None], lv[None], k)[0])(mean, logvar, keys)
        return (z - shift) * scale

    return encode
