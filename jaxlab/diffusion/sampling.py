"""Jitted DDPM / DDIM sampling loops: the step loop is a ``lax.scan``, never a Python loop.

Noise: the reference draws fresh Gaussian noise at every step. Here it comes from a PRNG
``key`` (one ``fold_in`` per step), or is passed explicitly as ``step_noise [K, *x.shape]``
(how the golden trajectories are reproduced).
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxlab.diffusion.gaussian import GaussianDiffusion, ModelFn

SAMPLERS = ("ddpm", "ddim")


def sample_loop(
    diffusion: GaussianDiffusion,
    model_fn: ModelFn,
    noise: jax.Array,
    *,
    sampler: str = "ddim",
    key: jax.Array | None = None,
    step_noise: jax.Array | None = None,
    model_kwargs: dict | None = None,
    clip_denoised: bool = True,
    eta: float = 0.0,
    return_trajectory: bool = False,
):
    """Runs the reverse chain from ``x_T = noise`` down to index 0.

    Args:
      diffusion: the (respaced) chain; K = ``diffusion.num_timesteps`` model calls.
      model_fn: ``model_fn(x, t, **model_kwargs)`` with original timesteps ``t [N]``.
      noise: ``[N, H, W, C]`` starting point.
      sampler: ``"ddpm"`` (ancestral) or ``"ddim"``.
      key / step_noise: per-step noise source (exactly one of them, unless DDIM with ``eta == 0``).
      clip_denoised: clamp x_0 predictions to [-1, 1] (the reference's default is True; DiT's
        ``sample.py`` passes False).
      eta: DDIM stochasticity (0 = deterministic).
      return_trajectory: also return ``(x_steps [K, ...], pred_xstart_steps [K, ...])``, where
        step ``k`` is the sample after the model call at respaced index ``K - 1 - k``.

    Returns:
      The final sample ``[N, H, W, C]``, or ``(sample, x_steps, pred_xstart_steps)``.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; allowed values: {list(SAMPLERS)}")
    needs_noise = sampler == "ddpm" or not (isinstance(eta, (int, float)) and eta == 0)
    if needs_noise and (key is None) == (step_noise is None):
        raise ValueError("pass exactly one of key= (a PRNG key) or step_noise= (explicit per-step noise)")
    num_steps = diffusion.num_timesteps
    if step_noise is not None and step_noise.shape != (num_steps,) + noise.shape:
        raise ValueError(f"step_noise must have shape {(num_steps,) + noise.shape}, got {step_noise.shape}")

    def step(x, inputs):
        k, index, explicit_noise = inputs
        t = jnp.full((x.shape[0],), index, dtype=jnp.int32)
        if not needs_noise:
            z = None
        elif explicit_noise is not None:
            z = explicit_noise
        else:
            z = jax.random.normal(jax.random.fold_in(key, k), x.shape, x.dtype)
        model_output = diffusion.call_model(model_fn, x, t, model_kwargs)
        if sampler == "ddpm":
            x, pred_xstart = diffusion.p_sample(model_output, x, t, z, clip_denoised)
        else:
            x, pred_xstart = diffusion.ddim_sample(model_output, x, t, z, clip_denoised, eta)
        return x, ((x, pred_xstart) if return_trajectory else None)

    indices = jnp.arange(num_steps - 1, -1, -1, dtype=jnp.int32)
    xs = (jnp.arange(num_steps), indices, step_noise)
    sample, trajectory = jax.lax.scan(step, noise, xs)
    if return_trajectory:
        return sample, trajectory[0], trajectory[1]
    return sample


def make_sample_fn(
    diffusion: GaussianDiffusion,
    apply_fn: Callable[..., jax.Array],
    *,
    sampler: str = "ddim",
    clip_denoised: bool = False,
    eta: float = 0.0,
) -> Callable[..., jax.Array]:
    """A jitted ``sample(params, noise, key, model_kwargs) -> x_0`` that compiles once per shape.

    ``apply_fn(params, x, t, **model_kwargs)`` runs the model, e.g.
    ``lambda p, x, t, y: module.apply({"params": p}, x, t, y)``. The parameters are an argument
    of the compiled function (not baked-in constants), so one compilation serves any weights.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; allowed values: {list(SAMPLERS)}")

    @jax.jit
    def sample(params, noise, key, model_kwargs):
        model_fn = functools.partial(apply_fn, params)
        return sample_loop(
            diffusion,
            model_fn,
            noise,
            sampler=sampler,
            key=key,
            model_kwargs=model_kwargs,
            clip_denoised=clip_denoised,
            eta=eta,
        )

    return sample
