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
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

SOLVERS = ("euler", "heun", "dpmpp_2m")

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

    def sigmas(self, num_steps: int, dtype=jnp.float32) -> jax.Array:
        """EDM's grid (Eq. 5): ``[num_steps + 1]`` from sigma_max down to sigma_min, then 0."""
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
        i = jnp.arange(num_steps, dtype=dtype)
        inv_rho = 1.0 / self.rho
        lo, hi = self.sigma_min**inv_rho, self.sigma_max**inv_rho
        frac = i / max(num_steps - 1, 1)
        grid = (hi + frac * (lo - hi)) ** self.rho
        return jnp.concatenate([grid, jnp.zeros((1,), dtype)])


def steps_for_nfe(solver: str, nfe: int) -> int:
    """The number of grid steps N a solver takes for ``nfe`` denoiser evaluations (exact, or an error)."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; allowed values: {list(SOLVERS)}")
    if not isinstance(nfe, int) or isinstance(nfe, bool) or nfe < 1:
        raise ValueError(f"NFE budget must be a positive int, got {nfe!r}")
    if solver == "heun":
        if nfe % 2 == 0:
            raise ValueError(
                f"heun (EDM's 2nd order with an Euler last step) uses NFE = 2N - 1, which is odd; an NFE "
                f"budget of {nfe} cannot be met exactly: use {nfe - 1} or {nfe + 1}, or solver='dpmpp_2m'/'euler'"
            )
        return (nfe + 1) // 2
    return nfe


def nfe_of(solver: str, num_steps: int) -> int:
    """Denoiser evaluations of ``num_steps`` steps of ``solver``."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; allowed values: {list(SOLVERS)}")
    return 2 * num_steps - 1 if solver == "heun" else num_steps


def solve_ode(denoise_fn: DenoiseFn, x_start: jax.Array, sigmas: jax.Array, solver: str, *,
              return_trajectory: bool = False):
    """Integrates the PF-ODE from ``x_start`` at ``sigmas[0]`` down to ``sigmas[-1] = 0``.

    Args:
      denoise_fn: ``D(x, sigma_scalar) -> x_0`` estimate, same shape as x.
      x_start: ``[N, ...]`` at noise level ``sigmas[0]`` (e.g. ``sigma_max * z``, z ~ N(0, I)).
      sigmas: ``[K + 1]`` decreasing noise levels ending with 0 (``EDM.sigmas``); K steps.
      solver: one of ``SOLVERS``.

    Returns:
      ``x`` at sigma = 0, ``[N, ...]``. The steps run as one ``lax.scan`` (plus the final step).
      With ``return_trajectory``: ``(x_0, trajectory [K + 1, N, ...])``, the iterate at every
      ``sigmas[k]`` (``trajectory[0] = x_start``, ``trajectory[K] = x_0``).
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; allowed values: {list(SOLVERS)}")
    if sigmas.ndim != 1 or sigmas.shape[0] < 2:
        raise ValueError(f"sigmas must be 1-D with at least 2 entries (one step), got shape {sigmas.shape}")
    sigmas = sigmas.astype(x_start.dtype)
    pairs = (sigmas[:-2], sigmas[1:-1])  # every step but the last one, which goes to sigma = 0

    if solver == "euler":

        def step(x, s):
            s_cur, s_next = s
            x = x + (s_next - s_cur) * (x - denoise_fn(x, s_cur)) / s_cur
            return x, (x if return_trajectory else None)

        x, xs = jax.lax.scan(step, x_start, pairs)
    elif solver == "heun":

        def step(x, s):
            s_cur, s_next = s
            d_cur = (x - denoise_fn(x, s_cur)) / s_cur
            x_euler = x + (s_next - s_cur) * d_cur
            d_next = (x_euler - denoise_fn(x_euler, s_next)) / s_next
            x = x + (s_next - s_cur) * 0.5 * (d_cur + d_next)
            return x, (x if return_trajectory else None)

        x, xs = jax.lax.scan(step, x_start, pairs)
    else:  # dpmpp_2m

        def step(carry, s):
            x, d_prev, h_prev, first = carry
            s_cur, s_next = s
            denoised = denoise_fn(x, s_cur)
            h = jnp.log(s_cur) - jnp.log(s_next)  # lambda_next - lambda_cur, lambda = -ln sigma
            r = h_prev / h
            d_2nd = (1.0 + 1.0 / (2.0 * r)) * denoised - (1.0 / (2.0 * r)) * d_prev
            d_hat = jnp.where(first, denoised, d_2nd)
            ratio = s_next / s_cur  # = exp(-h)
            x = ratio * x + (1.0 - ratio) * d_hat
            return (x, denoised, h, jnp.zeros((), bool)), (x if return_trajectory else None)

        one = jnp.ones((), x_start.dtype)
        init = (x_start, jnp.zeros_like(x_start), one, jnp.ones((), bool))
        (x, _, _, _), xs = jax.lax.scan(step, init, pairs)
    # Last step, sigmas[-2] -> 0: Euler (= the denoised estimate) for all three solvers.
    x0 = denoise_fn(x, sigmas[-2])
    if not return_trajectory:
        return x0
    return x0, jnp.concatenate([x_start[None], xs, x0[None]], axis=0)


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
) -> Callable[..., jax.Array]:
    """A jitted ``sample(params, z [N, H, W, C], y, *extra) -> x_0`` at exactly ``nfe`` backbone calls.

    ``apply_fn(params, x_in, t, y, *extra)`` runs the raw backbone, e.g.
    ``lambda p, x, t, y: module.apply({"params": p}, x, t, y)``; ``extra`` are further per-call
    arrays passed through unchanged (QAC's codes). ``z`` is standard normal noise (scaled by
    ``sigma_max`` here). Compiles once per (shape, dtype, y structure): params, noise and labels
    are arguments, the grid is a constant of the solver configuration.
    """
    num_steps = steps_for_nfe(solver, nfe)

    @jax.jit
    def sample(params, z, y=None, *extra):
        sigmas = edm.sigmas(num_steps, jnp.float32)

        def denoise_fn(x, sigma):
            return edm.denoise(lambda xi, t, yi: apply_fn(params, xi, t, yi, *extra), x, sigma, y)

        return solve_ode(denoise_fn, z.astype(jnp.float32) * sigmas[0], sigmas, solver)

    return sample
