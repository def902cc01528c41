"""SD-VAE encode/decode throughput: jaxlab's Flax AutoencoderKL next to diffusers', in one process.

  python -m benchmarks.vae                       # sd-vae-ft-ema architecture, 256px, batch 8, float32
  python -m benchmarks.vae --size=128 --batch=4 --rounds=3
  python -m benchmarks.vae --bf16_only --size=64   # just the bfloat16-vs-float32 difference

Both run the same random weights (a diffusers ``AutoencoderKL`` with the sd-vae-ft-ema config,
converted with ``from_torch``): images/s of ``encode`` (posterior mean and logvar) and of
``decode`` (latents -> images), median over ``--rounds`` interleaved rounds after a warm-up (jax
compiles there), the jaxlab/diffusers ratio, and the largest difference between the two outputs.
Then the bfloat16 difference: jaxlab with ``dtype="bfloat16"`` against float32 on the same
input, as a fraction of the float32 output's range. Random weights stand in for the real
checkpoint (not downloadable here), so the bf16 figure is indicative; docs/vae.md has the numbers.
Interleaving matters on a shared machine: both libraries see the same background load.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import device_name, print_table
from jaxlab.convert import from_torch
from jaxlab.models.vae import AutoencoderKL

SD_VAE_CONFIG = dict(  # stabilityai/sd-vae-ft-ema config.json
    block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=2, sample_size=256,
)


def models(seed: int = 0, config: dict | None = None):
    """``(diffusers model, jaxlab module, jaxlab params)`` with the same random weights (sd-vae-ft-ema's
    architecture unless ``config`` gives other ``AutoencoderKL`` kwargs)."""
    import torch
    from diffusers import AutoencoderKL as TorchVAE

    torch.manual_seed(seed)
    ref = TorchVAE(**(config or SD_VAE_CONFIG)).eval()
    module, params = from_torch("vae", dict(ref.config), ref.state_dict())
    return ref, module, jax.device_put(params)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def throughput(size: int, batch: int, rounds: int, config: dict | None = None) -> tuple[list[dict], dict]:
    """Table rows (images/s of both libraries, ratio, output difference) and the raw differences."""
    import torch

    ref, module, params = models(config=config)
    x_np = np.random.default_rng(0).uniform(-1, 1, (batch, 3, size, size)).astype(np.float32)
    x_t, x_j = torch.from_numpy(x_np), jnp.asarray(x_np.transpose(0, 2, 3, 1))
    encode = jax.jit(lambda p, x: module.apply({"params": p}, x, method="encode"))
    decode = jax.jit(lambda p, z: module.apply({"params": p}, z, method="decode"))
    with torch.no_grad():
        mean_t = ref.encode(x_t).latent_dist.mean  # warm-up
        image_t = ref.decode(mean_t).sample
    mean_j, _ = jax.block_until_ready(encode(params, x_j))  # compiles
    image_j = jax.block_until_ready(decode(params, mean_j))
    diffs = {
        "encode mean": float(np.abs(np.asarray(mean_j).transpose(0, 3, 1, 2) - mean_t.numpy()).max()),
        "decode": float(np.abs(np.asarray(image_j).transpose(0, 3, 1, 2) - image_t.numpy()).max()),
        "decode range": float(image_t.max() - image_t.min()),
    }
    times = {k: [] for k in ("jax encode", "torch encode", "jax decode", "torch decode")}
    for _ in range(rounds):  # interleaved: both see the same background load
        with torch.no_grad():
            times["torch encode"].append(_timed(lambda: ref.encode(x_t).latent_dist.mean))
            times["torch decode"].append(_timed(lambda: ref.decode(mean_t).sample))
        times["jax encode"].append(_timed(lambda: jax.block_until_ready(encode(params, x_j))))
        times["jax decode"].append(_timed(lambda: jax.block_until_ready(decode(params, mean_j))))
    rows = []
    for op in ("encode", "decode"):
        t_j, t_t = statistics.median(times[f"jax {op}"]), statistics.median(times[f"torch {op}"])
        rows.append(dict(op=op, size=size, batch=batch, jaxlab_img_s=f"{batch / t_j:.2f}",
                         diffusers_img_s=f"{batch / t_t:.2f}", ratio=f"{t_t / t_j:.2f}",
                         max_abs_diff=f"{diffs['encode mean' if op == 'encode' else 'decode']:.2e}"))
    return rows, diffs


def bf16_difference(size: int, batch: int, config: dict | None = None) -> dict:
    """Largest |bf16 - f32| of encode mean and decode, relative to the float32 output's range."""
    _, module, params = models(config=config)
    bf16 = AutoencoderKL(module.config.replace(dtype="bfloat16"))
    x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32))
    out = {}
    for name, m in (("f32", module), ("bf16", bf16)):
        mean, _ = jax.jit(lambda p, x, m=m: m.apply({"params": p}, x, method="encode"))(params, x)
        out[name] = (np.asarray(mean), np.asarray(jax.jit(lambda p, z, m=m: m.apply({"params": p}, z, method="decode"))(
            params, out["f32"][0] if name == "bf16" else mean)))
    rel = lambda a, b: float(np.abs(a - b).max() / (b.max() - b.min()))  # noqa: E731
    return {"encode mean": rel(out["bf16"][0], out["f32"][0]), "decode": rel(out["bf16"][1], out["f32"][1])}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bf16_size", type=int, default=64)
    parser.add_argument("--bf16_only", action="store_true")
    args = parser.parse_args()
    import torch

    print(f"device: {device_name()}, torch threads: {torch.get_num_threads()} (absolute numbers depend on the load)")
    if not args.bf16_only:
        rows, diffs = throughput(args.size, args.batch, args.rounds)
        print_table(rows, ["op", "size", "batch", "jaxlab_img_s", "diffusers_img_s", "ratio", "max_abs_diff"])
        print(f"(ratio = jaxlab speed / diffusers speed; decode output range {diffs['decode range']:.2f})")
    rel = bf16_difference(args.bf16_size, 2)
    print(f"bfloat16 vs float32 (jaxlab, {args.bf16_size}px, batch 2): max |diff| / range of the f32 output = "
          f"encode mean {rel['encode mean']:.2e}, decode {rel['decode']:.2e}")


if __name__ == "__main__":
    main()
