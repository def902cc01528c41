"""Few-NFE error of the EDM solvers on a trained EDM run, and the curvature of its trajectories.

For fixed noises (``--num 64``, seed 0) and every solver and NFE budget it meets, prints the
RMS distance (per pixel, images in [-1, 1]) between the NFE-n sample and a reference solve from
the same noise (Heun at ``--ref_nfe``, default 79), and the curvature
(``edm.trajectory_curvature``) of the reference trajectories. A measure of truncation error, not
of sample quality (no FID here). Deterministic; no timing.

    PYTHONPATH=$PWD python benchmarks/edm_nfe_sweep.py --workdir /tmp/qac_base [--nfe 3 4 6 8 12 18 35]
"""

import argparse
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.diffusion.edm import SOLVERS, EDM, make_edm_sampler, solve_ode, steps_for_nfe, trajectory_curvature
from jaxlab.diffusion.edm_task import EDM_FIELDS
from jaxlab.train.params_io import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="an EDMTask training workdir (configs/qac.py)")
    parser.add_argument("--nfe", type=int, nargs="+", default=[3, 4, 5, 6, 7, 8, 12, 18, 35])
    parser.add_argument("--ref_nfe", type=int, default=79)
    parser.add_argument("--num", type=int, default=64)
    args = parser.parse_args()
    workdir = pathlib.Path(args.workdir)
    run_config = json.loads((workdir / "config.json").read_text())
    edm_section = run_config.get("edm")
    if edm_section is None:
        raise SystemExit(f"{workdir}/config.json has no 'edm' section: not an EDMTask run (configs/qac.py)")
    edm = EDM(**{k: float(edm_section[k]) for k in EDM_FIELDS})
    module, params = load_model(workdir)
    cfg = module.config
    z = jax.random.normal(jax.random.PRNGKey(0), (args.num, cfg.input_size, cfg.input_size, cfg.in_channels))
    y = jnp.zeros((args.num,), jnp.int32)

    def apply_fn(p, x, t, yy):
        return module.apply({"params": p}, x, t, yy)

    ref_steps = steps_for_nfe("heun", args.ref_nfe)
    sigmas = edm.sigmas(ref_steps)

    @jax.jit
    def reference(p, z):
        def denoise(x, s):
            return edm.denoise(lambda xi, t, yi: apply_fn(p, xi, t, yi), x, s, y)

        x0, traj = solve_ode(denoise, z * sigmas[0], sigmas, "heun", return_trajectory=True)
        return x0, trajectory_curvature(denoise, traj, sigmas)

    ref, curvature = reference(params, z)
    if not (np.all(np.isfinite(ref)) and np.all(np.isfinite(curvature))):
        raise SystemExit("the reference solve is not finite: check the run's parameters")
    print(f"reference: heun {args.ref_nfe} NFE; curvature mean {float(curvature.mean()):.4f} "
          f"(std {float(curvature.std()):.4f}) over {args.num} noises")
    print("| solver | NFE | RMS distance to reference |")
    print("|---|---|---|")
    for solver in SOLVERS:
        for nfe in args.nfe:
            try:
                steps_for_nfe(solver, nfe)
            except ValueError:
                continue  # e.g. an even budget for heun
            out = make_edm_sampler(edm, apply_fn, solver=solver, nfe=nfe)(params, z, y)
            rms = float(jnp.sqrt(jnp.mean((out - ref) ** 2)))
            print(f"| {solver} | {nfe} | {rms:.4f} |")


if __name__ == "__main__":
    main()
