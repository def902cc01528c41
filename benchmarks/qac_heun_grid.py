"""Few-NFE Heun on the digits: EDM's grid against the time-step switches a user would try.

EDM's Heun (Algorithm 1) at 3-7 NFE on the default grid (rho 7, sigma in [0.002, 80], Euler last
step) keeps much of the starting noise (docs/qac.md: 3 NFE is a single trapezoid from 80 to 0.002).
This script samples every ``--run NAME=WORKDIR`` (EDM baseline or QAC training workdirs of
``configs/qac.py``) with Heun at ``--nfe`` under each grid variant of ``VARIANTS`` (the switches of
``jaxlab.diffusion.edm.SamplingOptions``), on the same fixed noises and QAC codes as
``benchmarks/qac_comparison.py`` with the same ``--num``/``--seed``, and prints the digits FID
table (one row per run and variant). Every number goes to ``--output`` (JSON, never overwritten).

    PYTHONPATH=$PWD python benchmarks/qac_heun_grid.py --run baseline=/tmp/qac_base --run qac=/tmp/qac_qac \\
        --num 500 --output /tmp/qac_heun_grid.json
"""

import argparse
import json
import time

import numpy as np

from benchmarks.qac_comparison import checked_arguments, load_fixed_inputs
from jaxlab.diffusion import edm_sampling
from jaxlab.diffusion.edm import SamplingOptions, steps_for_nfe
from jaxlab.eval import digits_features

# name -> the switches (SamplingOptions fields); "edm" is EDM's sampler as in the comparison table.
VARIANTS = {
    "edm": {},
    "sigma_min=0.02": dict(sigma_min=0.02),
    "sigma_min=0.1": dict(sigma_min=0.1),
    "sigma_min=0.5": dict(sigma_min=0.5),
    "sigma_min=0.1,rho=3": dict(sigma_min=0.1, rho=3.0),
    "sigma_min=0.1,logsnr": dict(sigma_min=0.1, schedule="logsnr"),
    "afs,no_final": dict(afs=True, final_denoise=False),
    "afs,no_final,sigma_min=0.02": dict(afs=True, final_denoise=False, sigma_min=0.02),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, help="NAME=WORKDIR (repeat)")
    parser.add_argument("--nfe", type=int, nargs="+", default=[3, 5, 7])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--num", type=int, default=500, help="samples per cell (>= 64 for the digits FID)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    out_path, runs = checked_arguments(args.output, args.num, args.run)
    options = {name: SamplingOptions(**VARIANTS[name]) for name in args.variants}
    for name, opt in options.items():  # every budget must be met exactly, before any sampling
        for nfe in args.nfe:
            steps_for_nfe("heun", nfe, opt)
    features = digits_features.DigitsFeatures()
    report = {"num": args.num, "seed": args.seed, "nfe": args.nfe, "variants": {k: VARIANTS[k] for k in options},
              "runs": {}}
    ref_feats = None
    for name, workdir in runs:
        _, task, params, prior, key, z, codes = load_fixed_inputs(workdir, args.num, args.seed)
        if ref_feats is None:
            ref_feats = features(digits_features.real_digits(task.model_config.input_size))
        cells = []
        for variant, opt in options.items():
            for nfe in args.nfe:
                start = time.perf_counter()
                sampler = edm_sampling.RunSampler(task, params, "heun", nfe, prior, opt)
                samples = np.asarray(sampler.sample(z, key, codes))
                if not np.isfinite(samples).all():
                    raise SystemExit(f"[{name}] {variant} {nfe}: non-finite samples")
                scores = digits_features.digits_scores(features(samples), ref_feats)
                cell = {"variant": variant, "nfe": nfe, **{k: float(v) for k, v in scores.items()},
                        "seconds": round(time.perf_counter() - start, 1)}
                cells.append(cell)
                print(f"[{name}] heun {variant:28s} NFE {nfe:2d}: digits FID {cell['digits_fid']:8.2f}  "
                      f"precision {cell['digits_precision']:.3f}  recall {cell['digits_recall']:.3f}  "
                      f"({cell['seconds']} s)", flush=True)
        report["runs"][name] = {"workdir": workdir, "task": type(task).__name__, "cells": cells}
    out_path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nHeun, digits FID ({args.num} samples, seed {args.seed}):\n")
    print("| run | grid | " + " | ".join(f"NFE {n}" for n in args.nfe) + " |")
    print("|---|---|" + "---|" * len(args.nfe))
    for name, entry in report["runs"].items():
        for variant in options:
            row = {c["nfe"]: c["digits_fid"] for c in entry["cells"] if c["variant"] == variant}
            print(f"| {name} | {variant} | " + " | ".join(f"{row[n]:.1f}" for n in args.nfe) + " |")
    print(f"\nwrote {out_path}")


if __name__ == "__main__":
    main()
