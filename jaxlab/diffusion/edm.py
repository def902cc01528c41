"""EDM (Karras, Aittala, Aila, Laine 2022, "Elucidating the Design Space of Diffusion-Based
Generative Models"): preconditioning, training noise levels and loss weight, the rho time
grid, and deterministic probability-flow ODE solvers at a given NFE budget.

Conventions (EDM's "Ours" column, Table 1): ``sigma(t) = t`` and ``s(t) = 1``, so a noisy image
is ``x = x_0 + sigma * n`` and the probability-flow ODE is ``dx/dsigma = (x - D(x, sigma)) / sigma``.
Images are NHWC in the data range (e.g. [-1, 1], ``sigma_data = 0.5``).

Preconditioning wraps a raw backbone ``F`` (any jaxlab model with DiT's ``module(x, t, y)``):
``D(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma), y)``. The
backbone's timestep input ``t [N]`` receives ``c_noise = c_noise_scale * ln(sigma) / 4``; EDM's
value is ``c_noise_scale = 1`` (DDPM++/NCSN++ feed ``ln(sigma)/4`` to the same kind of
sinusoidal embedding that DiT's ``TimestepEmbedder`` uses, so it works unchanged). The scale is a
switch for backbones whose embedding expects DDPM-like 0..999 timesteps (e.g. 250 spreads
``ln(sigma)/4`` over about [-390, 270]); it is not from the paper. A backbone built with a
learned variance (``learn_sigma``, 2C output channels) is rejected: EDM's ``F`` has C channels.

Solvers (deterministic; all a ``lax.scan`` over the grid inside the caller's ``jit``):
- ``euler``: N steps, NFE = N.
- ``heun``: EDM Algorithm 1 (2nd order, Euler on the last step to sigma = 0): NFE = 2N - 1, so
  the budget must be odd.
- ``dpmpp_2m``: DPM-Solver++(2M) (Lu et al. 2022) in data prediction with ``lambda = -ln sigma``;
  the first step is first order (no history) and the last step to sigma = 0 returns the
  denoised estimate (``lower_order_final``, as k-diffusion's ``sample_dpmpp_2m``): NFE = N.

Few-NFE switches (``SamplingOptions``; defaults = EDM). None of them is QAC's (its solver and grid
are unknown); they are the knobs a user tries when 3-7 NFE are all there is:
- the grid: ``sigma_min`` / ``sigma_max`` / ``rho`` overrides of the EDM's, and ``schedule``:
  ``"polynomial"`` (EDM Eq. 5, uniform in ``sigma^(1/rho)``) or ``"logsnr"`` (uniform in
  ``ln sigma``, DPM-Solver's choice for small images; the ``rho -> inf`` limit of Eq. 5).
- ``final_denoise`` (EDM's last-step rule, default True): the grid ends ``sigma_min -> 0`` and that
  last step is the denoised estimate ``D(x, sigma_min)`` (one NFE, Euler for every solver). False:
  every step is a solver step on ``sigma_max .. sigma_min`` and ``x`` at ``sigma_min`` is returned
  (no extra NFE; Heun then costs 2N, an even budget).
- ``afs`` (analytical first step, Zhou et al. 2024, "Fast ODE-based sampling for diffusion models
  in around 5 steps"; their diff-solvers code takes the first slope as ``x / sqrt(1 + sigma^2)``):
  the first step's denoiser call is replaced by the exact denoiser of zero-mean Gaussian data of
  std ``sigma_data``, ``D(x, sigma) = sigma_data^2 / (sigma^2 + sigma_data^2) x`` (at sigma_max = 80
  the slope is ``x / 80.0``, the same to 4 digits), saving one NFE. Heun with ``afs`` and without
  ``final_denoise`` costs 2N - 1 (odd budgets; diff-solvers' Heun with AFS); with both, 2N - 2.

``steps_for_nfe(solver, nfe, options)`` checks that a budget is met exactly and names the switch
that meets it otherwise.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

SOLVERS = ("euler", "heun", "dpmpp_2m")
SCHEDULES = ("polynomial", "logsnr")

# D(x [N, ...], sigma scalar) -> denoised x_0 estimate [N, ...].
DenoiseFn = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class EDM:
    """EDM hyper-parameters (the paper's defaults) and the pure functions built on them.

    Attributes:
      sigma_data: standard deviation of the data (0.5 for images in [-1, 1]).
      sigma_min / sigma_max / rho: the sampling time grid (Eq. 5).
      p_mean / p_std: training ``ln(sigma) ~ N(p_mean, p_std^2)``.
      c_noise_scale: multiplier on EDM's ``c_noise = ln(sigma) / 4`` fed to the backbone's timestep
        input (1 = EDM; see the module docstring).
    """

    sigma_data: float = 0.5
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    p_mean: float = -1.2
    p_std: float = 1.2
    c_noise_scale: float = 1.0

    def __post_init__(self):
        for name in ("sigma_data", "sigma_min", "sigma_max", "rho", "p_std", "c_noise_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"EDM {name}={getattr(self, name)} must be > 0")
        if not self.sigma_min < self.sigma_max:
            raise ValueError(f"EDM needs sigma_min < sigma_max, got {self.sigma_min} and {self.sigma_max}")

    # ------------------------------------------------------------ preconditioning (Table 1)

    def c_skip(self, sigma):
        return self.sigma_data**2 / (sigma**2 + self.sigma_data**2)

    def c_out(self, sigma):
        return sigma * self.sigma_data / jnp.sqrt(sigma**2 + self.sigma_data**2)

    def c_in(self, sigma):
        return 1.0 / jnp.sqrt(sigma**2 + self.sigma_data**2)

    def c_noise(self, sigma):
        return self.c_noise_scale * jnp.log(sigma) / 4.0

    def loss_weight(self, sigma):
        """``lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 = 1 / c_out^2``."""
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2

    def denoise(self, raw_fn: Callable[..., jax.Array], x: jax.Array, sigma, y=None) -> jax.Array:
        """The preconditioned denoiser ``D(x, sigma)``.

        Args:
          raw_fn: the backbone, ``raw_fn(x_in [N, H, W, C], t [N], y) -> [N, H, W, C]``.
          x: noisy images ``[N, H, W, C]``.
          sigma: noise level, a scalar or ``[N]``.
          y: passed through to the backbone (class labels, codes, or None).

        Returns:
          ``[N, H, W, C]`` in x's dtype; the backbone runs on float32 ``c_in x``.
        """
        sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), (x.shape[0],))
        sigma_b = sigma.reshape((-1,) + (1,) * (x.ndim - 1))
        xf = x.astype(jnp.float32)
        f = raw_fn(self.c_in(sigma_b) * xf, self.c_noise(sigma), y)
        if f.shape != x.shape:
            raise ValueError(
                f"EDM backbone output has shape {f.shape}, expected {x.shape}: build the backbone with "
                f"learn_sigma=False (EDM's F predicts one value per input channel)"
            )
        return (self.c_skip(sigma_b) * xf + self.c_out(sigma_b) * f.astype(jnp.float32)).astype(x.dtype)

    # ------------------------------------------------------------ training

    def sample_sigma(self, key: jax.Array, n: int) -> jax.Array:
        """``[n]`` training noise levels, ``ln(sigma) ~ N(p_mean, p_std^2)``, float32."""
        return jnp.exp(self.p_mean + self.p_std * jax.random.normal(key, (n,), jnp.float32))

    def loss(self, raw_fn: Callable[..., jax.Array], x0: jax.Array, key: jax.Array, y=None) -> jax.Array:
        """Per-example EDM loss ``lambda(sigma) * mean_pixels (D(x0 + sigma n, sigma) - x0)^2``, ``[N]``.

        EDM sums over pixels; the mean here only rescales the loss by ``1 / (H W C)`` (an lr scale).
        """
        sigma_key, noise_key = jax.random.split(key)
        sigma = self.sample_sigma(sigma_key, x0.shape[0])
        x0 = x0.astype(jnp.float32)
        noise = jax.random.normal(noise_key, x0.shape, jnp.float32)
        sigma_b = sigma.reshape((-1,) + (1,) * (x0.ndim - 1))
        denoised = self.denoise(raw_fn, x0 + sigma_b * noise, sigma, y)
        per_example = jnp.mean((denoised - x0) ** 2, axis=tuple(range(1, x0.ndim)))
        return self.loss_weight(sigma) * per_example

    # ------------------------------------------------------------ sampling

    def sigmas(self, num_steps: int, dtype=jnp.float32, *, schedule: str = "polynomial",
               final_denoise: bool = True) -> jax.Array:
        """The sampling grid of ``num_steps`` steps, decreasing.

        ``final_denoise`` (EDM): ``[num_steps + 1]``, ``num_steps`` points from sigma_max down to
        sigma_min, then 0. Without: ``[num_steps + 1]`` points from sigma_max to sigma_min (no 0).
        ``schedule``: ``"polynomial"`` (Eq. 5: ``sigma^(1/rho)`` linear in the step index) or
        ``"logsnr"`` (``ln sigma`` linear in the step index).
        """
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; allowed values: {list(SCHEDULES)}")
        points = num_steps if final_denoise else num_steps + 1
        i = jnp.arange(points, dtype=dtype)
        frac = i / max(points - 1, 1)
        if schedule == "polynomial":
            inv_rho = 1.0 / self.rho
            lo, hi = self.sigma_min**inv_rho, self.sigma_max**inv_rho
            grid = (hi + frac * (lo - hi)) ** self.rho
        else:
            lo, hi = jnp.log(jnp.asarray(self.sigma_min, dtype)), jnp.log(jnp.asarray(self.sigma_max, dtype))
            grid = jnp.exp(hi + frac * (lo - hi))
        if not final_denoise:
            return grid
        return jnp.concatenate([grid, jnp.zeros((1,), dtype)])


@dataclasses.dataclass(frozen=True)
class SamplingOptions:
    """Sampling-time choices of the grid and the solver variant (module docstring); defaults = EDM.

    Attributes:
      schedule: ``"polynomial"`` (EDM's rho grid) or ``"logsnr"``.
      sigma_min / sigma_max / rho: overrides of the EDM's grid values (None: keep them). Only the
        grid uses them; the preconditioning does not.
      final_denoise: EDM's last step ``sigma_min -> 0`` as the denoised estimate (one NFE).
      afs: analytical first step (one NFE fewer).
    """

    schedule: str = "polynomial"
    sigma_min: float | None = None
    sigma_max: float | None = None
    rho: float | None = None
    final_denoise: bool = True
    afs: bool = False

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; allowed values: {list(SCHEDULES)}")
        for name in ("final_denoise", "afs"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"SamplingOptions.{name} must be a bool, got {getattr(self, name)!r}")

    def grid_edm(self, edm: EDM) -> EDM:
        """``edm`` with this grid's sigma_min / sigma_max / rho (validated by ``EDM``)."""
        fields = {k: float(getattr(self, k)) for k in ("sigma_min", "sigma_max", "rho") if getattr(self, k) is not None}
        return dataclasses.replace(edm, **fields) if fields else edm

    def sigmas(self, edm: EDM, num_steps: int, dtype=jnp.float32) -> jax.Array:
        return self.grid_edm(edm).sigmas(num_steps, dtype, schedule=self.schedule, final_denoise=self.final_denoise)


EDM_DEFAULT_SAMPLING = SamplingOptions()


def nfe_of(solver: str, num_steps: int, options: SamplingOptions = EDM_DEFAULT_SAMPLING) -> int:
    """Denoiser evaluations of ``num_steps`` steps of ``solver`` (the final denoise counts as a step)."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; allowed values: {list(SOLVERS)}")
    if solver == "heun":
        # final_denoise: N - 1 Heun steps (2 NFE) + the last step (1); else N Heun steps.
        nfe = 2 * num_steps - 1 if options.final_denoise else 2 * num_steps
    else:
        nfe = num_steps
    return nfe - int(options.afs)


def steps_for_nfe(solver: str, nfe: int, options: SamplingOptions = EDM_DEFAULT_SAMPLING) -> int:
    """The number of grid steps N a solver takes for ``nfe`` denoiser evaluations (exact, or an error)."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; allowed values: {list(SOLVERS)}")
    if not isinstance(nfe, int) or isinstance(nfe, bool) or nfe < 1:
        raise ValueError(f"NFE budget must be a positive int, got {nfe!r}")
    afs = int(options.afs)
    if solver == "heun":
        extra = 1 if options.final_denoise else 0  # 2N = nfe + afs + final_denoise
        if (nfe + afs + extra) % 2:
            rule = {(True, False): "2N - 1", (False, False): "2N", (True, True): "2N - 2", (False, True): "2N - 1"}[
                (options.final_denoise, options.afs)]
            parity = "odd" if rule.endswith("1") else "even"
            raise ValueError(
                f"heun with final_denoise={options.final_denoise}, afs={options.afs} uses NFE = {rule}, which is "
                f"{parity}; an NFE budget of {nfe} cannot be met exactly: use {nfe - 1} or {nfe + 1}, toggle "
                f"final_denoise (EDM's Euler last step) or afs (analytical first step), or use "
                f"solver='dpmpp_2m'/'euler'"
            )
        steps = (nfe + afs + extra) // 2
    else:
        steps = nfe + afs
    return steps


def solve_ode(denoise_fn: DenoiseFn, x_start: jax.Array, sigmas: jax.Array, solver: str, *,
              return_trajectory: bool = False, final_denoise: bool = True, afs: bool = False,
              sigma_data: float = 0.5):
    """Integrates the PF-ODE from ``x_start`` at ``sigmas[0]`` down to ``sigmas[-1]``.

    Args:
      denoise_fn: ``D(x, sigma_scalar) -> x_0`` estimate, same shape as x.
      x_start: ``[N, ...]`` at noise level ``sigmas[0]`` (e.g. ``sigma_max * z``, z ~ N(0, I)).
      sigmas: ``[K + 1]`` decreasing noise levels (``EDM.sigmas`` / ``SamplingOptions.sigmas``); K steps.
        With ``final_denoise`` it ends with 0 and the last step is ``D(x, sigmas[-2])``.
      solver: one of ``SOLVERS``.
      final_denoise: EDM's last-step rule (see the module docstring); must match the grid.
      afs: the first step's denoiser call is the zero-mean Gaussian denoiser of std ``sigma_data``.

    Returns:
      ``x`` at ``sigmas[-1]``, ``[N, ...]``. The steps run as one ``lax.scan`` (plus the final denoise
      and, with ``afs``, the first step). With ``return_trajectory``: ``(x_end, trajectory [K + 1, N, ...])``,
      the iterate at every ``sigmas[k]`` (``trajectory[0] = x_start``, ``trajectory[K] = x_end``).
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; allowed values: {list(SOLVERS)}")
    if sigmas.ndim != 1 or sigmas.shape[0] < 2:
        raise ValueError(f"sigmas must be 1-D with at least 2 entries (one step), got shape {sigmas.shape}")
    sigmas = sigmas.astype(x_start.dtype)
    # The solver's own steps: every step but the final denoise (to sigma = 0) when there is one.
    solver_sigmas = sigmas[:-1] if final_denoise else sigmas
    pairs = (solver_sigmas[:-1], solver_sigmas[1:])
    if afs and solver_sigmas.shape[0] < 2:
        raise ValueError("afs needs at least one solver step before the final denoise: use more steps")

    def analytic_denoise(x, sigma):
        return (sigma_data**2 / (sigma**2 + sigma_data**2)) * x

    if solver == "euler":

        def step(x, s, denoise):
            s_cur, s_next = s
            return x + (s_next - s_cur) * (x - denoise(x, s_cur)) / s_cur

        init, get_x = x_start, lambda c: c
    elif solver == "heun":

        def step(x, s, denoise):
            s_cur, s_next = s
            d_cur = (x - denoise(x, s_cur)) / s_cur
            x_euler = x + (s_next - s_cur) * d_cur
            d_next = (x_euler - denoise_fn(x_euler, s_next)) / s_next
            return x + (s_next - s_cur) * 0.5 * (d_cur + d_next)

        init, get_x = x_start, lambda c: c
    else:  # dpmpp_2m

        def step(carry, s, denoise):
            x, d_prev, h_prev, first = carry
            s_cur, s_next = s
            denoised = denoise(x, s_cur)
            h = jnp.log(s_cur) - jnp.log(s_next)  # lambda_next - lambda_cur, lambda = -ln sigma
            r = h_prev / h
            d_2nd = (1.0 + 1.0 / (2.0 * r)) * denoised - (1.0 / (2.0 * r)) * d_prev
            d_hat = jnp.where(first, denoised, d_2nd)
            ratio = s_next / s_cur  # = exp(-h)
            x = ratio * x + (1.0 - ratio) * d_hat
            return x, denoised, h, jnp.zeros((), bool)

        one = jnp.ones((), x_start.dtype)
        init, get_x = (x_start, jnp.zeros_like(x_start), one, jnp.ones((), bool)), lambda c: c[0]

    carry, first_xs = init, []
    if afs:  # the first step outside the scan, with the analytic denoiser
        carry = step(carry, (pairs[0][0], pairs[1][0]), analytic_denoise)
        first_xs = [get_x(carry)[None]]
        pairs = (pairs[0][1:], pairs[1][1:])

    def scan_step(c, s):
        c = step(c, s, denoise_fn)
        return c, (get_x(c) if return_trajectory else None)

    carry, xs = jax.lax.scan(scan_step, carry, pairs)
    x = get_x(carry)
    if final_denoise:  # last step, sigmas[-2] -> 0: Euler (= the denoised estimate) for all three solvers
        x = denoise_fn(x, sigmas[-2])
        last = [x[None]]
    else:
        last = []
    if not return_trajectory:
        return x
    return x, jnp.concatenate([x_start[None], *first_xs, xs, *last], axis=0)


def trajectory_curvature(denoise_fn: DenoiseFn, trajectory: jax.Array, sigmas: jax.Array) -> jax.Array:
    """Per-sample curvature of a probability-flow trajectory, ``[N]`` (0 = a straight line).

    The mean over the grid points ``k < K`` of
    ``|| v_k - u ||^2 / || u ||^2`` with ``v_k = dx/dsigma = (x_k - D(x_k, sigma_k)) / sigma_k`` the
    ODE's velocity at the trajectory's iterate and ``u = (x_start - x_0) / (sigma_0 - 0)`` the
    straight displacement per unit sigma. A choice (QAC's measure is not known; Lee, Kim & Ye 2023
    use ``E_t ||(x_1 - x_0) - dx_t/dt||^2``, the same quantity unnormalised in their time variable):
    normalising by ``||u||^2`` makes it scale-free. Costs K extra denoiser calls (one scan).

    Args:
      denoise_fn: ``D(x, sigma_scalar)``.
      trajectory: ``[K + 1, N, ...]`` from ``solve_ode(..., return_trajectory=True)``.
      sigmas: the ``[K + 1]`` grid of that solve (ending with 0).
    """
    if trajectory.shape[0] != sigmas.shape[0]:
        raise ValueError(f"trajectory has {trajectory.shape[0]} points but sigmas has {sigmas.shape[0]}: "
                         f"pass the grid the trajectory was solved on")
    sigmas = sigmas.astype(trajectory.dtype)
    u = (trajectory[0] - trajectory[-1]) / sigmas[0]
    axes = tuple(range(1, u.ndim))

    def point(_, inputs):
        x, sigma = inputs
        v = (x - denoise_fn(x, sigma)) / sigma
        return None, jnp.sum((v - u) ** 2, axis=axes)

    _, dev = jax.lax.scan(point, None, (trajectory[:-1], sigmas[:-1]))
    return jnp.mean(dev, axis=0) / jnp.sum(u**2, axis=axes)


def make_edm_sampler(
    edm: EDM,
    apply_fn: Callable[..., jax.Array],
    *,
    solver: str = "heun",
    nfe: int = 35,
    options: SamplingOptions = EDM_DEFAULT_SAMPLING,
) -> Callable[..., jax.Array]:
    """A jitted ``sample(params, z [N, H, W, C], y, *extra) -> x_0`` at exactly ``nfe`` backbone calls.

    ``apply_fn(params, x_in, t, y, *extra)`` runs the raw backbone, e.g.
    ``lambda p, x, t, y: module.apply({"params": p}, x, t, y)``; ``extra`` are further per-call
    arrays passed through unchanged (QAC's codes). ``z`` is standard normal noise (scaled by
    ``sigma_max`` here). Compiles once per (shape, dtype, y structure): params, noise and labels
    are arguments, the grid is a constant of the solver configuration. ``options``: the few-NFE
    grid and solver switches (``SamplingOptions``; default EDM's).
    """
    num_steps = steps_for_nfe(solver, nfe, options)

    @jax.jit
    def sample(params, z, y=None, *extra):
        sigmas = options.sigmas(edm, num_steps, jnp.float32)

        def denoise_fn(x, sigma):
            return edm.denoise(lambda xi, t, yi: apply_fn(params, xi, t, yi, *extra), x, sigma, y)

        return solve_ode(denoise_fn, z.astype(jnp.float32) * sigmas[0], sigmas, solver,
                         final_denoise=options.final_denoise, afs=options.afs, sigma_data=edm.sigma_data)

    return sample
