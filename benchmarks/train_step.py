"""Training-step throughput of DiT on this machine (the jitted, sharded step launch/train.py runs).

  python -m benchmarks.train_step                       # DiT-S/2 on 32x32x4 latents, batch 8
  python -m benchmarks.train_step --variant=B-2 --batch=16 --dtype=bfloat16
  python -m benchmarks.train_step --family=udit --variant=S  # any configs/<family>.py variant

One step = diffusion loss forward + backward + AdamW + EMA update, on random latents and labels
(no input pipeline). Prints steps/s and examples/s (median over --repeats timed runs of --steps
steps each, after compilation), the FLOPs XLA counts for one step (hardware FLOPs: remat recompute
and optimizer included), and their utilisation of this machine's measured float32 matmul
throughput (CPU) or the device's datasheet bf16 peak (TPU/GPU). Model-FLOPs MFU (no recompute)
per dtype: ``benchmarks.accelerator_suite``.
"""

import argparse
import importlib
import statistics
import time

import jax
import numpy as np

from jaxlab.train import perf
from jaxlab.train import sharding as sh
from jaxlab.train.optim import make_optimizer
from jaxlab.train.state import create_state, state_shardings
from jaxlab.train.step import make_train_step
from jaxlab.train.task import task_from_config


def bench(variant: str, batch: int, dtype: str, steps: int, repeats: int, family: str = "dit") -> dict:
    config = importlib.import_module(f"configs.{family}").get_config(variant)
    config.model.dtype = dtype
    config.training.global_batch_size = batch
    mesh = sh.make_mesh(dict(config.mesh))
    task = task_from_config(config)
    cfg = task.model_config
    optimizer, schedule = make_optimizer(config.optimizer, config.training.num_steps)
    example = {"image": np.zeros((cfg.input_size, cfg.input_size, cfg.in_channels), np.float32), "label": np.int32(0)}
    _, shardings = state_shardings(task, optimizer, 0, example, mesh)
    state = create_state(task, optimizer, 0, example, shardings)
    rng = np.random.default_rng(0)
    batch_arrays = sh.global_batch(
        {"image": rng.standard_normal((batch,) + example["image"].shape).astype(np.float32),
         "label": rng.integers(0, cfg.num_classes, batch).astype(np.int32)},
        mesh,
    )
    step = make_train_step(task, optimizer, schedule, config.training.ema_decay, mesh, shardings,
                           {"image": 4, "label": 1})
    start = time.perf_counter()
    lowered = step.lower(state, batch_arrays)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    flops = perf.flops_per_device(lowered, mesh.size)
    state, metrics = compiled(state, batch_arrays)  # warm-up
    jax.block_until_ready(metrics)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics = compiled(state, batch_arrays)
        jax.block_until_ready(metrics)
        times.append((time.perf_counter() - start) / steps)
    seconds = statistics.median(times)
    return dict(family=family, variant=variant, batch=batch, dtype=dtype, params=sum(x.size for x in jax.tree.leaves(state.params)),
                step_ms=1e3 * seconds, steps_per_sec=1 / seconds, examples_per_sec=batch / seconds,
                gflop_per_step=flops / 1e9, compile_s=compile_s, flops_per_device=flops)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="dit", help="configs/<family>.py (dit, udit, dic)")
    parser.add_argument("--variant", default="S-2", help="config variant (default S-2: DiT-S/2, 32x32x4)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--steps", type=int, default=10, help="steps per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    peak, source = perf.peak_flops_per_device()
    result = bench(args.variant, args.batch, args.dtype, args.steps, args.repeats, args.family)
    device = jax.devices()[0]
    print(f"device: {device.platform} {device.device_kind} x{jax.device_count()}; peak {peak / 1e9:.1f} GFLOP/s ({source})")
    print(f"{result['family']} {result['variant']} ({result['params'] / 1e6:.1f}M params), batch {result['batch']}, {result['dtype']}: "
          f"compile {result['compile_s']:.1f}s")
    print(f"  {result['step_ms']:.1f} ms/step = {result['steps_per_sec']:.2f} steps/s = "
          f"{result['examples_per_sec']:.1f} examples/s")
    mfu = perf.mfu(result["flops_per_device"], result["steps_per_sec"], peak)
    print(f"  {result['gflop_per_step']:.1f} GFLOP/step (XLA count: hardware FLOPs, remat recompute and optimizer "
          f"included) -> {result['gflop_per_step'] * result['steps_per_sec']:.1f} GFLOP/s, hardware FLOPs "
          f"utilisation {mfu:.1%} (model-FLOPs MFU: benchmarks.accelerator_suite)")


if __name__ == "__main__":
    main()
