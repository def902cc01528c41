"""The VAE side of the launch scripts: loading a converted VAE and writing decoded samples."""

import pathlib

import jax
import numpy as np
from PIL import Image

from jaxlab.diffusion.latents import make_latent_decoder
from jaxlab.eval.images import make_grid
from jaxlab.train.params_io import load_model


def load_vae(path: str):
    """``(module, params)`` of a converted VAE (``launch.convert --family=vae``); names the fix otherwise."""
    import json

    meta = pathlib.Path(path) / "model.json"
    if not meta.is_file():
        raise FileNotFoundError(
            f"--vae={path} is not a converted VAE (no model.json); convert the diffusers weights first: "
            f"python -m launch.convert --family=vae --checkpoint=<sd-vae-ft-ema>/diffusion_pytorch_model.safetensors "
            f"--output={path}"
        )
    family = json.loads(meta.read_text()).get("family")
    if family != "vae":
        raise ValueError(
            f"--vae={path} holds a {family!r} model, not a VAE; pass the directory written by "
            f"`python -m launch.convert --family=vae ...`"
        )
    module, params = load_model(path)
    return module, jax.device_put(params)  # on the device once, not copied at every decode call


def decode_latents(vae, vae_params, latents: np.ndarray, batch_size: int) -> np.ndarray:
    """Diffusion latents ``[N, h, w, Z]`` -> uint8 images ``[N, h*f, w*f, 3]``, ``batch_size`` at a time."""
    decode = make_latent_decoder(vae)
    images = [np.asarray(decode(vae_params, latents[i : i + batch_size])) for i in range(0, len(latents), batch_size)]
    return np.concatenate(images)


def write_images(outdir: pathlib.Path, images: np.ndarray, ncol: int | None = None) -> tuple[pathlib.Path, pathlib.Path]:
    """Writes ``images/<i>.png`` for each uint8 ``[N, H, W, 3]`` image and ``grid.png``; returns both paths."""
    folder = outdir / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:06d}.png")
    grid = outdir / "grid.png"
    Image.fromarray(make_grid(images, ncol)).save(grid)
    return folder, grid


def write_decoded_samples(outdir: pathlib.Path, vae, vae_params, latents: np.ndarray, labels: np.ndarray,
                          batch_size: int, ncol: int | None = None) -> None:
    """Decodes sampled latents and writes ``samples.npz`` (uint8 ``samples``, ``labels``, ``latents``),
    ``images/<i>.png`` and ``grid.png``. Non-finite latents are an error, not black images."""
    if not np.isfinite(latents).all():
        raise FloatingPointError(
            f"{int((~np.isfinite(latents)).sum())} sampled latent values are NaN/Inf; nothing was decoded. Check the "
            f"checkpoint (and config.model.dtype) before decoding"
        )
    images = decode_latents(vae, vae_params, latents, batch_size)
    np.savez(outdir / "samples.npz", samples=images, labels=labels, latents=latents)
    folder, grid = write_images(outdir, images, ncol)
    print(f"decoded {len(images)} samples to {images.shape[1]}x{images.shape[2]} RGB: {folder}/*.png, {grid} and "
          f"{outdir / 'samples.npz'} (uint8 samples, labels, latents)")
