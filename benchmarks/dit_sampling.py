"""DDIM sampling throughput of a class-conditional image backbone on this machine.

  python -m benchmarks.dit_sampling                # DiT-S/2, 32x32x4 latents, batch 8, DDIM-50
  python -m benchmarks.dit_sampling --preset=DiT-B/2 --steps=50 --batch=8 --cfg_scale 4
  python -m benchmarks.dit_sampling --family=udit --preset=U-DiT-S

Prints, per setting: the DDIM wall time (median over --repeats runs after compilation), the
model FLOPs it implies (XLA's count of one forward x steps), and the achieved fraction of this
machine's own matmul throughput, measured in the same run with a large float32 ``jnp.dot``.
U-DiT is sampled in its re-parameterised (fused) form, as the official ``eval()`` does.
"""

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp

from benchmarks.common import (
    device_name,
    matmul_peak_flops,
    model_flops,
    print_table,
    time_fn,
)
from jaxlab.diffusion.pipeline import make_class_sampler, sampling_diffusion
from jaxlab.models import build_model
from jaxlab.models.udit import UDiT, reparameterize


def inference_model(family: str, preset: str, dtype: str = "float32", seed: int = 0):
    """``(module, params)``: random weights with the zero-initialised layers perturbed, so sampling does real work."""
    module = build_model(family, preset, dtype=dtype)
    cfg = module.config
    x = jnp.zeros((1, cfg.input_size, cfg.input_size, cfg.in_channels))
    t = jnp.zeros((1,), jnp.int32)
    params = nn.unbox(jax.jit(module.init)(jax.random.key(seed), x, t, t)["params"])
    params = jax.tree_util.tree_map(lambda p: p + 0.01, params)
    if family == "udit":
        cfg, params = reparameterize(cfg, params)
        module = UDiT(cfg)
    return module, params


def forward_flops(module, params, batch: int) -> float:
    """FLOPs of one forward pass at ``batch`` (``benchmarks.common.model_flops``)."""
    cfg = module.config
    x = jnp.zeros((batch, cfg.input_size, cfg.input_size, cfg.in_channels))
    t = jnp.zeros((batch,), jnp.int32)
    return model_flops(lambda p, x, t: module.apply({"params": p}, x, t, t), params, x, t)


def bench(family: str, preset: str, batch: int, steps: int, cfg_scale: float, dtype: str, repeats: int, peak: float):
    module, params = inference_model(family, preset, dtype)
    cfg = module.config
    diffusion = sampling_diffusion("ddim", steps, cfg.learn_sigma)
    sample = make_class_sampler(module, diffusion, sampler="ddim", cfg_scale=cfg_scale)
    labels = jnp.arange(batch) % cfg.num_classes
    seconds = time_fn(sample, params, labels, jax.random.key(0), repeats=repeats)
    flops = steps * forward_flops(module, params, 2 * batch if cfg_scale > 1 else batch)
    return dict(
        model=f"{preset} {cfg.input_size}x{cfg.input_size}x{cfg.in_channels}",
        batch=batch,
        cfg=cfg_scale,
        dtype=dtype,
        steps=steps,
        seconds=f"{seconds:.3f}",
        img_per_s=f"{batch / seconds:.2f}",
        model_GFLOP=f"{flops / 1e9:.1f}",
        GFLOP_per_s=f"{flops / seconds / 1e9:.1f}",
        frac_of_matmul_peak=f"{flops / seconds / peak:.2f}",
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="dit", help="model family: dit, udit, dic")
    parser.add_argument("--preset", default="DiT-S/2")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--cfg_scale", type=float, nargs="+", default=[1.0, 4.0])
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    peak = matmul_peak_flops()
    print(f"device {device_name()}; measured float32 matmul peak {peak / 1e9:.1f} GFLOP/s (2048^3 jnp.dot)")
    rows = [bench(args.family, args.preset, args.batch, args.steps, s, args.dtype, args.repeats, peak)
            for s in args.cfg_scale]
    print_table(rows, list(rows[0]))


if __name__ == "__main__":
    main()
