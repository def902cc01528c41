"""Sampler behaviour beyond the golden trajectories: jit structure, variance types, clipping, noise sources."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.diffusion import ModelVarType, create_diffusion, make_sample_fn, sample_loop
from jaxlab.diffusion.pipeline import make_class_sampler, sampling_diffusion
from jaxlab.models import build_model


def test_ddim50_compiles_once_and_runs_the_loop_inside_one_scan():
    diffusion = create_diffusion("ddim50")
    traces = []

    def apply(params, x, t, y):
        traces.append(1)  # runs only while tracing
        return jnp.concatenate([x * params["w"], jnp.zeros_like(x)], axis=-1)

    sample = make_sample_fn(diffusion, apply, sampler="ddim")
    params = {"w": jnp.float32(0.5)}
    noise = jnp.ones((2, 4, 4, 3))
    key = jax.random.key(0)
    sample(params, noise, key, {"y": jnp.zeros((2,), jnp.int32)})
    sample({"w": jnp.float32(0.7)}, noise * 2, jax.random.key(1), {"y": jnp.ones((2,), jnp.int32)})
    assert len(traces) == 1  # the model is traced once for all 50 steps and both calls
    assert sample._cache_size() == 1

    jaxpr = jax.make_jaxpr(lambda p, z: sample_loop(diffusion, lambda x, t, y: apply(p, x, t, y), z,
                                                     sampler="ddim", model_kwargs={"y": jnp.zeros((2,), jnp.int32)}))(params, noise)
    scans = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"]
    assert len(scans) == 1 and scans[0].params["length"] == 50


@pytest.mark.parametrize("learn_sigma,sigma_small", [(False, False), (False, True), (True, False)])
def test_ddpm_variance_types_match_closed_form(learn_sigma, sigma_small):
    """One DDPM step equals mean + sigma_t * z with the variance the type prescribes."""
    d = create_diffusion("10", learn_sigma=learn_sigma, sigma_small=sigma_small)
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
    eps = jax.random.normal(jax.random.key(1), (2, 4, 4, 3))
    z = jax.random.normal(jax.random.key(2), (2, 4, 4, 3))
    v = jnp.full_like(eps, 0.3)
    out = jnp.concatenate([eps, v], axis=-1) if learn_sigma else eps
    k = 5
    t = jnp.full((2,), k)
    x_prev, x0 = d.p_sample(out, x, t, z, clip_denoised=False)
    abar, abar_prev, beta = d.alphas_cumprod[k], d.alphas_cumprod_prev[k], d.betas[k]
    x0_ref = (x - np.sqrt(1 - abar) * eps) / np.sqrt(abar)
    mean = (np.sqrt(abar_prev) * beta / (1 - abar)) * x0_ref + (np.sqrt(1 - beta) * (1 - abar_prev) / (1 - abar)) * x
    post_var = beta * (1 - abar_prev) / (1 - abar)
    if learn_sigma:
        frac = (0.3 + 1) / 2
        var = np.exp(frac * np.log(beta) + (1 - frac) * np.log(post_var))
    else:
        var = post_var if sigma_small else beta
    expected_type = {(False, False): ModelVarType.FIXED_LARGE, (False, True): ModelVarType.FIXED_SMALL,
                     (True, False): ModelVarType.LEARNED_RANGE}[(learn_sigma, sigma_small)]
    assert d.model_var_type == expected_type
    np.testing.assert_allclose(x0, x0_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(x_prev, mean + np.sqrt(var) * z, rtol=1e-5, atol=1e-5)


def test_clip_denoised_clamps_the_x0_prediction_and_ddim_rederives_eps():
    d = create_diffusion("ddim10", learn_sigma=False)
    x = 5.0 * jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
    eps = jax.random.normal(jax.random.key(1), (2, 4, 4, 3))
    t = jnp.full((2,), 3)
    x_prev, x0 = d.ddim_sample(eps, x, t, None, clip_denoised=True)
    assert float(jnp.abs(x0).max()) <= 1.0
    abar, abar_prev = d.alphas_cumprod[3], d.alphas_cumprod_prev[3]
    eps_clipped = (x / np.sqrt(abar) - x0) / np.sqrt(1 / abar - 1)
    np.testing.assert_allclose(x_prev, np.sqrt(abar_prev) * x0 + np.sqrt(1 - abar_prev) * eps_clipped, rtol=1e-5, atol=1e-5)


def test_predict_xstart_models_and_fixed_variance_losses():
    d = create_diffusion("", learn_sigma=False, predict_xstart=True)
    x0 = jax.random.normal(jax.random.key(0), (3, 4, 4, 2))
    noise = jax.random.normal(jax.random.key(1), (3, 4, 4, 2))
    terms = d.training_losses(lambda x, t: jnp.zeros_like(x), x0, jnp.array([0, 10, 999]), noise)
    np.testing.assert_allclose(terms["loss"], jnp.mean(x0**2, axis=(1, 2, 3)), rtol=1e-6)
    assert "vb" not in terms


def test_model_output_channels_must_fit_the_variance_type():
    d = create_diffusion("10", learn_sigma=True)
    x = jnp.zeros((1, 4, 4, 3))
    with pytest.raises(ValueError, match="learned-variance diffusion needs 6 output channels"):
        d.p_mean_variance(jnp.zeros((1, 4, 4, 3)), x, jnp.zeros((1,), jnp.int32))


def test_noise_source_is_required_and_checked():
    d = create_diffusion("10")
    model = lambda x, t: jnp.concatenate([x, x], -1)
    noise = jnp.zeros((1, 4, 4, 3))
    with pytest.raises(ValueError, match="exactly one of key"):
        sample_loop(d, model, noise, sampler="ddpm")
    with pytest.raises(ValueError, match="step_noise must have shape"):
        sample_loop(d, model, noise, sampler="ddpm", step_noise=jnp.zeros((9, 1, 4, 4, 3)))
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        sample_loop(d, model, noise, sampler="euler", key=jax.random.key(0))


def test_class_sampler_with_guidance_on_a_tiny_dit():
    """``make_class_sampler`` equals the guidance written out by hand, and the scale changes the samples."""
    module = build_model("dit", None, input_size=8, hidden_size=32, depth=1, num_heads=2, num_classes=10)
    x, t = jnp.zeros((1, 8, 8, 4)), jnp.zeros((1,), jnp.int32)
    params = module.init(jax.random.key(0), x, t, t)["params"]
    params = jax.tree_util.tree_map(lambda p: p + 0.05, params)  # leave the adaLN-Zero init
    labels = jnp.array([1, 2, 3])
    key = jax.random.key(0)

    def by_hand(diffusion, cfg_scale):
        """DDIM (eta 0: no step noise) on [cond; uncond] rows; eps channels 0-2 guided as the official code."""
        def model(x, t, y):
            cond = module.apply({"params": params}, x, t, y)
            uncond = module.apply({"params": params}, x, t, jnp.full_like(y, 10))  # the null class
            guided = uncond[..., :3] + cfg_scale * (cond[..., :3] - uncond[..., :3])
            return jnp.concatenate([guided, cond[..., 3:]], axis=-1)

        z = jax.random.normal(jax.random.split(key)[0], (3, 8, 8, 4))  # the sampler's own noise draw
        return sample_loop(diffusion, model, z, sampler="ddim", model_kwargs={"y": labels}, clip_denoised=False)

    ddim = sampling_diffusion("ddim", 4, learn_sigma=True)
    samples = {}
    for cfg_scale in (1.0, 4.0):
        samples[cfg_scale] = make_class_sampler(module, ddim, sampler="ddim", cfg_scale=cfg_scale)(params, labels, key)
        expected = by_hand(ddim, cfg_scale)
        np.testing.assert_allclose(samples[cfg_scale], expected, rtol=1e-4, atol=1e-4, err_msg=str(cfg_scale))
    scale_effect = float(jnp.abs(samples[4.0] - samples[1.0]).max())
    assert scale_effect > 1e-2, scale_effect  # far above the 1e-4 agreement above

    ddpm = sampling_diffusion("ddpm", 5, learn_sigma=True)
    sample = make_class_sampler(module, ddpm, sampler="ddpm", cfg_scale=4.0)
    a, b = sample(params, labels, key), sample(params, labels, key)
    assert a.shape == (3, 8, 8, 4) and bool(jnp.all(jnp.isfinite(a)))
    np.testing.assert_array_equal(a, b)  # deterministic given the key
    assert float(jnp.abs(sample(params, labels, jax.random.key(1)) - a).max()) > 1e-2  # the key draws the noise
    with pytest.raises(ValueError, match="cfg_scale=0.5 must be >= 1"):
        make_class_sampler(module, ddpm, cfg_scale=0.5)
