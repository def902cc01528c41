"""HTG post-training quantisation of a digits DiT, U-DiT or DiC: per-layer errors, digits FID, size and speed.

  python -m benchmarks.htg_quant --checkpoint=/tmp/digits_dit --num_fid_samples=200 --json=/tmp/htg.json

The family comes from the checkpoint (its ``model.json``) and the config from
``configs/<family>.py:<--variant>`` (sampling section: sampler, steps, guidance); what is
quantised per family is ``jaxlab.quant.families``'s, and the error columns are the family's
layer kinds (``LAYER_KINDS``).

Everything on one float checkpoint, calibrated once (``--calibration_samples`` trajectories of
the digits config's sampler: DDIM-50, guidance 4), every recipe built from the same statistics:

1. per-layer activation-quantisation error, HTG ablation: relative output error
   ``sum (Q(X^) W^ - X^ W^)^2 / sum (X W)^2`` of each linear/conv with only its input quantised
   (8 bit), on held-out float trajectories, for: no smoothing (per-group ranges), + shift per
   step, + grouping (shift per group), + scaling (= HTG);
2. W8A8 / W4A8 for each method and HTG with G in {1, T/10, T}: the same error with weights
   quantised too, and the digits FID of ``--num_fid_samples`` samples (fake-quant execution,
   fixed seeds shared with the float model) and the RMSE of those samples against the float
   model's samples from the same noise and labels;
3. model size (bytes of what the quantised model stores) and sampling time of one batch,
   float vs fake-quant vs integer (int8 dot_general), interleaved rounds in this one process.
"""

import argparse
import importlib
import json
import os
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

from flax.traverse_util import flatten_dict

from jaxlab.config_utils import to_dict
from jaxlab.diffusion.pipeline import make_class_sampler, sampling_diffusion
from jaxlab.eval.digits_features import DigitsFeatures, evaluate_digits
from jaxlab.quant.calibration import CalibrationSpec, calibrate, step_timesteps, trajectory_inputs
from jaxlab.quant.config import method_config
from jaxlab.quant.families import family_plan
from jaxlab.quant.ptq import quantize_dit
from jaxlab.quant.quantizers import pack_int4
from jaxlab.quant.runtime import quantized_apply, variables
from jaxlab.train.params_io import load_model, read_model_config

# Error-table columns per family: (key, column header, regex a tabled layer's path matches).
LAYER_KINDS = {
    "dit": (("attn/qkv", "qkv", r"/attn/qkv$"), ("attn/proj", "proj", r"/attn/proj$"), ("mlp/fc1", "fc1", r"/mlp/fc1$"),
            ("mlp/fc2", "fc2", r"/mlp/fc2$")),
    "udit": (("to_qkv", "to_qkv", r"/attn/to_qkv$"), ("to_out", "to_out", r"/attn/to_out$"),
             ("ffn_in", "FFN in", r"/mlp/(project_in|fc1)"), ("ffn_out", "FFN out", r"/mlp/(project_out|fc2)")),
    "dic": (("conv0", "conv0", r"/conv0$"), ("conv1", "conv1", r"/conv1$"), ("skip", "skip 1x1", r"/skip$")),
}


def layer_errors(module, params, qmodel, inputs, y, cfg_scale, kinds):
    """``{kind: {"act": rel, "both": rel}}`` per layer kind (``LAYER_KINDS``; summed over blocks
    and steps; a kind no tabled layer has is left out)."""
    apply = quantized_apply(module, qmodel.meta, "probe")
    timesteps = jnp.asarray(step_timesteps_cache["t"], jnp.int32)

    @jax.jit
    def run(tables, inputs):
        v = {"params": {"float": params, "quant": tables}}

        def one(args):
            x, t = args
            _, st = apply(v, x, jnp.full((x.shape[0],), t), y, cfg_scale, method=module.forward_with_cfg,
                          mutable=["quant_error"])
            return st["quant_error"]

        return jax.lax.map(one, (inputs, timesteps))

    sums = flatten_dict(run(qmodel.tables, inputs), sep="/")  # {"<layer>/<act|both|ref>": ([K],)}
    out = {}
    for key, _, pattern in kinds:
        tot = {"act": 0.0, "both": 0.0, "ref": 0.0}
        for path, (value,) in sums.items():
            layer, name = path.rsplit("/", 1)
            if re.search(pattern, layer):
                tot[name] += float(np.sum(value))
        if tot["ref"] > 0:
            out[key] = {"act": tot["act"] / tot["ref"], "both": tot["both"] / tot["ref"]}
    return out


step_timesteps_cache = {}


def quantize_apply_fn(module, qmodel):
    return quantized_apply(module, qmodel.meta, "fake")


def model_bytes(params, qmodel=None, weight_bits=8):
    """Bytes stored: float32 params, with tabled layers replaced by their tables (int4 packed)."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    total = 0
    for path, leaf in flat:
        name = "/".join(p.key for p in path[:-1])
        if qmodel is not None and name in qmodel.tables["layers"]:
            continue
        total += leaf.size * 4
    if qmodel is None:
        return total
    for entry in qmodel.tables["layers"].values():
        for key, value in entry.items():
            if key == "kernel" and "w_int" in entry:
                continue
            if key == "w_int":
                total += pack_int4(value).nbytes if weight_bits <= 4 else value.size
            else:
                total += np.asarray(value).nbytes
    return total + qmodel.tables["step_of_timestep"].nbytes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=None,
                    help="digits DiT/U-DiT/DiC training workdir or saved model (required; the family is read from it)")
    ap.add_argument("--variant", default="digits", help="variant of configs/<the checkpoint's family>.py")
    ap.add_argument("--calibration_samples", type=int, default=32)
    ap.add_argument("--probe_samples", type=int, default=8)
    ap.add_argument("--num_fid_samples", type=int, default=200)
    ap.add_argument("--fid", default="all", help="FID rows: all | main | core (the four methods) | none, or comma-separated recipe names")
    ap.add_argument("--timing_rounds", type=int, default=3)
    ap.add_argument("--json", default=None, help="results JSON (must not exist; rewritten after every row)")
    ap.add_argument("--skip_recipes", action="store_true", help="only the size/timing section")
    ap.add_argument("--step", type=int, default=None, help="checkpoint step of a training workdir (default: latest)")
    ap.add_argument("--sampler", default=None, help="ddim | ddpm (default: the variant's config.sample.sampler)")
    ap.add_argument("--num_steps", type=int, default=None, help="sampler steps (default: config.sample.num_steps)")
    ap.add_argument("--seeds", default="0",
                    help="comma-separated seeds; seed i calibrates with CalibrationSpec(seed=i) and samples the FID "
                         "set with key 1234 + i (the float model too), so mean +- std covers both sources")
    ap.add_argument("--bits", default="8,4", help="comma-separated weight bit widths (activations: 8)")
    ap.add_argument("--recipes", default="", help="comma-separated recipe names to run (default: all)")
    ap.add_argument("--print_json", default=None,
                    help="only print the tables of existing results JSONs (comma-separated runs of the same setup "
                         "with other --seeds are merged)")
    args = ap.parse_args()
    if args.print_json:
        print_tables(merge_results(args.print_json.split(",")))
        return
    if not args.checkpoint:
        raise SystemExit("--checkpoint is required (a digits DiT/U-DiT/DiC training workdir or saved model)")
    if args.json and os.path.exists(args.json):
        raise SystemExit(f"{args.json} exists; choose a new --json path")

    def save():
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)

    family = read_model_config(args.checkpoint)[0].name
    if family not in LAYER_KINDS:
        raise SystemExit(f"{args.checkpoint} holds a {family} model; this benchmark quantises {list(LAYER_KINDS)}")
    config = importlib.import_module(f"configs.{family}").get_config(args.variant)
    s = config.sample
    if args.sampler:
        s.sampler = args.sampler
    if args.num_steps:
        s.num_steps = args.num_steps
    seeds = [int(v) for v in args.seeds.split(",")]
    module, params = load_model(args.checkpoint, step=args.step)
    plan = family_plan(module)
    kinds = LAYER_KINDS[family]
    diffusion = sampling_diffusion(s.sampler, s.num_steps, module.config.learn_sigma, **to_dict(config.diffusion))
    step_timesteps_cache["t"] = step_timesteps(diffusion)
    k = s.num_steps

    def spec_for(seed):
        return CalibrationSpec(num_samples=args.calibration_samples, sampler=s.sampler, num_steps=k,
                               cfg_scale=s.cfg_scale, eta=s.eta, clip_denoised=s.clip_denoised, seed=seed)

    probe_spec = CalibrationSpec(num_samples=args.probe_samples, sampler=s.sampler, num_steps=k, cfg_scale=s.cfg_scale,
                                 eta=s.eta, clip_denoised=s.clip_denoised, seed=1)
    labels = jnp.asarray(np.arange(args.probe_samples) % module.config.num_classes, jnp.int32)
    inputs, y = jax.jit(lambda p: trajectory_inputs(module, p, diffusion, labels, jax.random.key(1), probe_spec))(params)

    recipes = {
        "no smoothing (per-group ranges)": ("htg", dict(shift="none", scale="none")),
        "+ shift (per step)": ("htg", dict(shift="step", scale="none")),
        "+ grouping (shift per group)": ("htg", dict(shift="group", scale="none")),
        "+ scaling (= HTG)": ("htg", {}),
        "minmax": ("minmax", {}),
        "smoothquant": ("smoothquant", {}),
        "ptq4dit-lite": ("ptq4dit-lite", {}),
        "htg G=1": ("htg", dict(num_groups=1)),
        f"htg G=T={k}": ("htg", dict(num_groups=k)),
    }
    if args.recipes:
        wanted = [r.strip() for r in args.recipes.split(",")]
        unknown = [r for r in wanted if r not in recipes]
        if unknown:
            raise SystemExit(f"unknown --recipes {unknown}; allowed: {list(recipes)}")
        recipes = {name: recipes[name] for name in wanted}
    fid_sets = {
        "all": ["minmax", "smoothquant", "ptq4dit-lite", "+ scaling (= HTG)", "htg G=1", f"htg G=T={k}",
                "no smoothing (per-group ranges)", "+ grouping (shift per group)"],
        "main": ["minmax", "smoothquant", "ptq4dit-lite", "+ scaling (= HTG)", "htg G=1", f"htg G=T={k}"],
        "core": ["minmax", "smoothquant", "ptq4dit-lite", "+ scaling (= HTG)"],
        "none": [],
    }
    if args.fid in fid_sets:
        fid_recipes = fid_sets[args.fid]
    else:
        fid_recipes = [r.strip() for r in args.fid.split(",")]
        if any(r not in recipes for r in fid_recipes):
            raise SystemExit(f"--fid={args.fid!r}: use one of {list(fid_sets)} or comma-separated recipes of {list(recipes)}")
    features = DigitsFeatures()
    fid_labels = jnp.asarray(np.arange(args.num_fid_samples) % module.config.num_classes, jnp.int32)

    def fid_of(apply_fn, sample_params, seed):
        sample = make_class_sampler(module, diffusion, sampler=s.sampler, cfg_scale=s.cfg_scale, eta=s.eta,
                                    clip_denoised=s.clip_denoised, apply_fn=apply_fn)
        x = np.asarray(sample(sample_params, fid_labels, jax.random.key(1234 + seed)))
        if not np.isfinite(x).all():
            raise FloatingPointError("non-finite samples")
        r = evaluate_digits(x, features=features)
        out = {key: r[key] for key in ("digits_fid", "digits_precision", "digits_recall")}
        out["seed"] = seed
        if seed in float_samples:  # same noise and labels: how far each sample moved from the float model's
            out["rmse_vs_float"] = float(np.sqrt(((x - float_samples[seed]) ** 2).mean()))
        else:
            float_samples[seed] = x
        return out

    float_samples = {}
    results = {"float": {"bytes": model_bytes(params), "fid_runs": []}}
    results["setup"] = dict(checkpoint=args.checkpoint, step=args.step, sampler=f"{s.sampler}-{k}",
                            cfg_scale=s.cfg_scale, calibration_samples=args.calibration_samples,
                            probe_samples=args.probe_samples, num_fid_samples=args.num_fid_samples, seeds=seeds,
                            batch_for_timing=s.batch_size, backend=jax.default_backend(), family=family,
                            layer_kinds=[[key, header] for key, header, _ in kinds])
    spec = spec_for(seeds[0])
    stats = None
    for seed in seeds:  # seed-major: a run stopped early still holds complete seeds
        t0 = time.perf_counter()
        seed_stats = calibrate(module, params, diffusion, spec_for(seed), plan.targets, plan.block_pattern)
        stats = seed_stats if stats is None else stats
        print(f"seed {seed} calibration: {args.calibration_samples} trajectories of {s.sampler}-{k}, "
              f"{time.perf_counter() - t0:.1f}s", flush=True)
        if fid_recipes:
            t0 = time.perf_counter()
            results["float"]["fid_runs"].append(fid_of(None, params, seed))
            print(f"seed {seed} float", results["float"]["fid_runs"][-1], f"{time.perf_counter() - t0:.1f}s", flush=True)
        for bits in [int(b) for b in args.bits.split(",")]:
            for name, (method, overrides) in ([] if args.skip_recipes else recipes.items()):
                t0 = time.perf_counter()
                qcfg = method_config(method, weight_bits=bits, act_bits=8, **overrides)
                qmodel, _ = quantize_dit(module, params, diffusion, spec_for(seed), qcfg, stats=seed_stats)
                row = results.setdefault(f"W{bits}A8 {name}", {"fid_runs": []})
                if seed == seeds[0]:  # per-layer errors and size: the first seed's calibration
                    row.update(errors=layer_errors(module, params, qmodel, inputs, y, s.cfg_scale, kinds),
                               bytes=model_bytes(params, qmodel, bits), groups=qmodel.meta["num_groups"])
                if name in fid_recipes:
                    row["fid_runs"].append(fid_of(quantize_apply_fn(module, qmodel), variables(params, qmodel)["params"],
                                                  seed))
                print(f"seed {seed} W{bits}A8 {name}", json.dumps(row["fid_runs"][-1] if row["fid_runs"] else row),
                      f"{time.perf_counter() - t0:.1f}s", flush=True)
                save()

    if args.timing_rounds <= 0:
        save()
        print_tables(results)
        return
    # Sampling time: one batch of the digits config, float / fake-quant / integer, interleaved.
    qmodel, _ = quantize_dit(module, params, diffusion, spec, method_config("htg"), stats=stats)
    batch = jnp.asarray(np.arange(s.batch_size) % module.config.num_classes, jnp.int32)
    timing_key = jax.random.key(1234 + seeds[0])
    runs = {"float": (None, params)}
    for mode in ("fake", "integer"):
        runs[mode] = (quantized_apply(module, qmodel.meta, mode), variables(params, qmodel)["params"])
    samplers = {m: make_class_sampler(module, diffusion, sampler=s.sampler, cfg_scale=s.cfg_scale, eta=s.eta,
                                      clip_denoised=s.clip_denoised, apply_fn=fn) for m, (fn, _) in runs.items()}
    outs = {m: np.asarray(samplers[m](runs[m][1], batch, timing_key)) for m in runs}  # compile
    times = {m: [] for m in runs}
    for _ in range(args.timing_rounds):
        for m in runs:
            t0 = time.perf_counter()
            jax.block_until_ready(samplers[m](runs[m][1], batch, timing_key))
            times[m].append(time.perf_counter() - t0)
    results["timing"] = {m: {"median_s": float(np.median(v)), "all_s": v} for m, v in times.items()}
    results["timing"]["integer_vs_fake_max_abs_diff"] = float(np.abs(outs["integer"] - outs["fake"]).max())
    results["timing"]["fake_vs_float_max_abs_diff"] = float(np.abs(outs["fake"] - outs["float"]).max())
    save()
    print_tables(results)


def merge_results(paths):
    """One results dict from runs of the same setup with different seeds, or with other recipes
    (errors/sizes/timing: the first run's that has them)."""
    merged = None
    for path in paths:
        with open(path) as f:
            res = json.load(f)
        if merged is None:
            merged = res
            continue
        keys = ("checkpoint", "step", "sampler", "cfg_scale", "calibration_samples", "num_fid_samples")
        if any(merged["setup"].get(k) != res["setup"].get(k) for k in keys):
            raise SystemExit(f"{path}: another setup than {paths[0]} ({[k for k in keys if merged['setup'].get(k) != res['setup'].get(k)]})")
        merged["setup"]["seeds"] = merged["setup"]["seeds"] + res["setup"]["seeds"]
        if "timing" in res and "timing" not in merged:
            merged["timing"] = res["timing"]
        for name, row in res.items():
            if isinstance(row, dict) and "fid_runs" in row:
                merged.setdefault(name, row)
                if merged[name] is not row:  # a seed already present is the same computation (float rows)
                    have = {r["seed"] for r in merged[name]["fid_runs"]}
                    merged[name]["fid_runs"] += [r for r in row["fid_runs"] if r["seed"] not in have]
    return merged


def mean_std(values, fmt):
    """``"m +- sd (n)"`` (sample std, ddof=1) or the single value."""
    v = np.asarray(values, np.float64)
    if v.size == 1:
        return format(v[0], fmt)
    return f"{format(v.mean(), fmt)} ± {format(v.std(ddof=1), fmt.lstrip('+'))}"


def fid_cells(row, float_runs, num_seeds=None):
    """FID, paired FID difference to the float model of the same seed, precision, recall, RMSE
    (the FID cell says ``(n=k)`` when only k of the ``num_seeds`` seeds finished)."""
    runs = row.get("fid_runs", [])
    if not runs:
        return "- | - | - | - | -"
    partial = f" (n={len(runs)})" if num_seeds and len(runs) < num_seeds else ""
    base = {r["seed"]: r["digits_fid"] for r in float_runs}
    delta = [r["digits_fid"] - base[r["seed"]] for r in runs if r["seed"] in base]
    cells = [mean_std([r["digits_fid"] for r in runs], ".2f") + partial, mean_std(delta, "+.2f") if delta else "-",
             mean_std([r["digits_precision"] for r in runs], ".3f"), mean_std([r["digits_recall"] for r in runs], ".3f"),
             mean_std([r["rmse_vs_float"] for r in runs], ".4f") if "rmse_vs_float" in runs[0] else "0"]
    return " | ".join(cells)


def print_tables(results):
    setup = results.get("setup", {})
    float_runs = results["float"].get("fid_runs", [])
    seeds = sorted({r["seed"] for r in float_runs}) if float_runs else setup.get("seeds", [])  # the finished ones
    setup = {**setup, "seeds": seeds}
    kinds = setup.get("layer_kinds") or [[key, header] for key, header, _ in LAYER_KINDS["dit"]]  # older JSONs: DiT
    keys, heads = [k for k, _ in kinds], " | ".join(h for _, h in kinds)
    dashes = "|---" * len(kinds)

    def err(e, key, which):
        return f"{e[key][which]:.2e}" if key in e else "-"

    print(f"\n{setup.get('family', 'dit')}, {setup.get('sampler')}, guidance {setup.get('cfg_scale')}, {setup.get('num_fid_samples')} FID samples, "
          f"seeds {seeds} (mean ± sample std over seeds; ΔFID = FID - float FID of the same seed)")
    print(f"\n| recipe | {heads} | act-only rel. err (W float, A8) |")
    print(f"|---{dashes}|---|")
    for name, row in results.items():
        if name.startswith("W8A8") and "errors" in row:
            e = row["errors"]
            print(f"| {name[5:]} | " + " | ".join(err(e, k, "act") for k in keys) + " | |")
    f = results["float"]
    for bits in (8, 4):
        print(f"\n| W{bits}A8 recipe | {heads} | digits FID | ΔFID vs float | precision | recall | "
              f"RMSE vs float samples | MB |")
        print(f"|---{dashes}|---|---|---|---|---|---|")
        runs = f.get("fid_runs", [])
        cells = (f"{mean_std([r['digits_fid'] for r in runs], '.2f')} | 0 | "
                 f"{mean_std([r['digits_precision'] for r in runs], '.3f')} | "
                 f"{mean_std([r['digits_recall'] for r in runs], '.3f')} | 0" if runs else "- | - | - | - | -")
        print(f"| float | {' | '.join('-' for _ in kinds)} | {cells} | {f['bytes'] / 1e6:.2f} |")
        for name, row in results.items():
            if name.startswith(f"W{bits}A8") and "errors" in row:
                e = row["errors"]
                print(f"| {name[5:]} | " + " | ".join(err(e, k, "both") for k in keys)
                      + f" | {fid_cells(row, f.get('fid_runs', []), len(setup.get('seeds', [])))} | {row['bytes'] / 1e6:.2f} |")
    t = results.get("timing")
    if t:
        print("\n| execution | one batch, median s |")
        print("|---|---|")
        for m in ("float", "fake", "integer"):
            print(f"| {m} | {t[m]['median_s']:.2f} |")
        print(f"max |integer - fake| over the batch's samples: {t['integer_vs_fake_max_abs_diff']:.2e}; "
              f"max |fake - float|: {t['fake_vs_float_max_abs_diff']:.2e}")


if __name__ == "__main__":
    main()
