"""Build a quantised model whose smoothing is applied at the layer (not folded): any family.

For a linear ``y = X W + b`` (kernel flattened to ``[C, O]``) with HTG's per-step shift ``z_k``
(grouped as configured) and scale ``s [C]`` (``folding.layer_smoothing``), the layer computes

    X^ = (X - z_k) * (1 / s)        (explicit: the entry's ``in_shift`` rows and ``in_inv_scale``)
    y  = Q(X^) Q(diag(s) W) + (b + z_k W)

which equals the float layer when nothing is quantised (exact up to float rounding). This is
what U-DiT uses (``jaxlab.quant.families``): its qkv reads a zero-padded depthwise conv, through
which a shift does not fold exactly. Cost against the folded form: one subtract and one
multiply per input element of each smoothed linear; the stored shift rows (one per group).
Layers whose recipe has no shift and no scale (min-max) get no ``in_shift``/``in_inv_scale``.
Every target linear is smoothed (also post-GELU inputs: nothing has to fold).
"""


import numpy as np

from jaxlab.quant.config import QuantConfig
from jaxlab.quant.folding import (
    QuantizedDiT,
    _act_tables,
    _compress,
    _dense,
    _quantized_entry,
    check_schedule,
    quantized_dit,
    layer_smoothing,
)


def build_unfused(params: dict, stats: dict, timesteps: np.ndarray, qcfg: QuantConfig, diffusion_steps: int,
                  meta: dict | None = None) -> QuantizedDiT:
    """Quantise every linear in ``stats`` (``calibration.calibrate``) with explicit shift/scale.

    ``timesteps [K]``: the original timestep of each calibrated step. Returns the same table
    layout as ``folding.build_quantized`` (run by ``jaxlab.quant.runtime``), plus per layer
    ``in_shift [R, C]``, ``in_shift_row [K]``, ``in_inv_scale [C]`` where smoothing is on.
    """
    timesteps, num_groups = check_schedule(stats, timesteps, qcfg)
    layers = {}
    for path in sorted(stats):
        mn, mx = stats[path]["min"].astype(np.float64), stats[path]["max"].astype(np.float64)
        c = mn.shape[1]
        w, b = _dense(params, path)
        w = w.reshape(c, -1)  # flax kernels put the contracted input axes first
        b = np.zeros(w.shape[1]) if b is None else b.reshape(-1)
        sm = layer_smoothing(mn, mx, w, qcfg, num_groups, smoothed=True)
        entry = _quantized_entry(sm.s[:, None] * w, b[None] + sm.z @ w, _act_tables(mn, mx, sm, qcfg), qcfg)
        if np.any(sm.z) or np.any(sm.s != 1):
            shift, shift_row = _compress(sm.z)
            entry.update(in_shift=shift, in_shift_row=shift_row, in_inv_scale=(1 / sm.s).astype(np.float32))
        layers[path] = entry
    return quantized_dit(layers, timesteps, qcfg, num_groups, diffusion_steps, meta, smoothing="unfused")
