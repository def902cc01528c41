"""Mean and spread over training seeds of ``benchmarks/qac_comparison.py`` (or ``qac_heun_grid.py``) outputs.

Each ``--json`` is one comparison JSON (one training seed of every run, the same ``--num`` and
sampling ``--seed``); runs are matched by name (e.g. ``baseline``, ``qac``). Rows are the solvers
(comparison files) or the grid variants (Heun-grid files). Prints, per run, row
and NFE, ``mean ± std`` of the digits FID over the files (sample std, ddof = 1) and the number of
seeds, then for ``--a`` vs ``--b`` the difference of means and whether it exceeds the seed spread:
"yes" when the two runs' per-seed ranges do not overlap (every seed of one is better than every
seed of the other), a simple, conservative reading for 2-3 seeds (no significance test is claimed).
Comparison files also give each run's trajectory curvature, printed as mean ± std over the files.

    PYTHONPATH=$PWD python benchmarks/qac_seed_table.py --json s0.json s1.json s2.json --a baseline --b qac
"""

import argparse
import json

import numpy as np


def collect(paths: list[str]) -> tuple[dict, list]:
    """``{(run, row, nfe): [fid per file]}`` for the cells every file has (row: the cell's solver, or its
    grid variant in a Heun-grid file), the row names in file order, and the reports."""
    reports = [json.load(open(p)) for p in paths]
    settings = {(r["num"], r["seed"]) for r in reports}
    if len(settings) != 1:
        raise SystemExit(f"the files differ in (--num, --seed): {sorted(settings)}; compare like with like")
    per_file = []
    for r in reports:
        per_file.append({(run, c.get("variant", c.get("solver")), c["nfe"]): c["digits_fid"]
                         for run, e in r["runs"].items() for c in e["cells"]})
    common = set.intersection(*(set(d) for d in per_file))
    rows = list(dict.fromkeys(k[1] for k in per_file[0] if k in common))
    return {k: [d[k] for d in per_file] for k in sorted(common)}, rows, reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", nargs="+", required=True, help="comparison JSONs, one per training seed")
    parser.add_argument("--a", default="baseline")
    parser.add_argument("--b", default="qac")
    args = parser.parse_args()
    cells, row_names, reports = collect(args.json)
    n = len(args.json)
    nfes = sorted({k[2] for k in cells})
    print(f"digits FID, mean ± std over {n} training seed(s) ({reports[0]['num']} samples, sampling seed "
          f"{reports[0]['seed']}):\n")
    print("| run | solver / grid | " + " | ".join(f"NFE {x}" for x in nfes) + " |")
    print("|---|---|" + "---|" * len(nfes))
    runs = sorted({k[0] for k in cells}, key=lambda r: (r != args.a, r))
    for run in runs:
        for solver in row_names:
            row = []
            for nfe in nfes:
                v = cells.get((run, solver, nfe))
                row.append("-" if v is None else f"{np.mean(v):.1f} ± {np.std(v, ddof=1) if n > 1 else 0:.1f}")
            if any(x != "-" for x in row):
                print(f"| {run} | {solver} | " + " | ".join(row) + " |")
    print(f"\n{args.b} - {args.a}: difference of means; * = the per-seed ranges do not overlap:\n")
    print("| solver / grid | " + " | ".join(f"NFE {x}" for x in nfes) + " |")
    print("|---|" + "---|" * len(nfes))
    for solver in row_names:
        row = []
        for nfe in nfes:
            a, b = cells.get((args.a, solver, nfe)), cells.get((args.b, solver, nfe))
            if a is None or b is None:
                row.append("-")
                continue
            apart = n > 1 and (max(a) < min(b) or max(b) < min(a))  # one seed has no spread to exceed
            row.append(f"{np.mean(b) - np.mean(a):+.1f}{' *' if apart else ''}")
        if any(x != "-" for x in row):
            print(f"| {solver} | " + " | ".join(row) + " |")
    curvature = {run: [r["runs"][run]["curvature_mean"] for r in reports if "curvature_mean" in r["runs"].get(run, {})]
                 for run in runs}
    if any(curvature.values()):
        print("\ntrajectory curvature (each file's mean over its noises), mean ± std over the files:\n")
        for run, values in curvature.items():
            if values:
                spread = np.std(values, ddof=1) if len(values) > 1 else 0.0
                print(f"- {run}: {np.mean(values):.4f} ± {spread:.4f} (per file: "
                      + ", ".join(f"{v:.4f}" for v in values) + ")")


if __name__ == "__main__":
    main()
