"""QAC: the condition encoder and its code, the code injection, joint training, the code priors,
sampling a run and the bad-input errors (``jaxlab/diffusion/qac*.py``, ``edm_sampling.py``)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs.qac import get_config
from jaxlab.diffusion import edm_sampling
from jaxlab.diffusion.edm import SamplingOptions
from jaxlab.diffusion.qac import CodeSpec, ConditionEncoder, QACModel, check_params
from jaxlab.diffusion.qac_prior import EmpiricalPrior, fit_prior
from jaxlab.diffusion.qac_task import QACTask, distinct_fraction
from jaxlab.models.common import count_params
from jaxlab.models.dit import DiT, DiTConfig
from tests.diffusion.edm_configs import tiny_edm_config


@pytest.fixture
def strict_rank():
    """Implicit rank promotion is an error in the encoder/prior tests (DiT itself relies on it)."""
    with jax.numpy_rank_promotion("raise"):
        yield


TINY_DIT = DiTConfig(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=1, num_heads=2, num_classes=1,
                     class_dropout_prob=0.0, learn_sigma=False)


def small_config(**qac):
    config = tiny_edm_config("digits-qac")
    config.qac.update(encoder_width=4, prior_steps=50, **qac)
    return config


def _images(n=8, seed=0):
    return jax.random.uniform(jax.random.PRNGKey(seed), (n, 8, 8, 1), minval=-1.0, maxval=1.0)


@pytest.mark.usefixtures("strict_rank")
@pytest.mark.parametrize("spec", [CodeSpec("binary", tokens=3, bits=4), CodeSpec("fsq", tokens=2, fsq_levels=(5, 4))])
def test_encoder_code_shapes_values_and_index_roundtrip(spec):
    enc = ConditionEncoder(spec, width=4)
    x = _images()
    params = nn.unbox(enc.init(jax.random.PRNGKey(0), x)["params"])
    code = spec.quantize(enc.apply({"params": params}, x))
    assert code.shape == (8, *spec.shape)
    idx = spec.indices(code)
    assert idx.shape == (8, spec.tokens) and int(idx.min()) >= 0 and int(idx.max()) < spec.vocab_size
    np.testing.assert_array_equal(spec.from_indices(idx), code)  # the codes are exactly on the grid
    if spec.quantizer == "binary":
        assert set(np.unique(np.asarray(code)).tolist()) <= {-1.0, 1.0}


@pytest.mark.usefixtures("strict_rank")
def test_straight_through_gradient_reaches_every_encoder_parameter():
    spec = CodeSpec("binary", tokens=2, bits=3)
    enc = ConditionEncoder(spec, width=4)
    x = _images()
    params = nn.unbox(enc.init(jax.random.PRNGKey(1), x)["params"])
    w = jax.random.normal(jax.random.PRNGKey(2), (8, *spec.shape))

    def through_code(p):
        return jnp.sum(w * spec.quantize(enc.apply({"params": p}, x)))

    def through_z(p):
        return jnp.sum(w * enc.apply({"params": p}, x))

    g_code, g_z = jax.grad(through_code)(params), jax.grad(through_z)(params)
    # Binary's straight-through gradient is the identity: the same as without the quantiser.
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), g_code, g_z)
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree_util.tree_leaves(g_code))


def test_digits_encoder_is_about_one_percent_of_the_denoiser():
    config = get_config("digits-qac")
    task = QACTask.from_config(config)
    batch = {"image": jnp.zeros((2, 16, 16, 1)), "label": jnp.zeros((2,), jnp.int32)}
    shapes = jax.eval_shape(lambda: nn.unbox(task.init_params(jax.random.PRNGKey(0), batch)))
    ratio = count_params(shapes["encoder"]) / count_params(shapes["denoiser"]["backbone"])
    assert 0.005 < ratio < 0.02, ratio


@pytest.mark.parametrize("injection", ["embedding", "input"])
def test_injection_changes_the_output_only_through_the_code(injection):
    spec = CodeSpec("binary", tokens=2, bits=3)
    model = QACModel.build("dit", TINY_DIT, spec, encoder_width=4, injection=injection)
    x, y = _images(4), jnp.zeros((4,), jnp.int32)
    t = jnp.linspace(-1.0, 1.0, 4)
    params = nn.unbox(model.init(jax.random.PRNGKey(0), x, y))
    # Perturb every weight: adaLN-Zero's zero-initialised gates would hide the conditioning.
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(3), len(leaves))
    params = treedef.unflatten([v + 0.05 * jax.random.normal(k, v.shape) for v, k in zip(leaves, keys)])
    raw = jax.jit(model.raw)
    idx = jnp.array([[0, 1], [2, 3], [4, 5], [6, 7]])
    code_a, code_b = spec.from_indices(idx), spec.from_indices(idx[::-1])
    out_a, out_a2, out_b = raw(params, x, t, y, code_a), raw(params, x, t, y, code_a), raw(params, x, t, y, code_b)
    np.testing.assert_array_equal(out_a, out_a2)
    assert float(jnp.abs(out_a - out_b).max()) > 1e-4
    # With the code's projection at zero the QAC denoiser is exactly the bare backbone.
    zeroed = jax.tree_util.tree_map(jnp.zeros_like, params["denoiser"]["code_embed"])
    params0 = {**params, "denoiser": {**params["denoiser"], "code_embed": zeroed}}
    ref = jax.jit(DiT(TINY_DIT).apply)({"params": params0["denoiser"]["backbone"]}, x, t, y)
    assert float(jnp.abs(ref).max()) > 1e-3
    np.testing.assert_allclose(raw(params0, x, t, y, code_a), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(raw(params0, x, t, y, code_b), ref, rtol=1e-5, atol=1e-6)


def test_joint_loss_is_finite_and_decreases_on_a_tiny_run():
    import optax

    task = QACTask.from_config(small_config())
    x = jnp.asarray(np.load("jaxlab/data/digits.npz")["images"][:16, :, :, None] / 8.0 - 1.0, jnp.float32)
    batch = {"image": x, "label": jnp.zeros((16,), jnp.int32)}
    params = nn.unbox(task.init_params(jax.random.PRNGKey(0), batch))
    opt = optax.adam(3e-3)

    @jax.jit
    def run(params):
        def step(carry, key):
            p, s = carry
            (loss, metrics), g = jax.value_and_grad(task.loss_fn, has_aux=True)(p, batch, key)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), (loss, metrics["code_distinct"])

        keys = jax.random.split(jax.random.PRNGKey(1), 40)
        (p, _), (losses, distinct) = jax.lax.scan(step, (params, opt.init(params)), keys)
        return p, losses, distinct

    new_params, losses, distinct = run(params)
    losses = np.asarray(losses)
    assert np.all(np.isfinite(losses))
    assert losses[-10:].mean() < 0.85 * losses[:10].mean(), losses
    assert np.all((np.asarray(distinct) > 0) & (np.asarray(distinct) <= 1))
    moved = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()), new_params["encoder"], params["encoder"])
    assert all(v > 0 for v in jax.tree_util.tree_leaves(moved))  # the encoder is trained jointly


def test_distinct_fraction():
    idx = jnp.array([[0, 1], [0, 1], [2, 1], [0, 2]])
    assert float(distinct_fraction(idx)) == 0.75


@pytest.mark.usefixtures("strict_rank")
def test_empirical_prior_reproduces_the_code_distribution():
    rng = np.random.default_rng(0)
    data = rng.integers(0, 4, (50, 2))
    prior = EmpiricalPrior.fit(data, 4)
    draws = np.asarray(prior.sample(jax.random.PRNGKey(0), 20000))
    rows = {tuple(r) for r in data.tolist()}
    assert {tuple(r) for r in draws.tolist()} <= rows  # only stored codes
    flat = lambda a: a[:, 0] * 4 + a[:, 1]  # noqa: E731
    p_data = np.bincount(flat(data), minlength=16) / len(data)
    p_draw = np.bincount(flat(draws), minlength=16) / len(draws)
    assert 0.5 * np.abs(p_data - p_draw).sum() < 0.03


@pytest.mark.usefixtures("strict_rank")
def test_ar_prior_learns_a_dependent_code_distribution():
    # Token 0 uniform over {0, 1, 2, 3}; token 1 = token 0 + 1 (mod 4) with prob 0.8, else token 0.
    rng = np.random.default_rng(1)
    t0 = rng.integers(0, 4, 4000)
    t1 = np.where(rng.random(4000) < 0.8, (t0 + 1) % 4, t0)
    data = np.stack([t0, t1], 1)
    prior = fit_prior("ar", data, 4, hidden=16, steps=300)
    draws = np.asarray(prior.sample(jax.random.PRNGKey(0), 8000))
    assert draws.shape == (8000, 2) and draws.min() >= 0 and draws.max() < 4
    p_data = np.bincount(data[:, 0] * 4 + data[:, 1], minlength=16) / len(data)
    p_draw = np.bincount(draws[:, 0] * 4 + draws[:, 1], minlength=16) / len(draws)
    assert 0.5 * np.abs(p_data - p_draw).sum() < 0.04, (p_data, p_draw)
    # The true entropy is ln 4 + H(0.8) = 1.886 nats; an independent model would need ln 16 = 2.77.
    assert prior.final_nll < 1.95
    np.testing.assert_allclose(np.exp(np.asarray(prior.log_prob(jnp.asarray(
        [[i, j] for i in range(4) for j in range(4)])))).sum(), 1.0, rtol=1e-5)


def test_sampling_a_trained_qac_run_through_the_shared_loop(tmp_path):
    from jaxlab.train.loop import train

    config = small_config()
    result = train(config, str(tmp_path))
    assert result.step == 3 and np.isfinite(result.last_metrics["loss"])
    saved = ml_collections.ConfigDict(config.to_dict())
    task, params = edm_sampling.load_run(saved, str(tmp_path))
    sampler = edm_sampling.RunSampler(task, params, "dpmpp_2m", 3, edm_sampling.make_prior(saved, task, params))
    z = jax.random.normal(jax.random.PRNGKey(0), (5, 8, 8, 1))
    out = sampler.sample(z, jax.random.PRNGKey(1))
    assert out.shape == (5, 8, 8, 1) and bool(jnp.all(jnp.isfinite(out)))
    with pytest.raises(ValueError, match=r"codes must be \[N, 2, 4\]"):
        sampler.sample(z, jax.random.PRNGKey(1), codes=jnp.ones((5, 3, 4)))
    with pytest.raises(ValueError, match="5 noises"):
        sampler.sample(z, jax.random.PRNGKey(1), codes=jnp.ones((4, 2, 4)))
    # The few-NFE switches reach the sampler: Heun at 3 NFE with AFS and no final denoise is another solve.
    codes = sampler.codes(jax.random.PRNGKey(1), 5)
    edm_heun = edm_sampling.RunSampler(task, params, "heun", 3, sampler.prior).sample(z, None, codes)
    afs_heun = edm_sampling.RunSampler(task, params, "heun", 3, sampler.prior,
                                       SamplingOptions(afs=True, final_denoise=False)).sample(z, None, codes)
    assert bool(jnp.all(jnp.isfinite(afs_heun))) and float(jnp.abs(afs_heun - edm_heun).max()) > 1e-3
    # SDEdit with the source's own code: at a tiny start noise the edit keeps the image.
    x_src = _images(5)
    own = task.model.encode(params, x_src)
    kept = edm_sampling.sdedit(task, params, x_src, jax.random.PRNGKey(2), sigma_start=0.01, nfe=2, codes=own)
    np.testing.assert_allclose(kept, jnp.clip(x_src, -1, 1), atol=0.05)
    with pytest.raises(ValueError, match="edits with codes"):
        edm_sampling.sdedit(task, params, x_src, jax.random.PRNGKey(2), sigma_start=1.0)
    with pytest.raises(ValueError, match="sigma_start"):
        edm_sampling.sdedit(task, params, x_src, jax.random.PRNGKey(2), sigma_start=100.0, codes=own)
    # A baseline (no encoder) checkpoint sampled with a QAC config, and the other way round.
    with pytest.raises(ValueError, match="no QAC encoder"):
        check_params(params["denoiser"]["backbone"])
    baseline = ml_collections.ConfigDict(get_config("digits-baseline").to_dict())
    baseline.model.update(saved.model.to_dict())
    with pytest.raises(ValueError, match="holds a QAC run"):
        edm_sampling.load_run(baseline, str(tmp_path))


@pytest.mark.slow  # the shared loop's exact resume is tested by default in tests/train/test_resume.py
def test_joint_training_resumes_bit_identically(tmp_path):
    """Stopping a QAC run and resuming it gives the same encoder, denoiser, EMA, optimizer state and
    per-step losses/code statistics as training straight through."""
    import json

    from jaxlab.train.loop import train
    from tests.train.helpers import assert_trees_equal

    config = small_config()
    config.training.num_steps = 4
    config.checkpoint.every_steps = 2
    straight = train(config, str(tmp_path / "straight"))
    first = train(config, str(tmp_path / "resumed"), stop_at_step=2)
    assert first.stopped and first.step == 2
    second = train(config, str(tmp_path / "resumed"))
    assert straight.step == second.step == 4
    assert_trees_equal(straight.state, second.state)
    assert "encoder" in straight.state.params

    def rows(name):
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return [(r["step"], r["loss"], r["code_distinct"]) for r in map(json.loads, lines) if "loss" in r]

    # Steps 1-2 are not re-run after the resume: four rows each, equal bit for bit.
    assert rows("straight") == rows("resumed") and [r[0] for r in rows("straight")] == [1, 2, 3, 4]


def test_bad_qac_configs_fail_before_training():
    config = small_config()
    config.qac.foo = 1
    with pytest.raises(ValueError, match="unknown key"):
        QACTask.from_config(config)
    with pytest.raises(ValueError, match="prior"):
        QACTask.from_config(small_config(prior="uniform"))
    with pytest.raises(ValueError, match="quantizer"):
        QACTask.from_config(small_config(quantizer="vq"))
    with pytest.raises(ValueError, match="injection"):
        QACTask.from_config(small_config(injection="concat"))
    with pytest.raises(ValueError, match="fsq_levels"):
        QACTask.from_config(small_config(quantizer="fsq", fsq_levels=(1, 3)))
    with pytest.raises(ValueError, match="injection='input'"):
        QACModel.build("udit", TINY_DIT, CodeSpec(), injection="embedding")
    config = small_config()
    config.edm.use_labels = True
    with pytest.raises(ValueError, match="use_labels=False"):
        QACTask.from_config(config)
    with pytest.raises(ValueError, match=r"in \[0, 4\)"):
        EmpiricalPrior.fit(np.array([[0, 4]]), 4)
    with pytest.raises(ValueError, match="prior"):
        fit_prior("uniform", np.zeros((2, 2), np.int32), 4)
    with pytest.raises(ValueError, match="code indices must be"):
        CodeSpec(tokens=2).from_indices(jnp.zeros((3, 5), jnp.int32))


@pytest.mark.parametrize("variant", ["cifar10-qac", pytest.param("ffhq64-baseline", marks=pytest.mark.slow)])
def test_paper_presets_instantiate_and_lower(variant):
    config = get_config(variant)
    from jaxlab.train.task import task_from_config

    task = task_from_config(config)
    size = config.model.input_size
    batch = {"image": jnp.zeros((2, size, size, 3)), "label": jnp.zeros((2,), jnp.int32)}
    shapes = jax.eval_shape(lambda: nn.unbox(task.init_params(jax.random.PRNGKey(0), batch)))
    if "qac" in config:
        ratio = count_params(shapes["encoder"]) / count_params(shapes["denoiser"]["backbone"])
        assert 0.005 < ratio < 0.015, ratio  # the paper's "~1%"
        assert 50e6 < count_params(shapes["denoiser"]["backbone"]) < 65e6  # EDM's DDPM++ is ~56M
    else:
        assert 50e6 < count_params(shapes) < 65e6
    lowered = jax.jit(task.loss_fn).lower(shapes, batch, jax.random.PRNGKey(0))
    assert "dot_general" in lowered.as_text()
