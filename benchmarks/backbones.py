"""DiT vs U-DiT vs DiC at matched FLOPs: sampling and training throughput on this machine.

  python -m benchmarks.backbones                   # the S size, 32x32x4 latents, batch 8
  python -m benchmarks.backbones --sizes S B       # B as well (on a CPU: about 20 GB of memory, an hour)

Pairs of presets with about the same FLOPs per forward (the papers' "GFLOPs", which are
multiply-accumulates): DiT-S/2 (6.06), U-DiT-S (6.04), DiC-S (5.9); DiT-B/2 (23.0), U-DiT-B
(22.2), DiC-B (23.5). For each: XLA's FLOPs per forward (batch 1, 2 FLOPs per MAC), a DDIM step
(batch 8, no guidance), a train step (batch 8: loss forward + backward + AdamW + EMA), and the
achieved GFLOP/s of each, relative to DiT of the same size ("x DiT"): the throughput per GFLOP.
Each model is measured in its own process, so one model's compiled programs and buffers do not
add to the next one's memory.
"""

import argparse
import json
import subprocess
import sys

import jax
import jax.numpy as jnp

from benchmarks import train_step
from benchmarks.common import device_name, matmul_peak_flops, print_table, time_fn
from benchmarks.dit_sampling import forward_flops, inference_model
from jaxlab.diffusion.pipeline import make_class_sampler, sampling_diffusion

# size -> [(family, preset, configs/<family>.py variant)]
MATCHED = {
    "S": [("dit", "DiT-S/2", "S-2"), ("udit", "U-DiT-S", "S"), ("dic", "DiC-S", "S")],
    "B": [("dit", "DiT-B/2", "B-2"), ("udit", "U-DiT-B", "B"), ("dic", "DiC-B", "B")],
}


def measure(family: str, preset: str, variant: str, batch: int, steps: int, repeats: int) -> dict:
    module, params = inference_model(family, preset)
    sample = make_class_sampler(module, sampling_diffusion("ddim", steps, module.config.learn_sigma),
                                sampler="ddim", cfg_scale=1.0)
    labels = jnp.arange(batch) % module.config.num_classes
    sample_step_s = time_fn(sample, params, labels, jax.random.key(0), repeats=repeats) / steps
    gflop_fwd = forward_flops(module, params, 1) / 1e9
    train = train_step.bench(variant, batch, "float32", steps=3, repeats=repeats, family=family)
    return dict(
        model=preset,
        GFLOP_fwd=gflop_fwd,
        sample_ms_per_step=1e3 * sample_step_s,
        sample_GFLOP_s=gflop_fwd * batch / sample_step_s,
        train_ms_per_step=train["step_ms"],
        train_GFLOP_s=train["gflop_per_step"] * train["steps_per_sec"],
    )


def measure_in_subprocess(entry: tuple[str, str, str], args) -> dict:
    command = [sys.executable, "-m", "benchmarks.backbones", "--only", ":".join(entry), "--batch", str(args.batch),
               "--steps", str(args.steps), "--repeats", str(args.repeats)]
    out = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["S"], choices=sorted(MATCHED))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps per timed sampling run")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", help=argparse.SUPPRESS)  # family:preset:variant, prints one JSON line
    args = parser.parse_args()
    if args.only:
        print(json.dumps(measure(*args.only.split(":"), args.batch, args.steps, args.repeats)))
        return

    peak = matmul_peak_flops()
    print(f"device {device_name()}; measured float32 matmul peak {peak / 1e9:.1f} GFLOP/s; batch {args.batch}, float32")
    rows = []
    for size in args.sizes:
        results = [measure_in_subprocess(entry, args) for entry in MATCHED[size]]
        dit = results[0]
        for r in results:
            rows.append(dict(
                model=r["model"],
                GFLOP_fwd=f"{r['GFLOP_fwd']:.1f}",
                sample_ms_step=f"{r['sample_ms_per_step']:.0f}",
                sample_GFLOP_s=f"{r['sample_GFLOP_s']:.0f}",
                sample_x_DiT=f"{r['sample_GFLOP_s'] / dit['sample_GFLOP_s']:.2f}",
                train_ms_step=f"{r['train_ms_per_step']:.0f}",
                train_GFLOP_s=f"{r['train_GFLOP_s']:.0f}",
                train_x_DiT=f"{r['train_GFLOP_s'] / dit['train_GFLOP_s']:.2f}",
            ))
    print_table(rows, list(rows[0]))


if __name__ == "__main__":
    main()
