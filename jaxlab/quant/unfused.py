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

A conv (DiC; HWIO kernel ``W [k, k, C, O]``) is the linear over its zero-padded ``k x k``
patches (``jaxlab.quant.conv``): the same per-input-channel ``z_k``, ``s [C]`` (the scale's
weight salience is the max over taps and outputs), kernel ``diag_C(s) W`` flattened to
``[k * k * C, O]`` and bias ``b + z_k . sum_{dy,dx} W``, exact because the runtime pads before
subtracting the shift (the border becomes ``-z_k / s``, i.e. a zero of the original input).
"""


import numpy as np

from jaxlab.quant.config import QuantConfig
from jaxlab.quant.conv import kernel_rows
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
                  meta: dict | None = None, convs: tuple[str, ...] = ()) -> QuantizedDiT:
    """Quantise every linear in ``stats`` (``calibration.calibrate``) with explicit shift/scale.

    ``timesteps [K]``: the original timestep of each calibrated step. ``convs``: path suffixes of
    the layers that are ``nn.Conv`` (HWIO kernels; ``FamilyPlan.convs``), the others are linears.
    Returns the same table layout as ``folding.build_quantized`` (run by ``jaxlab.quant.runtime``), plus per layer
    ``in_shift [R, C]``, ``in_shift_row [K]``, ``in_inv_scale [C]`` where smoothing is on.
    """
    timesteps, num_groups = check_schedule(stats, timesteps, qcfg)
    layers = {}
    for path in sorted(stats):
        mn, mx = stats[path]["min"].astype(np.float64), stats[path]["max"].astype(np.float64)
        c = mn.shape[1]
        w, b = _dense(params, path)
        if any(path.endswith(suffix) for suffix in convs):  # HWIO: a linear over the padded k x k patches
            if w.ndim != 4 or w.shape[2] != c:
                raise ValueError(f"{path}: expected a conv kernel [k, k, {c}, O], got {w.shape}")
            sm = layer_smoothing(mn, mx, kernel_rows(w), qcfg, num_groups, smoothed=True)
            kernel, w_sum = (w * sm.s[:, None]).reshape(-1, w.shape[-1]), w.sum(axis=(0, 1))
        else:
            w = w.reshape(c, -1)  # flax kernels put the contracted input axes first
            sm = layer_smoothing(mn, mx, w, qcfg, num_groups, smoothed=True)
            kernel, w_sum = sm.s[:, None] * w, w
        b = np.zeros(kernel.shape[1]) if b is None else b.reshape(-1)
        entry = _quantized_entry(kernel, b[None] + sm.z @ w_sum, _act_tables(mn, mx, sm, qcfg), qcfg)
        if np.any(sm.z) or np.any(sm.s != 1):
            shift, shift_row = _compress(sm.z)
            entry.update(in_shift=shift, in_shift_row=shift_row, in_inv_scale=(1 / sm.s).astype(np.float32))
        layers[path] = entry
    return quantized_dit(layers, timesteps, qcfg, num_groups, diffusion_steps, meta, smoothing="unfused")
