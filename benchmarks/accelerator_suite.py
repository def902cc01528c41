"""The numbers a GPU or TPU user reads, in one command, on one chip (about 6 minutes with compiles).

  python -m benchmarks.accelerator_suite            # on one GPU or TPU chip
  python -m benchmarks.accelerator_suite --tiny     # the same programs at tiny sizes (CPU, tested)

Prints one table:

- DiT-XL/2 bf16 train step on 256px latents (32x32x4) at the largest batch that fits (tried from
  ``--max_batch`` down by halves): steps/s, examples/s, MFU;
- DDIM-50 sampling of 8 images with DiT-XL/2 (bf16, guidance scale 4): seconds;
- U-DiT-B and DiC-B bf16 train steps (batch ``--batch``): steps/s and MFU;
- LLaDA at ~1B parameters (bf16, random weights), block decoding of 256 tokens after a 256-token
  prompt with no / prefix / dual KV cache: tokens/s.

MFU is reported twice: ``mfu_model`` from the model FLOPs (3 x the FLOPs of one forward pass
without rematerialisation, counted by XLA on the forward lowered for CPU, attention included:
forward + backward, no remat recompute, no optimizer) and ``mfu_hw`` from the hardware FLOPs
(XLA's count of the lowered train step: recompute and optimizer included, but not the work inside
the fused attention kernels, which are custom calls; so on GPU/TPU ``mfu_hw`` can read below
``mfu_model``). Both counts are taken before compilation: XLA:GPU's compiled count leaves out the
matmuls it hands to cuBLAS. The peak is the chip's matmul throughput measured here
in the step's dtype (``peak``, "measured bf16"), and, where known, the dense bf16 datasheet peak
(``mfu_model_datasheet``, labelled). Absolute numbers on a shared machine are indicative only.
"""

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import train_step
from benchmarks.common import device_name, print_table, time_fn
from benchmarks.dit_sampling import forward_flops, inference_model
from jaxlab.diffusion.pipeline import make_class_sampler, sampling_diffusion
from jaxlab.train import perf

# ~1.1B-parameter LLaDA (LLaDA-8B's vocabulary and ids, a narrower and shallower trunk).
LLADA_1B = dict(d_model=2048, n_heads=16, n_kv_heads=16, n_layers=16, mlp_hidden_size=5632)
TINY = dict(
    image=dict(input_size=8, hidden_size=64, depth=1, num_heads=2, num_classes=10),
    udit=dict(input_size=8, hidden_size=32, num_heads=2, depth=(1, 1, 1, 1, 1), num_classes=10),
    dic=dict(input_size=8, hidden_size=16, depth=(1, 1, 1, 1, 1), num_classes=10),
    llada=dict(d_model=64, n_heads=2, n_kv_heads=2, n_layers=1, mlp_hidden_size=128, vocab_size=64,
               embedding_size=64, mask_token_id=62, eos_token_id=60, pad_token_id=58),
)


def measured_peak(dtype: str, tiny: bool) -> float:
    """This chip's FLOP/s on a square matmul in ``dtype``."""
    n = 512 if tiny else 8192
    return perf.measure_matmul_flops(n=n, dtype=jnp.dtype(dtype), seconds=0.2 if tiny else 2.0)


def model_flops_per_step(family: str, overrides: dict, batch: int, dtype: str) -> float:
    """3 x XLA's FLOPs of one forward pass (no remat), the model FLOPs of a train step."""
    from jaxlab.models import build_model

    preset = {"dit": "DiT-XL/2", "udit": "U-DiT-B", "dic": "DiC-B"}[family]
    module = build_model(family, preset, dtype=dtype, **overrides)
    cfg = module.config
    x = jnp.zeros((1, cfg.input_size, cfg.input_size, cfg.in_channels))
    t = jnp.zeros((1,), jnp.int32)
    params = jax.eval_shape(module.init, jax.random.key(0), x, t, t)["params"]
    params = jax.tree.map(lambda b: getattr(b, "value", b), params, is_leaf=lambda b: hasattr(b, "value"))
    return 3.0 * forward_flops(module, params, batch)


def train_row(family: str, variant: str, batch: int, dtype: str, overrides: dict, peak: float, datasheet, steps: int):
    result = _bench_with(family, variant, batch, dtype, overrides, steps)
    model = model_flops_per_step(family, overrides, batch, dtype)
    row = dict(
        program=f"{family} {variant} train step", dtype=dtype, batch=batch,
        result=f"{result['steps_per_sec']:.2f} steps/s, {result['examples_per_sec']:.1f} ex/s",
        mfu_model=f"{perf.mfu(model, result['steps_per_sec'], peak):.1%}",
        mfu_hw=f"{perf.mfu(result['flops_per_device'], result['steps_per_sec'], peak):.1%}",
        mfu_model_datasheet="-" if not datasheet else f"{perf.mfu(model, result['steps_per_sec'], datasheet):.1%}",
    )
    return row


def _bench_with(family, variant, batch, dtype, overrides, steps):
    """``benchmarks.train_step.bench`` with model fields overridden (tiny sizes)."""
    import importlib

    module = importlib.import_module(f"configs.{family}")
    original = module.get_config

    def patched(v=None):
        config = original(v)
        config.model.update(overrides)
        if "input_size" in overrides and "image_size" in config.data:
            config.data.image_size = overrides["input_size"]
        return config

    module.get_config = patched
    try:
        return train_step.bench(variant, batch, dtype, steps, 2, family)
    finally:
        module.get_config = original


def largest_batch_row(max_batch: int, dtype: str, overrides: dict, peak, datasheet, steps: int) -> dict:
    batch = max_batch
    while True:
        try:
            return train_row("dit", "XL-2", batch, dtype, overrides, peak, datasheet, steps)
        except Exception as error:  # XLA reports an out-of-memory as RESOURCE_EXHAUSTED
            if "RESOURCE_EXHAUSTED" not in str(error) or batch == 1:
                raise
            print(f"DiT-XL/2 batch {batch} does not fit; trying {batch // 2}")
            batch //= 2


def sampling_row(dtype: str, overrides: dict, steps: int) -> dict:
    if not overrides:
        module, params = inference_model("dit", "DiT-XL/2", dtype)
    else:
        from jaxlab.models import build_model

        module = build_model("dit", "DiT-XL/2", dtype=dtype, **overrides)
        cfg = module.config
        x = jnp.zeros((1, cfg.input_size, cfg.input_size, cfg.in_channels))
        t = jnp.zeros((1,), jnp.int32)
        params = jax.tree.map(lambda p: p + 0.01, jax.jit(module.init)(jax.random.key(0), x, t, t)["params"])
        params = jax.tree.map(lambda b: getattr(b, "value", b), params, is_leaf=lambda b: hasattr(b, "value"))
    sample = make_class_sampler(module, sampling_diffusion("ddim", steps, module.config.learn_sigma),
                                sampler="ddim", cfg_scale=4.0)
    labels = jnp.arange(8) % module.config.num_classes
    seconds = time_fn(sample, params, labels, jax.random.key(0), repeats=2)
    return dict(program=f"DiT-XL/2 DDIM-{steps}, 8 images, cfg 4", dtype=dtype, batch=8,
                result=f"{seconds:.2f} s", mfu_model="-", mfu_hw="-", mfu_model_datasheet="-")


def decoding_rows(dtype: str, fields: dict, prompt_length: int, generate_length: int, block: int) -> list[dict]:
    from jaxlab.dlm.decoding import DecodeConfig, make_decoder
    from jaxlab.models import build_model

    module = build_model("llada", "LLaDA-8B", dtype=dtype, max_sequence_length=prompt_length + generate_length, **fields)
    cfg = module.config
    params = jax.jit(module.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
    params = jax.tree.map(lambda b: getattr(b, "value", b), params, is_leaf=lambda b: hasattr(b, "value"))
    n_params = sum(x.size for x in jax.tree.leaves(params))
    prompt = np.asarray(jax.random.randint(jax.random.key(1), (1, prompt_length), 0, cfg.vocab_size - 8), np.int32)
    base = DecodeConfig(window_type="static", generate_length=generate_length, block_size=block,
                        decode_algo="threshold", decode_param=0.9, mask_id=cfg.mask_token_id,
                        pad_id=cfg.pad_token_id, eos_id=cfg.eos_token_id)
    rows = []
    for cache in ("none", "prefix", "dual"):
        config = dataclasses.replace(base, cache_type=cache)
        run = make_decoder(module, config, 1, prompt_length)
        jax.block_until_ready(run(params, prompt, jax.random.key(0)))
        start = time.perf_counter()
        out = jax.block_until_ready(run(params, prompt, jax.random.key(0)))
        seconds = time.perf_counter() - start
        rows.append(dict(
            program=f"LLaDA {n_params / 1e9:.2f}B block decoding, {cache} cache", dtype=dtype, batch=1,
            result=f"{generate_length / seconds:.1f} tokens/s ({int(out['num_forward'])} forwards)",
            mfu_model="-", mfu_hw="-", mfu_model_datasheet="-",
        ))
    return rows


SECTIONS = ("dit_train", "dit_sampling", "udit", "dic", "llada")


def run(tiny: bool, max_batch: int, batch: int, dtype: str = "bfloat16", sections=SECTIONS) -> list[dict]:
    """The suite's rows, each printed as soon as it is measured (a run cut short keeps what it
    printed). A section that raises becomes a ``failed: ...`` row and the next one runs."""
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    peak = measured_peak(dtype, tiny)
    datasheet = None if dtype != "bfloat16" else perf.datasheet_peak(jax.devices()[0])
    print(f"device: {device_name()}; measured {dtype} matmul peak {peak / 1e12:.2f} TFLOP/s"
          + (f"; datasheet bf16 peak {datasheet / 1e12:.0f} TFLOP/s" if datasheet else ""), flush=True)
    steps = 1 if tiny else 5
    image = TINY["image"] if tiny else {}
    programs = {
        "dit_train": lambda: [largest_batch_row(2 if tiny else max_batch, dtype, image, peak, datasheet, steps)],
        "dit_sampling": lambda: [sampling_row(dtype, image, 2 if tiny else 50)],
        "udit": lambda: [train_row("udit", "B", 2 if tiny else batch, dtype, TINY["udit"] if tiny else {},
                                   peak, datasheet, steps)],
        "dic": lambda: [train_row("dic", "B", 2 if tiny else batch, dtype, TINY["dic"] if tiny else {},
                                  peak, datasheet, steps)],
        "llada": lambda: (decoding_rows(dtype, TINY["llada"], 8, 8, 4) if tiny
                          else decoding_rows(dtype, LLADA_1B, 256, 256, 32)),
    }
    rows = []
    for section in (s for s in SECTIONS if s in sections):
        try:
            new_rows = programs[section]()
        except Exception as error:  # report it and measure the rest
            message = " ".join(str(error).split())[:160]
            new_rows = [dict(program=f"{section}: failed: {type(error).__name__}: {message}", dtype=dtype, batch="-",
                             result="-", mfu_model="-", mfu_hw="-", mfu_model_datasheet="-")]
        for row in new_rows:
            print(row, flush=True)
        rows += new_rows
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (a CPU smoke run of the same programs)")
    parser.add_argument("--max_batch", type=int, default=256, help="DiT-XL/2: first batch tried (halved until it fits)")
    parser.add_argument("--batch", type=int, default=64, help="U-DiT-B and DiC-B train-step batch")
    parser.add_argument("--llada_8b", action="store_true", help="add LLaDA-8B-shaped decoding rows "
                        "(benchmarks/dlm_accelerator.py; ~32 GB of weights; on CPU: lowered only)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset of " + ", ".join(SECTIONS))
    args = parser.parse_args()
    rows = run(args.tiny, args.max_batch, args.batch, sections=args.sections.split(","))
    if args.llada_8b:
        from benchmarks.dlm_accelerator import llada_8b_rows, lower_llada_8b

        rows += lower_llada_8b() if jax.default_backend() == "cpu" else llada_8b_rows()
    print_table(rows, ["program", "dtype", "batch", "result", "mfu_model", "mfu_hw", "mfu_model_datasheet"])
    failed = [row["program"] for row in rows if ": failed: " in row["program"]]
    if failed:
        raise SystemExit(f"{len(failed)} section(s) failed: " + "; ".join(failed))


if __name__ == "__main__":
    main()
