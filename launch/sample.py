"""Sample class-conditional images (or latents) from a checkpoint or a random init.

  python -m launch.sample --config=configs/dit.py:tiny --outdir=/tmp/samples
  python -m launch.sample --config=configs/dit.py:XL-2 --checkpoint=/tmp/dit_xl2 \
      --config.sample.sampler=ddpm --config.sample.num_steps=250 --outdir=/tmp/xl2

Writes ``<outdir>/samples.npz`` (``samples [N, H, W, C]`` float32, ``labels [N]``) and a PNG
grid. Latent models (``config.sample.latent=True``) write the latents, and a grid of latent
channels 0-2; with ``--vae=<converted SD VAE>`` they are decoded as DiT's ``sample_ddp.py`` does:
``samples.npz`` then holds ``samples`` uint8 images ``[N, H, W, 3]``, ``labels`` and ``latents``,
next to ``images/<i>.png`` and ``grid.png`` (see docs/vae.md):

  python -m launch.sample --config=configs/dit.py:XL-2 --checkpoint=/tmp/dit_xl2 --vae=/tmp/sd_vae --outdir=/tmp/xl2
"""

import pathlib
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from jaxlab import cli
from jaxlab.config_utils import to_dict
from jaxlab.diffusion.pipeline import make_class_sampler, sampling_diffusion
from jaxlab.diffusion.sample_config import validate_sample_config
from jaxlab.eval.images import save_grid
from jaxlab.models.registry import get_family
from jaxlab.diffusion.latents import check_vae_fits_backbone
from jaxlab.train import integrity
from jaxlab.train.params_io import load_model, read_model_config
from jaxlab.quant.io import is_quantized, quantized_sampling
from .latents import load_vae, write_decoded_samples

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<family>.py:<variant>", lock_config=True)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "jaxlab model checkpoint (launch.convert output); default: random init")
_VAE = flags.DEFINE_string("vae", None, "converted SD VAE (launch.convert --family=vae): decode latents to RGB PNGs")
_OUTDIR = flags.DEFINE_string("outdir", None, "where to write samples.npz and the PNG grid", required=True)
_QUANT_MODE = flags.DEFINE_enum("quant_mode", "integer", ["integer", "fake"], "a launch.quantize checkpoint: int8 matmuls or simulated")


def _model_config(config, checkpoint: str | None):
    """The model config sampling will use (the checkpoint's own, else ``config.model``), without building it."""
    if checkpoint:
        return read_model_config(checkpoint)[1]
    return get_family(config.model_family).config.from_dict(to_dict(config.model))


def _grid_columns(sample_cfg) -> int | None:
    """One column per class when the samples cycle through whole rows of ``classes`` (else a square grid)."""
    n = len(sample_cfg.classes)
    return n if sample_cfg.num_samples % n == 0 else None


def build(config, checkpoint: str | None, seed: int):
    """(module, params) from a checkpoint, or a random init of ``config.model``."""
    if checkpoint:
        module, params = load_model(checkpoint)
        print(f"loaded {config.model_family} checkpoint {checkpoint} (its own architecture; config.model ignored)")
        return module, params
    family = get_family(config.model_family)
    module = family.module(family.config.from_dict(to_dict(config.model)))
    cfg = module.config
    x = jnp.zeros((1, cfg.input_size, cfg.input_size, cfg.in_channels))
    t = jnp.zeros((1,), jnp.int32)
    params = jax.jit(module.init)(jax.random.key(seed), x, t, t)["params"]
    print("no --checkpoint: sampling a randomly initialised model (its adaLN-Zero layers output zeros)")
    return module, jax.tree_util.tree_map(np.asarray, nn.unbox(params))


def main(argv):
    del argv
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config is required, e.g. --config=configs/dit.py:tiny")
    outdir = pathlib.Path(_OUTDIR.value)
    if "edm" in config:  # EDM / QAC runs (configs/qac.py): the ODE solvers of jaxlab.diffusion.edm
        return _sample_edm(config, _CHECKPOINT.value, outdir)
    sample_cfg = config.sample
    validate_sample_config(sample_cfg, _model_config(config, _CHECKPOINT.value).num_classes)  # before any model work
    module, params = build(config, _CHECKPOINT.value, config.seed)
    cfg = module.config
    nonfinite = integrity.nonfinite_host(params)
    if nonfinite:
        raise ValueError(f"the parameters hold NaN/Inf in {integrity.describe_nonfinite(nonfinite)}; the checkpoint "
                         f"is broken: convert or train it again")
    vae = None
    if _VAE.value:
        vae, vae_params = load_vae(_VAE.value)
        check_vae_fits_backbone(vae.config, cfg, sample_cfg.latent)
    outdir.mkdir(parents=True, exist_ok=True)

    diffusion = sampling_diffusion(sample_cfg.sampler, sample_cfg.num_steps, cfg.learn_sigma, **to_dict(config.diffusion))
    apply_fn = None
    if _CHECKPOINT.value and is_quantized(_CHECKPOINT.value):
        params, apply_fn = quantized_sampling(_CHECKPOINT.value, module, params, diffusion, sample_cfg.sampler,
                                              sample_cfg.num_steps, _QUANT_MODE.value)
    sample = make_class_sampler(
        module, diffusion, sampler=sample_cfg.sampler, cfg_scale=sample_cfg.cfg_scale,
        eta=sample_cfg.eta, clip_denoised=sample_cfg.clip_denoised, apply_fn=apply_fn,
    )
    labels = np.resize(np.asarray(sample_cfg.classes, np.int32), sample_cfg.num_samples)
    key = jax.random.key(config.seed)
    chunks, start = [], time.perf_counter()
    for i in range(0, len(labels), sample_cfg.batch_size):
        batch = labels[i : i + sample_cfg.batch_size]
        chunks.append(np.asarray(sample(params, jnp.asarray(batch), jax.random.fold_in(key, i))))
    samples = np.concatenate(chunks)
    elapsed = time.perf_counter() - start
    if not np.isfinite(samples).all():
        raise FloatingPointError(
            f"{np.mean(~np.isfinite(samples).reshape(len(samples), -1).all(axis=1)):.1%} of the samples hold NaN/Inf; "
            f"nothing written. Check config.sample (cfg_scale, num_steps, sampler) and the checkpoint"
        )

    if vae is not None:
        write_decoded_samples(outdir, vae, vae_params, samples, labels, sample_cfg.batch_size, _grid_columns(sample_cfg))
        print(f"{sample_cfg.sampler}-{sample_cfg.num_steps}, cfg {sample_cfg.cfg_scale}: {elapsed:.1f}s (including compilation)")
        return
    np.savez(outdir / "samples.npz", samples=samples, labels=labels)
    if sample_cfg.latent:
        # Latents are unbounded (std ~1 after DiT's 0.18215 scaling): show channels 0-2, min-max scaled.
        view = samples[..., :3]
        lo, hi = float(view.min()), float(view.max())
        grid = save_grid(outdir / "latents_grid.png", view, ncol=_grid_columns(sample_cfg),
                         value_range=(lo, hi if hi > lo else lo + 1), scale=4)
        print(f"wrote {len(samples)} latents {samples.shape[1:]} to {outdir / 'samples.npz'}; decode them to "
              f"images with --vae=<converted SD VAE>; {grid} shows latent channels 0-2")
    else:
        channels = samples if samples.shape[-1] in (1, 3) else samples[..., :3]
        grid = save_grid(outdir / "grid.png", channels, ncol=_grid_columns(sample_cfg), scale=max(1, 128 // samples.shape[1]))
        print(f"wrote {len(samples)} samples to {outdir / 'samples.npz'} and {grid}")
    print(f"{sample_cfg.sampler}-{sample_cfg.num_steps}, cfg {sample_cfg.cfg_scale}: {elapsed:.1f}s (including compilation)")


def _sample_edm(config, checkpoint: str | None, outdir: pathlib.Path) -> None:
    """``config.edm.num_samples`` samples of an EDM/QAC training workdir with ``config.edm.solver`` at
    ``config.edm.nfe``; QAC codes come from ``config.qac.prior`` fitted to the training codes."""
    from jaxlab.diffusion import edm_sampling

    if not checkpoint:
        raise app.UsageError("EDM/QAC sampling needs --checkpoint=<training workdir> (configs/qac.py runs)")
    task, params = edm_sampling.load_run(config, checkpoint)
    prior = edm_sampling.make_prior(config, task, params) if "qac" in config else None
    sampler = edm_sampling.RunSampler(task, params, config.edm.solver, int(config.edm.nfe), prior)
    cfg, n = task.model_config, int(config.edm.num_samples)
    key = jax.random.key(config.seed)
    z = jax.random.normal(jax.random.fold_in(key, 0), (n, cfg.input_size, cfg.input_size, cfg.in_channels))
    codes = sampler.codes(jax.random.fold_in(key, 1), n)
    samples = np.asarray(sampler.sample(z, key, codes))
    if not np.isfinite(samples).all():
        raise FloatingPointError("the samples hold NaN/Inf; nothing written: check config.edm (solver, nfe) and the run")
    outdir.mkdir(parents=True, exist_ok=True)
    extra = {} if codes is None else {"codes": np.asarray(codes)}
    np.savez(outdir / "samples.npz", samples=samples, labels=np.zeros(n, np.int32), **extra)
    grid = save_grid(outdir / "grid.png", samples, scale=max(1, 128 // samples.shape[1]))
    print(f"wrote {n} samples ({config.edm.solver}, {config.edm.nfe} NFE) to {outdir / 'samples.npz'} and {grid}")


if __name__ == "__main__":
    cli.run(main)
