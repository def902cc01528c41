"""Throughput accounting: FLOPs of a step, device peaks, model FLOPs utilisation (MFU).

``MFU = step FLOPs per device x steps/s / peak FLOP/s per device``. Step FLOPs come from XLA's
cost analysis of the lowered train step (``flops_per_device``): forward + backward + optimizer,
spread evenly over the devices; with rematerialisation on, recomputed FLOPs are counted too. Peaks are dense
bfloat16 datasheet numbers per chip; on CPU the peak is the measured float32 matmul throughput.
"""

import time

import jax
import jax.numpy as jnp

# Dense bf16 peak FLOP/s per device, matched as substrings of ``device.device_kind`` (first match wins).
PEAK_FLOPS = (
    ("TPU v6 lite", 918e12),  # v6e (Trillium)
    ("TPU v5 lite", 197e12),  # v5e
    ("TPU v5p", 459e12),
    ("TPU v5", 459e12),  # v5p reports "TPU v5"
    ("TPU v4", 275e12),
    ("TPU v3", 123e12),
    ("TPU v2", 45e12),
    ("H200", 989e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("L4", 121e12),
)


def datasheet_peak(device: jax.Device) -> float | None:
    kind = device.device_kind
    for name, peak in PEAK_FLOPS:
        if name in kind:
            return peak
    return None


def measure_matmul_flops(n: int = 1024, dtype=jnp.float32, seconds: float = 0.5) -> float:
    """Measured FLOP/s of an ``n x n`` matmul on the default device (a practical CPU peak)."""
    a = jnp.ones((n, n), dtype)
    matmul = jax.jit(lambda x, y: x @ y)
    matmul(a, a).block_until_ready()
    count, start = 0, time.perf_counter()
    while True:
        matmul(a, a).block_until_ready()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return 2.0 * n**3 * count / elapsed


def peak_flops_per_device(configured: float = 0.0) -> tuple[float, str]:
    """``(peak FLOP/s, where it came from)``: the config value, the datasheet, or a CPU measurement."""
    if configured > 0:
        return float(configured), "config"
    device = jax.devices()[0]
    peak = datasheet_peak(device)
    if peak is not None:
        return peak, f"datasheet ({device.device_kind})"
    if device.platform == "cpu":
        return measure_matmul_flops(), "measured float32 matmul"
    return 0.0, f"unknown device kind {device.device_kind!r}; set config.logging.peak_flops_per_device"


def flops_per_device(lowered, num_devices: int) -> float:
    """FLOPs one device executes in one call of a jitted computation: XLA's count of the lowered
    program (global, before SPMD partitioning) over ``num_devices``.

    The lowered program is counted, not the compiled one, because XLA:GPU's compiled cost analysis
    leaves out the matmuls it hands to cuBLAS as library calls: on an H200 it counted a DiT-XL/2
    train step ~100x short (MFU read 0.2%). The lowered count is the same on every platform;
    rematerialised recomputation is explicit there and counted. Work inside Pallas kernels (the
    fused attention on TPU/GPU) is a custom call that no XLA count sees.
    """
    analysis = lowered.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", 0.0)) / max(int(num_devices), 1)


def mfu(flops_per_device: float, steps_per_second: float, peak_per_device: float) -> float:
    if peak_per_device <= 0 or flops_per_device <= 0:
        return 0.0
    return flops_per_device * steps_per_second / peak_per_device
