"""Golden equivalence of jaxlab.diffusion with facebookresearch/DiT's diffusion package."""

import jax
import jax.numpy as jnp
import pytest

from jaxlab.convert import from_torch
from jaxlab.diffusion import create_diffusion, sample_loop
from tests.conftest import GoldenCase, nchw_to_nhwc, nhwc_to_nchw

SCHEDULE_ARRAYS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "timestep_map",
)
SCHEDULE_CASE = GoldenCase("dit", "diffusion_schedule")


@pytest.mark.parametrize("setting", sorted(SCHEDULE_CASE.meta["constructor"]))
def test_schedule_arrays_match_reference(setting):
    diffusion = create_diffusion(**SCHEDULE_CASE.meta["constructor"][setting])
    for name in SCHEDULE_ARRAYS:
        SCHEDULE_CASE.assert_close(f"{setting}/{name}", getattr(diffusion, name))


def _model(case: GoldenCase):
    module, params = from_torch("dit", case.meta["constructor"]["DiT"], case.state_dict)

    def model_fn(x, t, y):
        return module.apply({"params": params}, x, t, y)

    def cfg_model_fn(x, t, y, cfg_scale):
        return module.apply({"params": params}, x, t, y, cfg_scale, method=module.forward_with_cfg)

    return model_fn, cfg_model_fn


def test_training_losses_match_reference():
    case = GoldenCase("dit", "diffusion_losses")
    model_fn, _ = _model(case)
    x_start, noise = nchw_to_nhwc(case["inputs/x_start"]), nchw_to_nhwc(case["inputs/noise"])
    y = case["inputs/y"]
    losses = jax.jit(
        lambda d_t, d: d.training_losses(model_fn, x_start, d_t, noise, dict(y=y)), static_argnums=1
    )
    full = losses(case["inputs/t"], create_diffusion(**case.meta["constructor"]["create_diffusion"]))
    for name in ("loss", "mse", "vb"):
        case.assert_close(name, full[name])
    respaced = losses(case["inputs/t_respace_250"], create_diffusion(**case.meta["constructor"]["create_diffusion_call2"]))
    for name in ("loss", "mse", "vb"):
        case.assert_close(f"respace_250/{name}", respaced[name])


def test_ddim_sampling_matches_reference_eta0_and_eta05():
    case = GoldenCase("dit", "diffusion_ddim_sample")
    model_fn, _ = _model(case)
    diffusion = create_diffusion(**case.meta["constructor"]["create_diffusion"])
    noise, y = nchw_to_nhwc(case["inputs/noise"]), case["inputs/y"]

    run = jax.jit(
        lambda step_noise, eta: sample_loop(
            diffusion, model_fn, noise, sampler="ddim", step_noise=step_noise, model_kwargs=dict(y=y),
            clip_denoised=False, eta=eta, return_trajectory=True,
        ),
        static_argnums=1,
    )
    sample, x_steps, _ = run(None, 0.0)
    case.assert_close("sample", nhwc_to_nchw(sample))
    case.assert_close("x_steps", nhwc_to_nchw(x_steps))

    sample, x_steps, _ = run(nchw_to_nhwc(case["inputs/eta0.5/step_noise"]), 0.5)
    case.assert_close("eta0.5/sample", nhwc_to_nchw(sample))
    case.assert_close("eta0.5/x_steps", nhwc_to_nchw(x_steps))


def test_ddpm_sampling_matches_reference_plain_and_guided_pipeline():
    case = GoldenCase("dit", "diffusion_ddpm_sample")
    model_fn, cfg_model_fn = _model(case)
    diffusion = create_diffusion(**case.meta["constructor"]["create_diffusion"])

    sample, x_steps, _ = jax.jit(
        lambda: sample_loop(
            diffusion, model_fn, nchw_to_nhwc(case["inputs/noise"]), sampler="ddpm",
            step_noise=nchw_to_nhwc(case["inputs/step_noise"]), model_kwargs=dict(y=case["inputs/y"]),
            clip_denoised=False, return_trajectory=True,
        )
    )()
    case.assert_close("sample", nhwc_to_nchw(sample))
    case.assert_close("x_steps", nhwc_to_nchw(x_steps))

    cfg_kwargs = dict(y=case["inputs/cfg/y"], cfg_scale=jnp.float32(case["inputs/cfg/cfg_scale"]))
    sample, x_steps, _ = jax.jit(
        lambda: sample_loop(
            diffusion, cfg_model_fn, nchw_to_nhwc(case["inputs/cfg/z"]), sampler="ddpm",
            step_noise=nchw_to_nhwc(case["inputs/cfg/step_noise"]), model_kwargs=cfg_kwargs,
            clip_denoised=False, return_trajectory=True,
        )
    )()
    case.assert_close("cfg/sample", nhwc_to_nchw(sample))
    case.assert_close("cfg/x_steps", nhwc_to_nchw(x_steps))
