"""Timing helpers shared by the benchmark scripts (FLOP counts and peaks come from ``jaxlab.train.perf``)."""

import statistics
import time

import jax

from jaxlab.train import perf


def time_fn(fn, *args, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time (seconds) of ``fn(*args)`` after ``warmup`` calls (compilation included there)."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak_flops() -> float:
    """This machine's measured float32 FLOP/s on a 2048^3 ``jnp.dot`` (the roofline for model numbers)."""
    return perf.measure_matmul_flops(n=2048, seconds=2.0)


def model_flops(fn, *args) -> float:
    """FLOPs of one call of ``fn(*args)`` as the model is written: XLA's count of the program lowered
    for CPU, where attention is the XLA arrangement (so its matmuls are counted on every platform;
    on GPU/TPU the fused kernels are custom calls that no count sees). Lowering needs no compile."""
    return perf.flops_per_device(jax.jit(fn).trace(*args).lower(lowering_platforms=("cpu",)), 1)


def device_name() -> str:
    d = jax.devices()[0]
    return f"{d.platform}:{getattr(d, 'device_kind', '')} x{jax.device_count()}"


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    print(" | ".join(c.ljust(widths[c]) for c in columns))
    print("-+-".join("-" * widths[c] for c in columns))
    for r in rows:
        print(" | ".join(str(r[c]).ljust(widths[c]) for c in columns))
