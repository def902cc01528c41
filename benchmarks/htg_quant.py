"""HTG post-training quantisation of a digits DiT: per-layer errors, digits FID, size and speed.

  python -m benchmarks.htg_quant --checkpoint=/tmp/digits_dit --num_fid_samples=200 --json=/tmp/htg.json

Everything on one float checkpoint, calibrated once (``--calibration_samples`` trajectories of
the digits config's sampler: DDIM-50, guidance 4), every recipe built from the same statistics:

1. per-layer activation-quantisation error, HTG ablation: relative output error
   ``sum (Q(X^) W^ - X^ W^)^2 / sum (X W)^2`` of each linear with only its input quantised
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
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs.dit import get_config
from jaxlab.config_utils import to_dict
from jaxlab.diffusion.pipeline import make_class_sampler, sampling_diffusion
from jaxlab.eval.digits_features import DigitsFeatures, evaluate_digits
from jaxlab.quant.calibration import CalibrationSpec, calibrate, step_timesteps, trajectory_inputs
from jaxlab.quant.config import method_config
from jaxlab.quant.ptq import quantize_dit
from jaxlab.quant.quantizers import pack_int4
from jaxlab.quant.runtime import quantized_apply, variables
from jaxlab.train.params_io import load_model

LAYERS = ("attn/qkv", "attn/proj", "mlp/fc1", "mlp/fc2")


def layer_errors(module, params, qmodel, inputs, y, cfg_scale):
    """``{kind: {"act": rel, "both": rel}}`` per layer type (summed over blocks and steps)."""
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

    sums = run(qmodel.tables, inputs)
    out = {}
    for kind in LAYERS:
        tot = {"act": 0.0, "both": 0.0, "ref": 0.0}
        for block, sub in sums.items():
            node = sub
            for name in kind.split("/"):
                node = node[name]
            for key in tot:
                tot[key] += float(np.sum(node[key][0]))
        out[kind] = {"act": tot["act"] / tot["ref"], "both": tot["both"] / tot["ref"]}
    return out


step_timesteps_cache = {}


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
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--variant", default="digits")
    ap.add_argument("--calibration_samples", type=int, default=32)
    ap.add_argument("--probe_samples", type=int, default=8)
    ap.add_argument("--num_fid_samples", type=int, default=200)
    ap.add_argument("--fid", default="all", help="all | main (fewer FID runs) | none")
    ap.add_argument("--timing_rounds", type=int, default=3)
    ap.add_argument("--json", default=None, help="results JSON (must not exist; rewritten after every row)")
    ap.add_argument("--skip_recipes", action="store_true", help="only the size/timing section")
    args = ap.parse_args()
    if args.json and os.path.exists(args.json):
        raise SystemExit(f"{args.json} exists; choose a new --json path")

    def save():
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)

    config = get_config(args.variant)
    s = config.sample
    module, params = load_model(args.checkpoint)
    diffusion = sampling_diffusion(s.sampler, s.num_steps, module.config.learn_sigma, **to_dict(config.diffusion))
    step_timesteps_cache["t"] = step_timesteps(diffusion)
    k = s.num_steps
    spec = CalibrationSpec(num_samples=args.calibration_samples, sampler=s.sampler, num_steps=k, cfg_scale=s.cfg_scale,
                           eta=s.eta, clip_denoised=s.clip_denoised, seed=0)
    t0 = time.perf_counter()
    stats = calibrate(module, params, diffusion, spec)
    print(f"calibration: {args.calibration_samples} trajectories, {time.perf_counter() - t0:.1f}s", flush=True)
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
    fid_recipes = {
        "all": ["minmax", "smoothquant", "ptq4dit-lite", "+ scaling (= HTG)", "htg G=1", f"htg G=T={k}",
                "no smoothing (per-group ranges)", "+ grouping (shift per group)"],
        "main": ["minmax", "smoothquant", "ptq4dit-lite", "+ scaling (= HTG)", "htg G=1", f"htg G=T={k}"],
        "none": [],
    }[args.fid]
    features = DigitsFeatures()
    fid_labels = jnp.asarray(np.arange(args.num_fid_samples) % module.config.num_classes, jnp.int32)
    fid_key = jax.random.key(1234)

    def fid_of(apply_fn, sample_params):
        sample = make_class_sampler(module, diffusion, sampler=s.sampler, cfg_scale=s.cfg_scale, eta=s.eta,
                                    clip_denoised=s.clip_denoised, apply_fn=apply_fn)
        x = np.asarray(sample(sample_params, fid_labels, fid_key))
        if not np.isfinite(x).all():
            raise FloatingPointError("non-finite samples")
        r = evaluate_digits(x, features=features)
        out = {key: r[key] for key in ("digits_fid", "digits_precision", "digits_recall")}
        if "float" in float_samples:  # same noise and labels: how far each sample moved from the float model's
            out["rmse_vs_float"] = float(np.sqrt(((x - float_samples["float"]) ** 2).mean()))
        else:
            float_samples["float"] = x
        return out

    float_samples = {}

    results = {"float": {"bytes": model_bytes(params)}}
    if fid_recipes:
        results["float"].update(fid_of(None, params))
        print("float", results["float"], flush=True)
    for bits in (8, 4):
        for name, (method, overrides) in ([] if args.skip_recipes else recipes.items()):
            qcfg = method_config(method, weight_bits=bits, act_bits=8, **overrides)
            qmodel, _ = quantize_dit(module, params, diffusion, spec, qcfg, stats=stats)
            row = {"errors": layer_errors(module, params, qmodel, inputs, y, s.cfg_scale),
                   "bytes": model_bytes(params, qmodel, bits), "groups": qmodel.meta["num_groups"]}
            if name in fid_recipes:
                row.update(fid_of(quantized_apply(module, qmodel.meta, "fake"), variables(params, qmodel)["params"]))
            results[f"W{bits}A8 {name}"] = row
            print(f"W{bits}A8 {name}", json.dumps(row), flush=True)
            save()

    # Sampling time: one batch of the digits config, float / fake-quant / integer, interleaved.
    qmodel, _ = quantize_dit(module, params, diffusion, spec, method_config("htg"), stats=stats)
    batch = jnp.asarray(np.arange(s.batch_size) % module.config.num_classes, jnp.int32)
    runs = {"float": (None, params)}
    for mode in ("fake", "integer"):
        runs[mode] = (quantized_apply(module, qmodel.meta, mode), variables(params, qmodel)["params"])
    samplers = {m: make_class_sampler(module, diffusion, sampler=s.sampler, cfg_scale=s.cfg_scale, eta=s.eta,
                                      clip_denoised=s.clip_denoised, apply_fn=fn) for m, (fn, _) in runs.items()}
    outs = {m: np.asarray(samplers[m](runs[m][1], batch, fid_key)) for m in runs}  # compile
    times = {m: [] for m in runs}
    for _ in range(args.timing_rounds):
        for m in runs:
            t0 = time.perf_counter()
            jax.block_until_ready(samplers[m](runs[m][1], batch, fid_key))
            times[m].append(time.perf_counter() - t0)
    results["timing"] = {m: {"median_s": float(np.median(v)), "all_s": v} for m, v in times.items()}
    results["timing"]["integer_vs_fake_max_abs_diff"] = float(np.abs(outs["integer"] - outs["fake"]).max())
    results["timing"]["fake_vs_float_max_abs_diff"] = float(np.abs(outs["fake"] - outs["float"]).max())
    results["setup"] = dict(checkpoint=args.checkpoint, sampler=f"{s.sampler}-{k}", cfg_scale=s.cfg_scale,
                            calibration_samples=args.calibration_samples, probe_samples=args.probe_samples,
                            num_fid_samples=args.num_fid_samples, batch_for_timing=s.batch_size,
                            backend=jax.default_backend())
    save()
    print_tables(results)


def print_tables(results):
    print("\n| recipe | qkv | proj | fc1 | fc2 | act-only rel. err (W float, A8) |")
    print("|---|---|---|---|---|---|")
    for name, row in results.items():
        if name.startswith("W8A8"):
            e = row["errors"]
            print(f"| {name[5:]} | " + " | ".join(f"{e[k]['act']:.2e}" for k in LAYERS) + " | |")
    for bits in (8, 4):
        print(f"\n| W{bits}A8 recipe | qkv | proj | fc1 | fc2 | digits FID | precision | recall | RMSE vs float samples | MB |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        f = results["float"]
        if "digits_fid" in f:
            print(f"| float | - | - | - | - | {f['digits_fid']:.2f} | {f['digits_precision']:.3f} | {f['digits_recall']:.3f} | 0 | {f['bytes'] / 1e6:.2f} |")
        for name, row in results.items():
            if name.startswith(f"W{bits}A8"):
                e = row["errors"]
                fid = (f"{row['digits_fid']:.2f} | {row['digits_precision']:.3f} | {row['digits_recall']:.3f} | {row['rmse_vs_float']:.3f}"
                       if "digits_fid" in row else "- | - | - | -")
                print(f"| {name[5:]} | " + " | ".join(f"{e[k]['both']:.2e}" for k in LAYERS) + f" | {fid} | {row['bytes'] / 1e6:.2f} |")
    t = results["timing"]
    print("\n| execution | one batch, median s |")
    print("|---|---|")
    for m in ("float", "fake", "integer"):
        print(f"| {m} | {t[m]['median_s']:.2f} |")
    print(f"max |integer - fake| over the batch's samples: {t['integer_vs_fake_max_abs_diff']:.2e}; "
          f"max |fake - float|: {t['fake_vs_float_max_abs_diff']:.2e}")


if __name__ == "__main__":
    main()
