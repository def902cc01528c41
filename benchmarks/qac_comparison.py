"""The QAC comparison on the digits: EDM baseline vs QAC runs, digits FID per solver and NFE, and curvature.

For every run (``--run NAME=WORKDIR``, each an EDMTask or QACTask training workdir of
``configs/qac.py``; the run's own ``config.json`` says which), the same fixed noises (``--num``,
``--seed``) are solved with Euler / Heun / DPM-Solver++(2M) at each NFE budget (default: the
issue's 3, 4, 6, 8, 12, 18, 35). Heun meets odd budgets with EDM's sampler (Euler last step to
sigma = 0, NFE = 2N - 1) and even budgets with a Heun last step (``final_denoise=False``: the grid
ends at sigma_min, NFE = 2N); each Heun cell records which (``final_denoise``). QAC runs draw one
code per noise from their prior (``config.qac.prior``, or ``--prior``) once, and reuse those codes
for every cell. Each cell's samples get the digits FID
(``jaxlab.eval.digits_features``, against the 1,797 real digits). Curvature: ``trajectory_curvature``
of Heun trajectories at ``--curvature_nfe`` on the first 64 noises (QAC: with their codes).

Prints one markdown table per metric and writes every number to ``--output`` (JSON; an existing
file is not replaced). FIDs of the same ``--num`` are comparable with each other only.

    PYTHONPATH=$PWD python benchmarks/qac_comparison.py --run baseline=/tmp/qac_base --run qac=/tmp/qac_qac \\
        --num 500 --output /tmp/qac_comparison.json
"""

import argparse
import dataclasses
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxlab.diffusion import edm_sampling
from jaxlab.diffusion.edm import SOLVERS, SamplingOptions, solve_ode, steps_for_nfe, trajectory_curvature
from jaxlab.diffusion.qac_task import QACTask
from jaxlab.eval import digits_features


def _curvature(task, params, z, codes, nfe: int) -> np.ndarray:
    sigmas = task.edm.sigmas(steps_for_nfe("heun", nfe))
    y = jnp.zeros((z.shape[0],), jnp.int32)

    @jax.jit
    def run(params, z, codes):
        if codes is None:
            def raw(x, t, yy):
                return task.module.apply({"params": params}, x, t, yy)
        else:
            def raw(x, t, yy):
                return task.model.raw(params, x, t, yy, codes)

        def denoise(x, s):
            return task.edm.denoise(raw, x, s, y)

        _, traj = solve_ode(denoise, z * sigmas[0], sigmas, "heun", return_trajectory=True)
        return trajectory_curvature(denoise, traj, sigmas)

    return np.asarray(run(params, z, codes))


def heun_options_for(options: SamplingOptions, solver: str, nfe: int) -> SamplingOptions | None:
    """The sampling options that meet ``nfe`` exactly: ``options`` when they do; for Heun at a budget of
    the other parity, ``options`` with ``final_denoise`` flipped (EDM's Euler last step <-> a Heun
    last step ending at sigma_min); None when neither does (the cell is skipped)."""
    candidates = [options]
    if solver == "heun":
        candidates.append(dataclasses.replace(options, final_denoise=not options.final_denoise))
    for candidate in candidates:
        try:
            steps_for_nfe(solver, nfe, candidate)
        except ValueError:
            continue
        return candidate
    return None


def load_fixed_inputs(workdir: str, num: int, seed: int, prior_name: str | None = None):
    """A run's ``(config, task, ema params, prior, key, z [num, H, W, C], codes)``; the noises and (QAC)
    codes are fixed by ``seed`` alone, so every script that uses this compares the same samples."""
    saved = json.loads((pathlib.Path(workdir) / "config.json").read_text())
    saved.pop("run_history", None)
    config = ml_collections.ConfigDict(saved)
    if prior_name and "qac" in config:
        config.qac.prior = prior_name
    task, params = edm_sampling.load_run(config, workdir)
    prior = edm_sampling.make_prior(config, task, params) if isinstance(task, QACTask) else None
    cfg = task.model_config
    key = jax.random.PRNGKey(seed)
    z = jax.random.normal(jax.random.fold_in(key, 0), (num, cfg.input_size, cfg.input_size, cfg.in_channels))
    codes = None if prior is None else task.spec.from_indices(prior.sample(jax.random.fold_in(key, 1), num))
    return config, task, params, prior, key, z, codes


def checked_arguments(output: str, num: int, run_specs: list[str]) -> tuple[pathlib.Path, list[tuple[str, str]]]:
    """``(output path, [(name, workdir)])`` from ``--output``, ``--num`` and the ``--run NAME=WORKDIR``
    flags, refused before any work: an existing output, too few samples, a malformed run."""
    out_path = pathlib.Path(output)
    if out_path.exists():
        raise SystemExit(f"{out_path} exists; choose another --output")
    if num < digits_features.FEATURE_DIM:
        raise SystemExit(f"--num={num} is below the digits feature width {digits_features.FEATURE_DIM}")
    runs = []
    for spec in run_specs:
        name, _, workdir = spec.partition("=")
        if not workdir:
            raise SystemExit(f"--run {spec!r}: expected NAME=WORKDIR")
        runs.append((name, workdir))
    return out_path, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, help="NAME=WORKDIR (repeat)")
    parser.add_argument("--nfe", type=int, nargs="+", default=[3, 4, 6, 8, 12, 18, 35])
    parser.add_argument("--solvers", nargs="+", default=list(SOLVERS), choices=list(SOLVERS))
    parser.add_argument("--num", type=int, default=500, help="samples per cell (>= 64 for the digits FID)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prior", choices=["empirical", "ar"], default=None, help="override config.qac.prior")
    parser.add_argument("--curvature_nfe", type=int, default=35)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    out_path, runs = checked_arguments(args.output, args.num, args.run)
    features = digits_features.DigitsFeatures()
    report = {"num": args.num, "seed": args.seed, "nfe": args.nfe, "runs": {}}
    ref_feats = None
    for name, workdir in runs:
        config, task, params, prior, key, z, codes = load_fixed_inputs(workdir, args.num, args.seed, args.prior)
        cfg = task.model_config
        if ref_feats is None:
            ref_feats = features(digits_features.real_digits(cfg.input_size))
        entry = {"workdir": workdir, "task": type(task).__name__, "cells": []}
        if prior is not None:
            idx = np.asarray(task.spec.indices(codes))
            entry["prior"] = config.qac.prior
            entry["distinct_codes_drawn"] = int(len({tuple(r) for r in idx.tolist()}))
            train_idx = edm_sampling.training_codes(task, params, edm_sampling.training_images(config))
            entry["distinct_training_codes"] = int(len({tuple(r) for r in train_idx.tolist()}))
        curv = _curvature(task, params, z[:64], None if codes is None else codes[:64], args.curvature_nfe)
        entry["curvature_mean"], entry["curvature_std"] = float(curv.mean()), float(curv.std())
        print(f"[{name}] curvature (heun {args.curvature_nfe}, 64 noises): {curv.mean():.4f} +- {curv.std():.4f}"
              + ("" if prior is None else f"; codes: {entry['distinct_codes_drawn']} distinct drawn, "
                 f"{entry['distinct_training_codes']} distinct in the training set"), flush=True)
        for solver in args.solvers:
            for nfe in args.nfe:
                options = heun_options_for(task.sampling, solver, nfe)
                if options is None:
                    continue
                start = time.perf_counter()
                sampler = edm_sampling.RunSampler(task, params, solver, nfe, prior, options)
                samples = np.asarray(sampler.sample(z, key, codes))
                if not np.isfinite(samples).all():
                    raise SystemExit(f"[{name}] {solver} {nfe}: non-finite samples")
                scores = digits_features.digits_scores(features(samples), ref_feats)
                cell = {"solver": solver, "nfe": nfe, "final_denoise": options.final_denoise,
                        **{k: float(v) for k, v in scores.items()},
                        "seconds": round(time.perf_counter() - start, 1)}
                entry["cells"].append(cell)
                print(f"[{name}] {solver:9s} NFE {nfe:3d}: digits FID {cell['digits_fid']:8.2f}  "
                      f"precision {cell['digits_precision']:.3f}  recall {cell['digits_recall']:.3f}  "
                      f"({cell['seconds']} s)", flush=True)
        report["runs"][name] = entry
    out_path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\ndigits FID ({args.num} samples, seed {args.seed}):\n")
    print("| run | solver | " + " | ".join(f"NFE {n}" for n in args.nfe) + " |")
    print("|---|---|" + "---|" * len(args.nfe))
    for name, entry in report["runs"].items():
        for solver in args.solvers:
            row = {c["nfe"]: c["digits_fid"] for c in entry["cells"] if c["solver"] == solver}
            print(f"| {name} | {solver} | " + " | ".join(f"{row[n]:.2f}" if n in row else "-" for n in args.nfe) + " |")
    if "heun" in args.solvers:
        print("\nheun: odd NFE = EDM's sampler (Euler last step to sigma 0); even NFE = a Heun last step "
              "ending at sigma_min (final_denoise=False)")
    print(f"\nwrote {out_path}")


if __name__ == "__main__":
    main()
