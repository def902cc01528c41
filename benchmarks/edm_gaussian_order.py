"""Error of the EDM solvers vs NFE on a Gaussian data distribution, where the ODE solution is exact.

Data ``N(mu, s^2)``: exact denoiser ``mu + s^2/(s^2+sigma^2)(x - mu)``; the probability-flow ODE
keeps ``(x - mu)/sqrt(s^2+sigma^2)`` constant. Prints, per solver and number of grid steps N, the
NFE, the max error against the exact solution (same last step ``D(., sigma_min)``) and the ratio
to the previous row (doubling N: ~2 for a 1st-order, ~4 for a 2nd-order solver). float64, CPU,
deterministic (no timing).

    PYTHONPATH=$PWD python benchmarks/edm_gaussian_order.py [--mu 0.3 --s 0.5]
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.diffusion.edm import EDM, SOLVERS, nfe_of, solve_ode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mu", type=float, default=0.3)
    parser.add_argument("--s", type=float, default=0.5)
    parser.add_argument("--steps", type=int, nargs="+", default=[2, 3, 4, 6, 8, 16, 32, 64, 128])
    args = parser.parse_args()
    mu, s = args.mu, args.s
    edm = EDM()
    with jax.enable_x64(True):
        x_start = edm.sigma_max * jax.random.normal(jax.random.PRNGKey(0), (256, 4), jnp.float64)
        target = mu + s**2 / (np.sqrt(s**2 + edm.sigma_min**2) * np.sqrt(s**2 + edm.sigma_max**2)) * (
            np.asarray(x_start) - mu)

        def denoiser(x, sigma):
            return mu + s**2 / (s**2 + sigma**2) * (x - mu)

        print(f"| solver | N | NFE | max error | ratio to previous N |  (data N({mu}, {s}^2), float64)")
        print("|---|---|---|---|---|")
        for solver in SOLVERS:
            solve = jax.jit(lambda x, sig, solver=solver: solve_ode(denoiser, x, sig, solver))
            previous = None
            for n in args.steps:
                err = float(np.abs(np.asarray(solve(x_start, edm.sigmas(n, jnp.float64))) - target).max())
                ratio = f"{previous / err:.2f}" if previous else ""
                print(f"| {solver} | {n} | {nfe_of(solver, n)} | {err:.3e} | {ratio} |")
                previous = err


if __name__ == "__main__":
    main()
