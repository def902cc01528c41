"""EDM preconditioning, training loss and ODE solvers against closed-form Gaussian cases.

For data ``x_0 ~ N(mu, s^2)`` (per dimension) the exact denoiser is
``D(x, sigma) = mu + s^2 / (s^2 + sigma^2) (x - mu)`` and the probability-flow ODE keeps
``(x - mu) / sqrt(s^2 + sigma^2)`` constant, so every sampler has a known exact answer.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.diffusion.edm import (
    EDM,
    SOLVERS,
    SamplingOptions,
    make_edm_sampler,
    nfe_of,
    solve_ode,
    steps_for_nfe,
    trajectory_curvature,
)

MU, S = 0.3, 0.5


def gaussian_denoiser(x, sigma):
    return MU + S**2 / (S**2 + sigma**2) * (x - MU)


def exact_solution(edm, x_start):
    """The exact ODE from sigma_max to sigma_min, then the solvers' shared last step D(., sigma_min)."""
    s_hi, s_lo = edm.sigma_max, edm.sigma_min
    return MU + S**2 / (np.sqrt(S**2 + s_lo**2) * np.sqrt(S**2 + s_hi**2)) * (x_start - MU)


def test_preconditioning_identities():
    edm = EDM()
    sd = edm.sigma_data
    np.testing.assert_allclose(edm.c_skip(sd), 0.5, rtol=1e-7)
    np.testing.assert_allclose(edm.c_out(sd), sd / np.sqrt(2.0), rtol=1e-6)
    np.testing.assert_allclose(edm.c_in(sd), 1.0 / (sd * np.sqrt(2.0)), rtol=1e-6)
    sigma = jnp.geomspace(0.002, 80.0, 17)
    # Unit-variance backbone input (c_in); unit effective loss weight (lambda c_out^2 = 1); unit-variance
    # training target for F (EDM App. B.6: c_out^2 = (1 - c_skip)^2 sd^2 + c_skip^2 sigma^2).
    np.testing.assert_allclose(edm.c_in(sigma) ** 2 * (sigma**2 + sd**2), 1.0, rtol=1e-5)
    np.testing.assert_allclose(edm.loss_weight(sigma) * edm.c_out(sigma) ** 2, 1.0, rtol=1e-5)
    c_skip = edm.c_skip(sigma)
    np.testing.assert_allclose((1 - c_skip) ** 2 * sd**2 + c_skip**2 * sigma**2, edm.c_out(sigma) ** 2, rtol=1e-5)
    np.testing.assert_allclose(edm.c_noise(jnp.exp(4.0)), 1.0, rtol=1e-6)
    assert float(edm.c_skip(1e-4)) == pytest.approx(1.0) and float(edm.c_out(1e-4)) < 1e-3


def test_denoise_routes_c_in_x_and_c_noise_to_the_backbone():
    edm = EDM(c_noise_scale=250.0)
    seen = {}

    def backbone(x_in, t, y):
        seen.update(x_in=x_in, t=t, y=y)
        return jnp.zeros_like(x_in)

    x = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 4, 1))
    sigma = jnp.array([0.1, 1.0, 10.0])
    out = edm.denoise(backbone, x, sigma, y=jnp.arange(3))
    np.testing.assert_allclose(seen["x_in"], edm.c_in(sigma)[:, None, None, None] * x, rtol=1e-6)
    np.testing.assert_allclose(seen["t"], 250.0 * jnp.log(sigma) / 4.0, rtol=1e-6)
    np.testing.assert_array_equal(seen["y"], jnp.arange(3))
    # F = 0 leaves D = c_skip x: the exact denoiser for N(0, sigma_data^2) data.
    np.testing.assert_allclose(out, edm.c_skip(sigma)[:, None, None, None] * x, rtol=1e-6)
    with pytest.raises(ValueError, match="learn_sigma=False"):
        edm.denoise(lambda x_in, t, y: jnp.concatenate([x_in, x_in], -1), x, sigma)


def test_loss_is_zero_for_the_exact_denoiser_and_weighted():
    edm = EDM()
    x0 = jnp.zeros((256, 2, 2, 1))  # a point mass at 0: the exact D is 0, i.e. F = -c_skip x / c_out
    key = jax.random.PRNGKey(1)

    def exact_f(x_in, t, y):
        sigma = jnp.exp(4.0 * t)[:, None, None, None]
        x = x_in / edm.c_in(sigma)
        return -edm.c_skip(sigma) * x / edm.c_out(sigma)

    np.testing.assert_allclose(edm.loss(exact_f, x0, key), 0.0, atol=1e-4)
    # F = 0 on point-mass data: D = c_skip sigma n, loss = lambda c_skip^2 sigma^2 mean(n^2).
    per_example = edm.loss(lambda x_in, t, y: jnp.zeros_like(x_in), x0, key)
    sigma = edm.sample_sigma(jax.random.split(key)[0], 256)
    expected = edm.loss_weight(sigma) * edm.c_skip(sigma) ** 2 * sigma**2
    assert per_example.shape == (256,)
    assert float(jnp.mean(per_example)) == pytest.approx(float(jnp.mean(expected)), rel=0.5)
    log_sigma = np.log(np.asarray(edm.sample_sigma(jax.random.PRNGKey(2), 20000)))
    assert log_sigma.mean() == pytest.approx(-1.2, abs=0.05) and log_sigma.std() == pytest.approx(1.2, abs=0.05)


def test_time_grid():
    edm = EDM()
    sig = np.asarray(edm.sigmas(18))
    assert sig.shape == (19,) and sig[-1] == 0.0
    np.testing.assert_allclose([sig[0], sig[-2]], [80.0, 0.002], rtol=1e-5)
    assert np.all(np.diff(sig) < 0)
    # Eq. 5: sigma^(1/rho) is linear in the step index.
    np.testing.assert_allclose(np.diff(sig[:-1] ** (1 / 7.0), 2), 0.0, atol=1e-5)


def test_nfe_budget():
    assert [steps_for_nfe("heun", n) for n in (1, 3, 5, 35)] == [1, 2, 3, 18]
    assert steps_for_nfe("euler", 6) == 6 and steps_for_nfe("dpmpp_2m", 6) == 6
    assert all(nfe_of(s, steps_for_nfe(s, 5)) == 5 for s in SOLVERS)
    with pytest.raises(ValueError, match="NFE = 2N - 1.*use 5 or 7"):
        steps_for_nfe("heun", 6)
    with pytest.raises(ValueError, match="positive int"):
        steps_for_nfe("euler", 0)
    with pytest.raises(ValueError, match="unknown solver"):
        steps_for_nfe("rk4", 5)


@pytest.mark.parametrize("solver", SOLVERS)
def test_solver_calls_the_denoiser_exactly_nfe_times(solver):
    calls = []

    def counting_denoiser(x, sigma):
        jax.debug.callback(lambda: calls.append(1))
        return gaussian_denoiser(x, sigma)

    edm = EDM()
    nfe = 7
    x = jnp.ones((2, 3)) * 80.0
    jax.jit(lambda x: solve_ode(counting_denoiser, x, edm.sigmas(steps_for_nfe(solver, nfe)), solver))(x)
    jax.effects_barrier()
    assert len(calls) == nfe


@pytest.mark.parametrize("solver,order", [("euler", 1), ("heun", 2), ("dpmpp_2m", 2)])
def test_solvers_converge_to_the_exact_ode_solution_at_their_order(solver, order):
    edm = EDM()
    with jax.enable_x64(True):
        x_start = 80.0 * jax.random.normal(jax.random.PRNGKey(0), (64, 4), jnp.float64)
        target = np.asarray(exact_solution(edm, x_start))
        solve = jax.jit(lambda x, sig: solve_ode(gaussian_denoiser, x, sig, solver))
        errors = [float(np.abs(np.asarray(solve(x_start, edm.sigmas(n, jnp.float64))) - target).max())
                  for n in (32, 64, 128)]
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    # Doubling the steps divides the global error by 2^order (measured: ~1.99 / ~4.1-4.5).
    assert 2**order * 0.85 < ratios[1] < 2**order * 1.2, (errors, ratios)
    assert 2**order * 0.8 < ratios[0] < 2**order * 1.25, (errors, ratios)
    assert errors[2] < (0.05 if order == 1 else 2e-3)
    # The shared last step D(., sigma_min) stays within 2e-5 of the true sigma = 0 endpoint.
    exact0 = MU + S / np.sqrt(S**2 + edm.sigma_max**2) * (np.asarray(x_start) - MU)
    assert np.abs(target - exact0).max() < 2e-5


def test_sampler_compiles_once_and_matches_the_exact_solution():
    edm = EDM(sigma_data=S)
    traces = []

    def apply_fn(params, x_in, t, y):
        # The exact F for N(mu, S^2) data: solve D = c_skip x + c_out F for F.
        traces.append(1)
        sigma = jnp.exp(4.0 * t)[:, None]
        x = x_in / edm.c_in(sigma)
        d = params["mu"] + S**2 / (S**2 + sigma**2) * (x - params["mu"])
        return (d - edm.c_skip(sigma) * x) / edm.c_out(sigma) + 0 * y[:, None]

    sample = make_edm_sampler(edm, apply_fn, solver="heun", nfe=35)
    z = jax.random.normal(jax.random.PRNGKey(3), (4096, 1))
    y = jnp.zeros((4096,), jnp.int32)
    out = sample({"mu": jnp.float32(MU)}, z, y)
    out2 = sample({"mu": jnp.float32(-MU)}, z + 1.0, y)  # new params and noise: no retrace
    assert len(traces) == 3  # one trace: the Heun step's two call sites (scanned) + the last step
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(out2))
    # The preconditioned backbone reproduces the exact denoiser's Heun solution on the same 18-step grid.
    direct = jax.jit(lambda x: solve_ode(gaussian_denoiser, x, edm.sigmas(18), "heun"))(80.0 * z)
    np.testing.assert_allclose(out, direct, atol=1e-4)
    # The samples follow N(mu, s^2) up to Heun-35's discretisation error (std measured 0.539 vs 0.5).
    assert float(out.mean()) == pytest.approx(MU, abs=0.03) and float(out.std()) == pytest.approx(S, rel=0.1)
    with pytest.raises(ValueError, match="odd"):
        make_edm_sampler(edm, apply_fn, solver="heun", nfe=6)


def test_trajectory_and_curvature_closed_form():
    edm = EDM()
    with jax.enable_x64(True):
        sigmas = edm.sigmas(64, jnp.float64)
        x_start = 80.0 * jax.random.normal(jax.random.PRNGKey(4), (8, 3), jnp.float64)
        x0, traj = jax.jit(lambda x: solve_ode(gaussian_denoiser, x, sigmas, "heun", return_trajectory=True))(x_start)
        assert traj.shape == (65, 8, 3)
        np.testing.assert_array_equal(traj[0], x_start)
        np.testing.assert_array_equal(traj[-1], x0)
        # Every iterate lies on the exact trajectory (x - mu) / sqrt(s^2 + sigma^2) = const (to Heun-64 error).
        exact = MU + np.sqrt(S**2 + np.asarray(sigmas)[:-1, None, None] ** 2) / np.sqrt(S**2 + 80.0**2) * (
            np.asarray(x_start) - MU)
        np.testing.assert_allclose(traj[:-1], exact, atol=1e-2)
        # Point-mass data (D = 0): straight lines x = sigma / sigma_max x_T, curvature 0.
        _, straight = solve_ode(lambda x, s: jnp.zeros_like(x), x_start, sigmas, "euler", return_trajectory=True)
        zero = trajectory_curvature(lambda x, s: jnp.zeros_like(x), straight, sigmas)
        np.testing.assert_allclose(zero, 0.0, atol=1e-20)
        # Gaussian data with mu = 0: v(sigma) / |x_T| direction is sigma / sqrt(s^2 + sigma^2) / sqrt(s^2 + smax^2),
        # u the same with (sqrt(s^2 + smax^2) - s) / smax: the curvature is the same for every sample.
        denoise0 = lambda x, s: S**2 / (S**2 + s**2) * x  # noqa: E731
        _, curved = solve_ode(denoise0, x_start, sigmas, "heun", return_trajectory=True)
        curvature = np.asarray(trajectory_curvature(denoise0, curved, sigmas))
        sig = np.asarray(sigmas)[:-1]
        c = (np.sqrt(S**2 + 80.0**2) - S) / 80.0
        expected = np.mean((sig / np.sqrt(S**2 + sig**2) - c) ** 2) / c**2
        np.testing.assert_allclose(curvature, expected, rtol=5e-3)  # Heun-64 trajectory error: 1.3e-3
        assert expected > 0.05
    with pytest.raises(ValueError, match="pass the grid"):
        trajectory_curvature(gaussian_denoiser, traj, edm.sigmas(10))


def test_heun_at_3_nfe_blows_up_on_edms_grid_as_algorithm_1_predicts():
    """Heun at NFE 3 (N = 2, grid 80 -> 0.002 -> 0) is far off by construction, not by a bug.

    EDM's Algorithm 1 (and NVlabs/edm ``edm_sampler``) averages the slope at sigma = 80 with the
    slope at sigma = 0.002, where a near-denoised predictor has almost zero velocity: the step moves
    only about half way. Closed form for the Gaussian case, checked against ``solve_ode``.
    """
    edm = EDM()
    with jax.enable_x64(True):
        x = 80.0 * jax.random.normal(jax.random.PRNGKey(5), (256,), jnp.float64)
        got = np.asarray(solve_ode(gaussian_denoiser, x, edm.sigmas(2, jnp.float64), "heun"))
    x, s0, s1 = np.asarray(x), edm.sigma_max, edm.sigma_min
    d0 = (x - gaussian_denoiser(x, s0)) / s0
    x_euler = x + (s1 - s0) * d0
    d1 = (x_euler - gaussian_denoiser(x_euler, s1)) / s1
    x1 = x + (s1 - s0) * 0.5 * (d0 + d1)
    np.testing.assert_allclose(got, gaussian_denoiser(x1, s1), rtol=1e-10)
    assert 30.0 < np.std(got) < 50.0  # about sigma_max / 2 = 40, against the data's s = 0.5


def test_few_nfe_grid_switches():
    """SamplingOptions: the logsnr schedule, the grid overrides and the grid without the final 0."""
    edm = EDM()
    log_grid = np.asarray(SamplingOptions(schedule="logsnr", sigma_min=0.1).sigmas(edm, 4))
    assert log_grid.shape == (5,) and log_grid[-1] == 0.0
    np.testing.assert_allclose(log_grid[[0, -2]], [80.0, 0.1], rtol=1e-5)
    np.testing.assert_allclose(np.diff(np.log(log_grid[:-1]), 2), 0.0, atol=1e-5)  # uniform in ln sigma
    open_grid = np.asarray(SamplingOptions(final_denoise=False, rho=3.0, sigma_max=20.0).sigmas(edm, 4))
    assert open_grid.shape == (5,) and np.all(open_grid > 0)
    np.testing.assert_allclose(open_grid[[0, -1]], [20.0, 0.002], rtol=1e-5)
    np.testing.assert_allclose(np.diff(open_grid ** (1 / 3.0), 2), 0.0, atol=1e-5)
    with pytest.raises(ValueError, match="unknown schedule"):
        SamplingOptions(schedule="cosine")
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        SamplingOptions(sigma_min=100.0).grid_edm(edm)


@pytest.mark.parametrize("solver,nfe,final_denoise,afs,steps", [
    ("heun", 3, True, False, 2), ("heun", 4, False, False, 2), ("heun", 3, False, True, 2),
    ("heun", 4, True, True, 3), ("euler", 3, True, True, 4), ("dpmpp_2m", 3, False, True, 4),
])
def test_switches_meet_the_nfe_budget_exactly(solver, nfe, final_denoise, afs, steps):
    options = SamplingOptions(final_denoise=final_denoise, afs=afs)
    assert steps_for_nfe(solver, nfe, options) == steps and nfe_of(solver, steps, options) == nfe
    calls = []

    def counting_denoiser(x, sigma):
        jax.debug.callback(lambda: calls.append(1))
        return gaussian_denoiser(x, sigma)

    sigmas = options.sigmas(EDM(), steps)
    out = jax.jit(lambda x: solve_ode(counting_denoiser, x, sigmas, solver, final_denoise=final_denoise,
                                      afs=afs))(jnp.ones((2, 3)) * 80.0)
    jax.effects_barrier()
    assert len(calls) == nfe and np.isfinite(np.asarray(out)).all()


def test_nfe_budget_errors_name_the_switches():
    with pytest.raises(ValueError, match="final_denoise=True, afs=False uses NFE = 2N - 1.*toggle final_denoise"):
        steps_for_nfe("heun", 6)
    with pytest.raises(ValueError, match="NFE = 2N, which is even"):
        steps_for_nfe("heun", 5, SamplingOptions(final_denoise=False))
    assert steps_for_nfe("heun", 5, SamplingOptions(final_denoise=False, afs=True)) == 3
    with pytest.raises(ValueError, match="afs needs at least one solver step"):
        solve_ode(gaussian_denoiser, jnp.ones(3), EDM().sigmas(1), "euler", afs=True)


def test_afs_is_exact_for_zero_mean_gaussian_data_and_only_there():
    """AFS replaces the first denoiser call by the zero-mean N(0, sigma_data^2) denoiser: on such data
    the result equals the solve without AFS (one NFE more); on data with a mean it differs."""
    sd = 0.5
    x = 80.0 * jax.random.normal(jax.random.PRNGKey(3), (64,), jnp.float32)
    centred = lambda y, sigma: sd**2 / (sd**2 + sigma**2) * y  # noqa: E731
    for solver in SOLVERS:
        options = SamplingOptions(afs=True, final_denoise=False)
        sigmas = options.sigmas(EDM(sigma_data=sd), 3)
        with_afs = solve_ode(centred, x, sigmas, solver, afs=True, final_denoise=False, sigma_data=sd)
        without = solve_ode(centred, x, sigmas, solver, afs=False, final_denoise=False)
        np.testing.assert_allclose(with_afs, without, rtol=1e-5, atol=1e-5)
        shifted = solve_ode(gaussian_denoiser, x, sigmas, solver, afs=True, final_denoise=False, sigma_data=sd)
        exact_start = solve_ode(gaussian_denoiser, x, sigmas, solver, afs=False, final_denoise=False)
        assert np.abs(np.asarray(shifted) - np.asarray(exact_start)).max() > 1e-3
        _, traj = solve_ode(centred, x, sigmas, solver, afs=True, final_denoise=False, sigma_data=sd,
                            return_trajectory=True)
        assert traj.shape == (4, 64)


def test_few_nfe_switches_remove_heuns_3_nfe_blow_up():
    """EDM's grid at 3 NFE keeps ~half the sigma_max noise (sample std ~40 against s = 0.5, test above).
    A larger sigma_min (the trapezoid ends where the slope is informative) or AFS without the final
    denoise (two Heun steps, the first one's predictor free) bring it down by more than 10x."""
    x = 80.0 * jax.random.normal(jax.random.PRNGKey(5), (4096,), jnp.float32)
    edm = EDM()
    stds = {}
    for name, options in [("edm", SamplingOptions()), ("sigma_min", SamplingOptions(sigma_min=1.0)),
                          ("afs", SamplingOptions(afs=True, final_denoise=False))]:
        sigmas = options.sigmas(edm, steps_for_nfe("heun", 3, options))
        out = solve_ode(gaussian_denoiser, x, sigmas, "heun", afs=options.afs, final_denoise=options.final_denoise)
        stds[name] = float(np.std(out))
    assert stds["edm"] > 30.0 and stds["sigma_min"] < 2.5 and stds["afs"] < 2.5, stds
